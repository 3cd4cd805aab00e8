"""Kills and restarts, for real: ``kill -9`` of ``sam2kit video`` and of ``sam2kit serve`` in
the middle of a tracking, then the same command again. Nothing half-written ever shows as an
output; what the dead process left (its partial output folder, the server's work folder with
its uploads and spill files) is removed by the next start, which checks with the owner's lock
that the owner is dead; the restarted server is healthy and tracks.

Cost: two short `sam2kit video` runs and two server starts: measured about 75 s on a shared
2-core machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx

from serve_helpers import Server, moving_frames, random_checkpoint, write_mp4


def test_kill_9_of_sam2kit_video_then_rerun(tmp_path):
    ckpt = random_checkpoint(tmp_path / "t.pt")
    clip = write_mp4(tmp_path / "clip.mp4", moving_frames(40, 96, 128))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "sam2kit", "video", str(clip), "-o", str(out), "--checkpoint", str(ckpt),
           "--resolution", "256", "--device", "cpu", "-q"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    partial = []
    try:
        for _ in range(3000):  # until a few frames' files are written into the partial folder
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            partial = list(tmp_path.glob("out.partial-*"))
            if partial and len(list((partial[0] / "overlays").glob("*.jpg"))) >= 3:
                break
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert partial and partial[0].name.startswith(f"out.partial-{proc.pid}-")
    assert not out.exists()  # never a half-written output
    assert not (partial[0] / "results.json").exists()  # killed in the middle, indeed
    keep = tmp_path / "out.partial-mine"  # a folder of the same shape that no dead run owns
    keep.mkdir()
    run = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert not partial[0].exists()  # the dead run's partial folder: removed
    assert keep.is_dir()  # no owner's lock in it: not judged dead, left alone
    r = json.loads((out / "results.json").read_text())
    assert r["video"]["num_frames"] == 40 and len(list((out / "overlays").glob("*.jpg"))) == 40
    assert len(list((out / "masks" / "1").glob("*.png"))) == 40
    assert not (out / ".owner.lock").exists()


def test_kill_9_of_sam2kit_serve_then_restart(tmp_path):
    ckpt = random_checkpoint(tmp_path / "t.pt")
    media = tmp_path / "media"
    media.mkdir()
    write_mp4(media / "clip.mp4", moving_frames(48, 48, 64))
    work = tmp_path / "work"
    work.mkdir()
    args = ("--media-root", str(media), "--work-dir", str(work))
    srv = Server(ckpt, *args)
    with httpx.Client(base_url=srv.url, timeout=120) as api:
        with open(media / "clip.mp4", "rb") as f:  # an upload: a file in the work folder
            sid = api.post("/api/videos", files={"file": ("clip.mp4", f, "video/mp4")}).json()["session_id"]
        api.post(f"/api/videos/{sid}/prompts", json=dict(frame=0, object=1, points=[[20, 24]], labels=[1]))
        with api.stream("POST", f"/api/videos/{sid}/propagate", json={}) as r:
            lines = r.iter_lines()
            for _ in range(3):
                next(lines)
            os.kill(srv.proc.pid, signal.SIGKILL)  # mid-tracking
    srv.stop()
    dead = list(work.iterdir())
    assert len(dead) == 1 and dead[0].name.startswith(f"sam2kit-serve-{srv.proc.pid}-")
    assert any(p.name.startswith("upload-") for p in dead[0].iterdir())

    other = work / "sam2kit-serve-unowned"  # no owner's lock: never judged dead, left alone
    other.mkdir()
    again = Server(ckpt, *args)
    try:
        assert not dead[0].exists()  # the killed server's folder: removed at start-up
        assert "removed 1 work folder(s) left by sam2kit serve processes that were killed" in again.log
        assert other.is_dir()
        with httpx.Client(base_url=again.url, timeout=120) as api:
            assert api.get("/api/health").json()["status"] == "ok"
            sid = api.post("/api/videos", json={"path": "clip.mp4"}).json()["session_id"]
            api.post(f"/api/videos/{sid}/prompts", json=dict(frame=0, object=1, points=[[20, 24]], labels=[1]))
            got = [json.loads(x) for x in api.post(f"/api/videos/{sid}/propagate", json={"max_frames": 4}).text.splitlines()]
            assert got[-1] == {"done": True, "frames": 4}
    finally:
        assert again.stop() == 0
    assert sorted(p.name for p in work.iterdir()) == ["sam2kit-serve-unowned"]
