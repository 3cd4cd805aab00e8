"""`sam2kit video` on live sources, with real streams on this machine: H.264 MPEG-TS over TCP
from a sender subprocess, a pipe into `sam2kit video -`, a folder filled while --follow tracks
it; a stream cut halfway, a stalled one, garbage on the pipe, a missing camera, SIGTERM and
Ctrl-C twice; late frames in a folder; what a live run holds and writes stays bounded."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from clips import write_clip
from test_cli import (RES, assert_one_line_error, check_video_outputs, cli, ckpt,  # noqa: F401 - a fixture
                      frame_file_path, moving_frames, nothing_written, png)

HERE = Path(__file__).parent
N, W, H, FPS = 10, 128, 96, 10
N_LONG = 40  # a stream that outlasts a stop


def write_ts(path: Path, n: int) -> Path:
    """n frames of H.264 in MPEG-TS (no B-frames, so each frame decodes as it arrives)."""
    return write_clip(path, moving_frames(n, W, H), FPS, container="mpegts", options={"tune": "zerolatency"})


@pytest.fixture(scope="module")
def ts_clip(tmp_path_factory) -> Path:
    return write_ts(tmp_path_factory.mktemp("stream_clip") / "clip.ts", N)


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    return write_ts(tmp_path_factory.mktemp("stream_clip") / "long.ts", N_LONG)


def frame_lines(out: Path) -> list[dict]:
    """A live run's frames.jsonl: one entry per tracked frame."""
    return [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]


class Sender:
    """tests/stream_server.py in a subprocess: ``url`` to connect to; stopped on exit."""

    def __init__(self, clip: Path, mode: str = "full", pace: float = 0.05):
        self.proc = subprocess.Popen([sys.executable, str(HERE / "stream_server.py"), str(clip), mode, str(pace)],
                                     stdout=subprocess.PIPE, text=True)
        self.url = f"tcp://127.0.0.1:{int(self.proc.stdout.readline())}"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="module")
def file_run(ckpt, ts_clip, tmp_path_factory) -> Path:  # noqa: F811
    """The clip tracked as a file by the normal video predictor (default prompt)."""
    out = tmp_path_factory.mktemp("file_run") / "out"
    from sam2kit.cli import main
    assert main(["video", str(ts_clip), "-o", str(out), "--checkpoint", str(ckpt), *RES, "-q"]) == 0
    return out


def same_masks(a: Path, b: Path, frames) -> None:
    """Run ``a`` (live: sharded) has the masks of run ``b`` (a file run: flat) on ``frames``."""
    pa, pb = (frame_file_path(json.loads((d / "results.json").read_text())) for d in (a, b))
    for f in frames:
        for sub in ("masks/1", "masks/palette"):
            x, y = np.array(png(a / pa(sub, f, "png"))), np.array(png(b / pb(sub, f, "png")))
            assert np.array_equal(x, y), (sub, f)


def test_tcp_stream_equals_the_file(ckpt, ts_clip, file_run, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "out"
    with Sender(ts_clip) as s:
        rc, stdout, err = cli(capsys, "video", s.url, "-o", out, "--checkpoint", ckpt, *RES, "--no-realtime")
    assert rc == 0, err
    r = check_video_outputs(out, list(range(N)), [1], W, H, FPS)
    t = r["tracking"]
    assert (t["status"], t["frames_read"], t["dropped"], t["realtime"]) == ("ended", N, 0, False)
    assert r["video"]["kind"] == "network" and r["video"]["path"] == s.url and r["video"]["live"]
    same_masks(out, file_run, range(N))
    f = json.loads((file_run / "results.json").read_text())
    # a line per frame: a file run's entries, exactly, but for the file's place (a live run is sharded)
    assert [{**e, "file": e["file"].replace("/000/000/", "/")} for e in frame_lines(out)] == f["frames"]
    assert r["totals"] == f["totals"] and r["frames_file"] == "frames.jsonl" and r["tracking"]["last_frame"] == N - 1
    assert "stream   ended" in stdout and "tracking 1 object(s) as frames arrive" in err


def test_pipe_into_video_dash(ckpt, ts_clip, file_run, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "sam2kit", "video", "-", "-o", str(out), "--checkpoint",
                           str(ckpt), *RES, "-q"], input=ts_clip.read_bytes(), capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()
    r = check_video_outputs(out, list(range(N)), [1], W, H, FPS)
    assert r["video"]["kind"] == "pipe" and r["tracking"]["realtime"] is False
    same_masks(out, file_run, range(N))


def test_garbage_on_the_pipe(ckpt, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    junk = np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes()
    proc = subprocess.run([sys.executable, "-m", "sam2kit", "video", "-", "-o", str(out), "--checkpoint",
                           str(ckpt), *RES], input=junk, capture_output=True, text=False)
    assert_one_line_error(proc.returncode, proc.stderr.decode(), "cannot read a video from standard input",
                          "pipe a video container")
    assert nothing_written(out)


def check_partial(out: Path, status: str, n: int = N) -> dict:
    """A run that ended early: every output complete up to its last tracked frame."""
    done = [fr["frame"] for fr in frame_lines(out)]
    assert 1 <= len(done) <= n and done == list(range(len(done)))
    r = check_video_outputs(out, done, [1], W, H, FPS)
    assert r["tracking"]["status"] == status
    return r


def test_stream_cut_halfway(ckpt, ts_clip, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "out"
    with Sender(ts_clip, "cut") as s:
        rc, _, err = cli(capsys, "video", s.url, "-o", out, "--checkpoint", ckpt, *RES, "-q", "--no-realtime")
    assert rc == 3, err
    r = check_partial(out, "broken")
    assert "broke" in r["tracking"]["message"] and "reset" in r["tracking"]["message"].lower()
    assert "error:" in err and "broke" in err and f"hold the {len(r['frames'])} frame(s)" in err


def test_stalled_stream_times_out(ckpt, ts_clip, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "out"
    with Sender(ts_clip, "stall") as s:  # the sender stops sending but keeps the connection open
        rc, _, err = cli(capsys, "video", s.url, "-o", out, "--checkpoint", ckpt, *RES, "-q", "--timeout", "1.5",
                         "--no-realtime")
    assert rc == 3, err
    r = check_partial(out, "stalled")  # ended by the 1.5 s read timeout, not by the sender (no wall clock:
    assert "stalled: no frame for 1.5 s" in r["tracking"]["message"] and "stalled" in err  # tests never time)


def test_sigterm_stops_cleanly(ckpt, long_clip, tmp_path):  # noqa: F811
    """SIGTERM while a stream is live and frames wait to be tracked: the frame being tracked is
    finished and the run stops (the waiting frames are not tracked first); exit 0, status
    "stopped", every output complete."""
    out = tmp_path / "out"
    with Sender(long_clip, "stall") as s:
        proc = subprocess.Popen([sys.executable, "-m", "sam2kit", "video", s.url, "-o", str(out), "--checkpoint",
                                 str(ckpt), *RES, "-q", "--timeout", "120", "--no-realtime"], stderr=subprocess.PIPE)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            seen = len(list(tmp_path.glob("out.partial-*/frames/*/*/*.jpg")))
            if seen >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr.decode()
    r = check_partial(out, "stopped", N_LONG)
    assert r["tracking"]["message"] == "stopped by SIGTERM"
    assert r["totals"]["frames"] <= seen + 1 < N_LONG  # the frame in progress then, not the waiting ones


SLOW_FOURTH_FRAME = """
import sys, time
from pathlib import Path
import sam2kit.cli.live as live
import sam2kit.video.stream_session as ss
marks = Path(sys.argv[1])
track, handle = ss.StreamSession.track, live.StopSignals._handle

def slow_track(self):  # the fourth frame takes long (a big model, a slow machine)
    if self.frame_idx == 3:
        (marks / "in_frame_3").touch()
        time.sleep(600)
    return track(self)

def noted_handle(self, signum, frame):  # says when a signal has been handled
    handle(self, signum, frame)
    (marks / f"handled_{len(list(marks.glob('handled_*')))}").touch()

ss.StreamSession.track, live.StopSignals._handle = slow_track, noted_handle
from sam2kit.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_second_ctrl_c_interrupts_at_once_and_keeps_the_frames_done(ckpt, ts_clip, tmp_path):  # noqa: F811
    """Ctrl-C, then Ctrl-C again while a frame is being tracked: the run ends at once (the frame is
    abandoned), with exit 130, status "interrupted" and every output complete up to the last
    finished frame (overlay.mp4 playable)."""
    out, marks = tmp_path / "out", tmp_path / "marks"
    marks.mkdir()

    def wait_for(name: str) -> None:
        deadline = time.monotonic() + 600  # (a generous bound for a busy machine, not a timing)
        while not (marks / name).exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if not (marks / name).exists():
            proc.kill()
            pytest.fail(f"no {name}: {proc.communicate()[1].decode()}")

    with open(ts_clip, "rb") as stdin:
        proc = subprocess.Popen([sys.executable, "-c", SLOW_FOURTH_FRAME, str(marks), "video", "-", "-o", str(out),
                                 "--checkpoint", str(ckpt), *RES, "-q"], stdin=stdin, stderr=subprocess.PIPE)
        wait_for("in_frame_3")
        proc.send_signal(signal.SIGINT)  # a clean stop, after the frame being tracked...
        wait_for("handled_0")
        proc.send_signal(signal.SIGINT)  # ...which is too long to wait for
        _, stderr = proc.communicate(timeout=300)
    err = stderr.decode()
    assert proc.returncode == 130, err
    r = check_partial(out, "interrupted")
    assert r["totals"]["frames"] == 3 and r["tracking"]["complete"]
    assert "second SIGINT" in r["tracking"]["message"] and "abandoned" in r["tracking"]["message"]
    assert "error: interrupted" in err and "hold the 3 frame(s)" in err


def test_realtime_drops_the_oldest_frames(ckpt, ts_clip, tmp_path, capsys):  # noqa: F811
    """All frames arrive at once, faster than tracking: the oldest waiting ones are dropped and
    listed; the frames written are the ones tracked, named by their number in the stream."""
    out = tmp_path / "out"
    with Sender(ts_clip, "full", pace=0) as s:
        rc, _, err = cli(capsys, "video", s.url, "-o", out, "--checkpoint", ckpt, *RES, "-q")
    assert rc == 0, err
    r = json.loads((out / "results.json").read_text())
    t = r["tracking"]
    done = [fr["frame"] for fr in frame_lines(out)]
    dropped = [i for a, b in t["dropped_frames"] for i in range(a, b + 1)]
    assert t["realtime"] and t["frames_read"] == N and t["dropped"] == len(dropped) > 0
    assert not t["dropped_frames_truncated"]
    assert sorted(done + dropped) == list(range(N)) and done[0] == 0 and done[-1] == N - 1
    check_video_outputs(out, done, [1], W, H, FPS)
    assert t["latency_s"]["p95"] > 0


def test_follow_a_folder_being_filled(ckpt, tmp_path, capsys):  # noqa: F811
    folder = tmp_path / "incoming"
    folder.mkdir()
    frames = moving_frames(6, W, H)

    def writer():
        time.sleep(0.5)
        for i, f in enumerate(frames):
            Image.fromarray(f).save(folder / f".{i}.tmp.png")
            os.replace(folder / f".{i}.tmp.png", folder / f"{i:05d}.png")  # appears whole
            time.sleep(0.3)

    t = threading.Thread(target=writer)
    t.start()
    out = tmp_path / "out"
    rc, _, err = cli(capsys, "video", folder, "--follow", "--idle-timeout", "2", "-o", out, "--checkpoint",
                     ckpt, *RES, "-q", "--point", "0:40%,50%", "--point", "3:90%,20%@2")
    t.join()
    assert rc == 0, err
    r = json.loads((out / "results.json").read_text())
    names = [f"{i:05d}" for i in range(6)]
    for sub, ext in (("frames", "jpg"), ("overlays", "jpg"), ("masks/1", "png"), ("masks/2", "png"),
                     ("masks/palette", "png")):
        assert sorted(p.name for p in (out / sub / "000" / "000").iterdir()) == [f"{n}.{ext}" for n in names]
    with av.open(str(out / "overlay.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 6
    lines = frame_lines(out)
    assert [fr["frame"] for fr in lines] == list(range(6))
    assert r["tracking"]["status"] == "ended" and "no new frame" in r["tracking"]["message"]
    assert r["tracking"]["late_frames_skipped"] == 0 and r["tracking"]["late_frames"] == []
    # object 2 exists from frame 3 on: before that, its masks are empty and it has no score
    assert all(fr["objects"][1]["area"] == 0 and fr["objects"][1]["object_score"] is None
               for fr in lines[:3])
    assert all(fr["objects"][1]["object_score"] is not None for fr in lines[3:])


def test_follow_counts_late_frames(ckpt, tmp_path, capsys):  # noqa: F811
    """A writer that writes frame 3 after frame 4 was taken: 3 is skipped (frames are taken in
    number order), counted and listed in results.json, and named in the status line."""
    folder, out = tmp_path / "incoming", tmp_path / "out"
    folder.mkdir()
    frames = moving_frames(6, W, H)

    def put(i: int) -> None:
        Image.fromarray(frames[i]).save(folder / f".{i}.tmp.png")
        os.replace(folder / f".{i}.tmp.png", folder / f"{i:05d}.png")  # appears whole

    def writer():
        for i in (0, 1, 2, 4):
            put(i)
        deadline = time.monotonic() + 600  # until file 4 (the fourth frame taken) is tracked
        while not list(tmp_path.glob("out.partial-*/frames/000/000/00003.jpg")) and time.monotonic() < deadline:
            time.sleep(0.05)
        put(3)
        put(5)

    t = threading.Thread(target=writer)
    t.start()
    rc, stdout, err = cli(capsys, "video", folder, "--follow", "--idle-timeout", "120", "--max-frames", "5",
                          "-o", out, "--checkpoint", ckpt, *RES)  # (5 is the last frame: no idle wait)
    t.join()
    assert rc == 0, err
    r = check_video_outputs(out, list(range(5)), [1], W, H, 25)  # files 0, 1, 2, 4, 5 as frames 0-4
    t = r["tracking"]
    assert (t["late_frames_skipped"], t["late_frames"], t["late_frames_truncated"]) == (1, [[3, 3]], False)
    assert "1 late frame(s) skipped (numbered at or below one already taken: 3)" in stdout


@pytest.mark.parametrize("extra,needles", [
    (["/dev/video97"], ["camera /dev/video97 does not exist", "plug one in"]),
    (["--camera", "97"], ["camera /dev/video97 does not exist"]),
    (["tcp://127.0.0.1:9", "--timeout", "2"], ["cannot read a video from tcp://127.0.0.1:9", "sender is running"]),
    (["-", "--reverse"], ["--reverse needs a video file"]),
    (["CLIP", "--follow"], ["--follow watches a folder"]),
    (["CLIP", "--realtime"], ["--realtime applies to live sources"]),
    (["-", "--reconnect", "2"], ["--reconnect applies to network streams"]),
])
def test_live_source_errors(extra, needles, ckpt, ts_clip, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "out"
    extra = [str(ts_clip) if a == "CLIP" else a for a in extra]
    rc, _, err = cli(capsys, "video", *extra, "-o", out, "--checkpoint", ckpt, *RES)
    assert_one_line_error(rc, err, *needles)
    assert nothing_written(out)


def held_bytes(obj, seen=None) -> int:
    """What ``obj`` holds in memory: its size and that of everything it refers to (containers,
    arrays, plain objects), each counted once; not modules, classes, functions or files."""
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, (type, types.ModuleType, types.FunctionType, io.IOBase)):
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj) + (obj.nbytes if isinstance(obj, np.ndarray) else 0)
    if isinstance(obj, dict):
        size += sum(held_bytes(k, seen) + held_bytes(v, seen) for k, v in obj.items())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        size += sum(held_bytes(v, seen) for v in obj)
    elif hasattr(obj, "__dict__"):
        size += held_bytes(vars(obj), seen)
    return size


def test_live_recorder_stays_bounded(tmp_path):
    """A long synthetic feed (every third frame dropped): what the recorder holds and the size of
    results.json are the same after N and after 3N frames; frames.jsonl has one line per
    tracked frame, the entry a file run lists; the totals are a file run's."""
    from sam2kit.jobs.live_results import LiveRecorder
    from sam2kit.jobs.video import frame_entry, totals
    from sam2kit.video.sources import IndexRanges

    obj_ids, rng = [1, 2], np.random.default_rng(0)
    results = {"video": {}, "tracking": {"status": "running", "complete": False}, "frames": []}
    dropped = IndexRanges(limit=20)
    rec = LiveRecorder(results, tmp_path, obj_ids, every_s=0.0, dropped=dropped)  # saved at every frame
    entries = []

    def feed(frames) -> tuple[int, int]:
        for i in frames:
            if i % 3 == 2:
                dropped.append(i)
                continue
            masks = rng.random((2, 12, 16)) > rng.random()
            scores = [round(float(rng.normal()), 4), None if i < 50 else round(float(rng.normal()), 4)]
            entries.append(frame_entry(i, obj_ids, masks, scores))
            rec(entries[-1], float(rng.lognormal(-2, 1)))
        return held_bytes(rec), (tmp_path / "results.json").stat().st_size

    n = 600
    held_n, json_n = feed(range(n))
    held_3n, json_3n = feed(range(n, 3 * n))
    entry_bytes = held_bytes(entries[0])
    assert abs(held_3n - held_n) < entry_bytes  # not even one more frame's entry
    assert abs(json_3n - json_n) < 64  # a few more digits
    r = rec.finish({"total": 1.0}, {"model": 1.0, "write": 0.5})
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(r)) and "frames" not in on_disk and on_disk["frames_file"] == "frames.jsonl"
    assert frame_lines(tmp_path) == entries and len(entries) == 2 * n
    assert r["totals"] == totals(entries, obj_ids)
    t = r["tracking"]
    assert t["dropped"] == n and len(t["dropped_frames"]) == 20 and t["dropped_frames_truncated"]
    assert t["dropped_frames"][:2] == [[2, 2], [5, 5]] and t["last_frame"] == 3 * n - 2
    lat = t["latency_s"]
    assert 0 < lat["p50"] < lat["p95"] <= lat["max"] and t["complete"]
