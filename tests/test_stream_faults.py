"""Network streams served for real on 127.0.0.1 (tests/stream_servers.py: the GStreamer RTSP
server over TCP, ffmpeg as RTMP server, SRT listener and UDP sender, an HTTP(S) MJPEG server) and
`sam2kit video` tracking from each; then faults provoked for real: a server killed mid-stream
and started again (--reconnect with its back-off: frames lost are counted, none invented), a
server killed without --reconnect, a sender that hangs (the read timeout), damaged packets, a
resolution change, the end of a stream, a camera that disappears; --follow's cost with 100k
files in the folder; the sharded layout of a live run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import stream_servers as S
from test_cli import RES, check_video_outputs, cli, ckpt  # noqa: F401 - a fixture
from test_stream_cli import Sender

W, H = 128, 96
LONG = 600  # frames of the long clip: 60 s at 10 fps, longer than any run that is cut short


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("fault_clips")
    long = S.write_clip(d / "long.ts", LONG)
    data = bytearray(S.write_clip(d / "forty.ts", 40).read_bytes())
    packets = [data[i:i + 188] for i in range(0, len(data), 188)]
    video = [k for k, p in enumerate(packets) if ((p[1] & 0x1F) << 8 | p[2]) == 0x100]
    rng = np.random.default_rng(0)
    for k in video[len(video) * 3 // 4:len(video) * 3 // 4 + 2]:  # two packets' payload garbled
        packets[k][20:180] = rng.integers(0, 256, 160, dtype=np.uint8).tobytes()
    lost = set(video[len(video) // 2:len(video) // 2 + 3])  # three packets lost: a continuity break
    (d / "damaged.ts").write_bytes(b"".join(bytes(p) for k, p in enumerate(packets) if k not in lost))
    return {"long": long, "short": S.write_clip(d / "short.ts", 10), "damaged": d / "damaged.ts",
            "resized": S.write_clip(d / "resized.ts", 6, sizes=((W, H), (160, 120)))}


def live(capsys, url: str, out: Path, ckpt: Path, *extra) -> tuple[int, str, str]:  # noqa: F811
    return cli(capsys, "video", url, "-o", out, "--checkpoint", ckpt, *RES, "--open-timeout", "30", *extra)


def lines(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "frames.jsonl").read_text().splitlines()]


def finished(out: Path) -> dict:
    """results.json of a live run, after checking that every output is complete and that the
    frames tracked and dropped are the frames read, each once, in order (none invented; a run
    that stops at a limit leaves the few frames then waiting in the queue neither)."""
    r = json.loads((out / "results.json").read_text())
    done = [fr["frame"] for fr in lines(out)]
    check_video_outputs(out, done, [1], W, H, r["video"]["output_fps"])
    t = r["tracking"]
    dropped = [i for a, b in t["dropped_frames"] for i in range(a, b + 1)]
    seen = sorted(done + dropped)
    assert seen == list(range(len(seen))) and done == sorted(set(done))
    assert 0 <= t["frames_read"] - len(seen) <= (4 if t["status"] in ("limit", "stopped") else 0)
    assert r["layout"]["kind"] == "sharded"
    return r


def once_tracked(tmp_path: Path, n: int, *steps) -> threading.Thread:
    """A thread that waits until the run into tmp_path/out has tracked n frames, then does the
    steps in order (a callable, or a number of seconds to wait)."""
    def go():
        wait_for_lines(tmp_path, n)
        for step in steps:
            step() if callable(step) else time.sleep(step)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


def partial_lines(tmp_path: Path) -> list[str]:
    done = list(tmp_path.glob("out.partial-*/frames.jsonl"))
    return done[0].read_text().splitlines() if done else []


def wait_for_lines(tmp_path: Path, n: int) -> None:
    """Until the run into tmp_path/out has tracked n frames (a bound for a busy machine)."""
    deadline = time.monotonic() + 300
    while len(partial_lines(tmp_path)) < n and time.monotonic() < deadline:
        time.sleep(0.02)


def server(proto: str, clip: Path, tmp_path: Path):
    if proto in ("http", "https"):
        return S.MJPEG(300, S.self_signed(tmp_path) if proto == "https" else None)
    return getattr(S, proto)(clip)


@pytest.mark.parametrize("proto", ["rtsp", "rtmp", "srt", "udp", "http", "https"])
def test_tracks_from_each_protocol(proto, ckpt, clips, tmp_path, capsys):  # noqa: F811
    """RTSP over TCP (GStreamer's server), RTMP (ffmpeg -listen 1), SRT (an ffmpeg listener;
    sam2kit reads it through the system's ffmpeg, as PyAV's FFmpeg has no libsrt), UDP/MPEG-TS
    (ffmpeg sending, sam2kit listening), HTTP and HTTPS MJPEG: a live run tracks 3 frames."""
    out = tmp_path / "out"
    with server(proto, clips["long"], tmp_path) as s:
        rc, _, err = live(capsys, s.url, out, ckpt, "--max-frames", "3")
    assert rc == 0, err
    r = finished(out)
    t, src = r["tracking"], r["tracking"]["source"]
    assert (t["status"], r["totals"]["frames"]) == ("limit", 3) and t["frames_read"] >= 3
    assert r["video"]["kind"] == "network" and r["video"]["path"] == s.url
    assert (r["video"]["width"], r["video"]["height"]) == (W, H)
    assert (src["damaged_frames"], src["resized_frames"], src["outages"]) == (0, 0, 0)
    assert t["limits_s"] == {"open": 30.0, "read": 10.0, "reconnect": 0, "reconnect_delay": None,
                             "reconnect_max_delay": None}


def test_end_of_stream(ckpt, clips, tmp_path, capsys):  # noqa: F811
    """The RTSP server reaches the end of its clip (BYE, then EOF): the run ends, status ended,
    exit 0, every frame read (tracked or dropped in real time)."""
    out = tmp_path / "out"
    with S.rtsp(clips["short"]) as s:
        rc, stdout, err = live(capsys, s.url, out, ckpt)
    assert rc == 0, err
    t = finished(out)["tracking"]
    assert (t["status"], t["message"], t["frames_read"]) == ("ended", f"{s.url} ended", 10)
    assert "stream   ended" in stdout


def test_server_killed_and_back_with_reconnect(ckpt, clips, tmp_path, capsys):  # noqa: F811
    """The RTSP server is killed after 2 frames were tracked and started again 1 s later; with
    --reconnect 3 --reconnect-delay 0.5 the run reopens it (attempts 0.5, 1.5 and 3.5 s after the
    break) and goes on: one outage, its frames counted as lost (at 10 fps, 1 s down is at least
    9), none invented. Then the server is killed for good: 3 attempts fail, the run ends with
    exit 3, status broken, every frame done kept."""
    out = tmp_path / "out"
    with S.rtsp(clips["long"]) as s:
        at_kill = []
        control = once_tracked(tmp_path, 2, lambda: at_kill.append(len(partial_lines(tmp_path))), s.stop, 1.0,
                               s.start, lambda: wait_for_lines(tmp_path, at_kill[0] + 4), s.stop)
        rc, stdout, err = live(capsys, s.url, out, ckpt, "--reconnect", "3", "--reconnect-delay", "0.5")
        control.join()
    assert rc == 3, err
    r = finished(out)
    t, src = r["tracking"], r["tracking"]["source"]
    assert t["status"] == "broken" and "ended; reopening it failed 3 time(s) in a row" in t["message"]
    assert src["outages"] == 1 and t["reconnects"] >= 1 + 3, (t["reconnects"], src["outage_list"])
    (outage,) = src["outage_list"]
    assert outage["frames_lost"] >= 5 and src["frames_lost_in_outages"] == outage["frames_lost"]
    assert outage["after_frame"] >= 1 and t["frames_read"] > outage["after_frame"] + 1  # frames came after
    assert t["frames_read"] <= 2 * LONG  # at most the clip before the kill and the clip again
    assert t["limits_s"]["reconnect_delay"] == 0.5 and t["limits_s"]["reconnect"] == 3
    assert "1 outage(s) reconnected" in stdout and "error:" in err and "reopening it failed" in err


def test_rtmp_server_killed_without_reconnect(ckpt, clips, tmp_path, capsys):  # noqa: F811
    """Without --reconnect a server that goes away ends the run: RTMP reports the lost
    connection (an I/O error): status broken, exit 3, the frames done kept and complete."""
    out = tmp_path / "out"
    with S.rtmp(clips["long"]) as s:
        control = once_tracked(tmp_path, 2, s.stop)
        rc, _, err = live(capsys, s.url, out, ckpt)
        control.join()
    assert rc == 3, err
    t = finished(out)["tracking"]
    assert t["status"] == "broken" and "broke: Input/output error" in t["message"]
    assert t["frames_read"] < LONG and t["source"]["outages"] == 0 and t["reconnects"] == 0
    assert f"hold the {len(lines(out))} frame(s)" in err


def test_rtsp_server_killed_without_reconnect_reads_as_an_end(ckpt, clips, tmp_path, capsys):  # noqa: F811
    """FFmpeg reports an RTSP-over-TCP server that goes away as the end of the stream, the
    same as one that finished: without --reconnect the run ends as "ended", exit 0, the frames
    done kept (cameras: give --reconnect, which treats an end as a break)."""
    out = tmp_path / "out"
    with S.rtsp(clips["long"]) as s:
        control = once_tracked(tmp_path, 2, s.stop)
        rc, _, err = live(capsys, s.url, out, ckpt)
        control.join()
    assert rc == 0, err
    t = finished(out)["tracking"]
    assert t["status"] == "ended" and t["frames_read"] < LONG


def test_sender_that_hangs_times_out(ckpt, clips, tmp_path, capsys):  # noqa: F811
    """The RTMP server is paused (SIGSTOP: the connection stays open, no packet comes): after
    --timeout 1.5 s the run ends, status stalled, the timeout named, exit 3."""
    out = tmp_path / "out"
    with S.rtmp(clips["long"]) as s:
        control = once_tracked(tmp_path, 2, s.pause)
        rc, _, err = live(capsys, s.url, out, ckpt, "--timeout", "1.5")
        control.join()
    assert rc == 3, err
    t = finished(out)["tracking"]
    assert t["status"] == "stalled" and t["message"] == f"{s.url} stalled: no frame for 1.5 s"
    assert t["limits_s"]["read"] == 1.5 and "stalled" in err


def test_damaged_packets(ckpt, clips, tmp_path, capsys):  # noqa: F811
    """Three MPEG-TS packets lost and two garbled in the middle of the stream: decoding goes on;
    the frame decoded from the broken continuity is counted damaged (and tracked), the frames
    that never decoded are counted missing from the sender's timestamps; exit 0."""
    out = tmp_path / "out"
    with Sender(clips["damaged"], "full") as s:
        rc, stdout, err = live(capsys, s.url, out, ckpt)
    assert rc == 0, err
    t = finished(out)["tracking"]
    src = t["source"]
    assert t["status"] == "ended" and src["damaged_frames"] >= 1 and len(src["damaged_frame_list"]) >= 1
    assert 20 < t["frames_read"] < 40 and src["missing_frames"] == 40 - t["frames_read"]
    assert "damaged frame(s) tracked as decoded" in stdout


def test_resolution_change_is_scaled_and_counted(ckpt, clips, tmp_path, capsys):  # noqa: F811
    """A sender that switches from 128x96 to 160x120 after 6 frames: handled, not refused: the
    later frames are scaled to the first frame's size (every output is 128x96), counted, and
    the other size named."""
    out = tmp_path / "out"
    with Sender(clips["resized"], "full") as s:
        rc, stdout, err = live(capsys, s.url, out, ckpt)
    assert rc == 0, err
    r = finished(out)  # (outputs checked at 128x96)
    src = r["tracking"]["source"]
    assert r["tracking"]["frames_read"] == 12 and (src["resized_frames"], src["resized_from"]) == (6, ["160x120"])
    assert "6 frame(s) of another size (160x120) scaled to the first frame's size" in stdout


CAMERA_FROM_A_FIFO = """
import sys
import sam2kit.video.sources as sources
fifo = sys.argv[1]
sources.camera_target = lambda camera: (fifo, "mpegts")  # the camera device: a FIFO fed by the test
from sam2kit.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_camera_that_disappears(ckpt, clips, tmp_path):  # noqa: F811
    """A camera unplugged mid-run, simulated (no v4l2loopback here): `--camera 0` opens a FIFO
    (in place of /dev/video0) that the test feeds with the clip, then closes and removes, as the
    device node goes away. The run ends cleanly: status broken, the camera named as gone, exit 3,
    every frame done kept."""
    fifo, out = tmp_path / "video0", tmp_path / "out"
    os.mkfifo(fifo)
    data = clips["long"].read_bytes()

    def camera():  # sends at about the clip's pace until 2 frames were tracked, then goes away
        with open(fifo, "wb") as f:
            deadline = time.monotonic() + 300  # (a bound for a busy machine, not a timing)
            for i in range(0, len(data), 188 * 7):
                if len(partial_lines(tmp_path)) >= 2 or time.monotonic() > deadline:
                    break
                f.write(data[i:i + 188 * 7])
                f.flush()
                time.sleep(0.01)
            os.unlink(fifo)  # the device node goes, then the device stops sending

    feeder = threading.Thread(target=camera, daemon=True)
    feeder.start()
    proc = subprocess.run([sys.executable, "-c", CAMERA_FROM_A_FIFO, str(fifo), "video", "--camera", "0", "-o",
                           str(out), "--checkpoint", str(ckpt), *RES, "-q"], capture_output=True, timeout=600)
    feeder.join()
    err = proc.stderr.decode()
    assert proc.returncode == 3, err
    t = finished(out)["tracking"]
    assert t["status"] == "broken" and t["message"] == f"camera {fifo} disappeared (unplugged?): camera {fifo} stopped sending"
    assert f"error: camera {fifo} disappeared" in err and len(lines(out)) >= 2


def test_open_timeout_on_a_server_that_never_answers():
    """A server that accepts the connection and never sends: the open timeout ends the wait
    with a message naming the address (the CLI: one line, exit 2, nothing written)."""
    import socket

    from sam2kit.video.sources import open_stream

    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        url = f"tcp://127.0.0.1:{srv.getsockname()[1]}"
        with pytest.raises(ValueError, match=rf"cannot read a video from {url}: .*sender is running"):
            open_stream(url, open_timeout=1.0, timeout=1.0)


def test_timeouts_and_back_off_are_named_options_with_defaults(capsys):
    from sam2kit.cli import main

    try:
        assert main(["video", "--help"]) == 0
    except SystemExit as e:
        assert e.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for needle in ("--open-timeout S", "(default 10)", "--timeout S read timeout", "--reconnect-delay S back-off",
                   "at most 30 s (default 1)", "--follow-mode {auto,notify,poll}", "(default auto)"):
        assert needle in text, needle


# ---- --follow with 100k files; the sharded layout ------------------------------------------

def test_follow_cost_is_flat_with_100k_files(tmp_path, monkeypatch):
    """A followed folder that already holds 100,000 frames (hard links of a PNG) taken by an
    earlier run (``start_after``, as a resumed run): each new frame costs no listing of the
    folder with OS notifications (watchdog, inotify; the folder is listed once, at the start),
    while polling lists all 100,000 names again and again: names read and listings per new
    frame, counted by wrapping os.scandir, in the same run."""
    from sam2kit.video.sources import FolderSource

    folder = tmp_path / "incoming"
    folder.mkdir()
    n_old = 100_000
    for k in range(2):  # (a file may have at most 65,000 links on ext4)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / f"one{k}.png")
    for i in range(n_old):
        os.link(tmp_path / f"one{i % 2}.png", folder / f"{i:06d}.png")
    names_read = [0]
    scandir = os.scandir

    class Counted:
        def __init__(self, path):
            self.it = scandir(path)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.it.close()

        def __iter__(self):
            for e in self.it:
                names_read[0] += 1
                yield e

    monkeypatch.setattr(os, "scandir", Counted)
    def put(i: int, value: int) -> None:  # a frame written whole (renamed in)
        Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(folder / f".{i}.tmp.png")
        os.replace(folder / f".{i}.tmp.png", folder / f"{i:06d}.png")

    costs = {}
    for mode, there in (("notify", n_old), ("poll", n_old + 11)):  # (poll: also the notify run's new ones)
        put(there, 99)  # the first new frame: the source opens on it
        src = FolderSource(folder, idle_timeout=30, settle=0.05, follow=mode, start_after=there - 1)
        assert src.follow_mode == mode
        it = iter(src)
        assert next(it)[0, 0, 0] == 99
        before, listings = names_read[0], src.listings
        new = 10 if mode == "notify" else 3  # (polling 100,000 names is slow: a few frames show it)
        for k in range(new):  # new frames, each after the last was taken
            put(there + 1 + k, k)
            assert next(it)[0, 0, 0] == k
        costs[mode] = ((names_read[0] - before) / new, (src.listings - listings) / new)
        assert len(src.late) == 0  # the frames passed over (start_after) are not late
        src.close()
    assert costs["notify"] == (0.0, 0.0)  # no listing at all per new frame
    assert costs["poll"][0] >= n_old and costs["poll"][1] >= 1  # every name, at least once per new frame


def test_live_layout_is_sharded_by_thousands(tmp_path):
    from sam2kit.jobs.layout import Layout

    live, flat = Layout(sharded=True), Layout(sharded=False)
    assert live.path("frames", 12, "jpg") == "frames/000/000/00012.jpg"
    assert live.path("masks/3", 1_234_567, "png") == "masks/3/001/234/1234567.png"
    assert flat.path("overlays", 1_234_567, "jpg") == "overlays/1234567.jpg"
    for f in (0, 999, 1000, 2_000_123):
        live.make(tmp_path, "frames", f)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.parent.parent.name == "frames") == [
        "frames/000/000", "frames/000/001", "frames/002/000"]
    assert live.as_json()["files_per_folder"] == 1000 and flat.as_json()["kind"] == "flat"


def test_follow_falls_back_to_polling_without_notifications(tmp_path, monkeypatch):
    """Without watchdog (or a watch the OS refuses), "auto" polls and says why; "notify" is a
    clear error naming the fix."""
    import sam2kit.video.sources.folder as folder

    def no_watchdog(path):
        raise ImportError("No module named 'watchdog'")

    monkeypatch.setattr(folder, "_Watch", no_watchdog)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "00000.png")
    src = folder.FolderSource(tmp_path, idle_timeout=0.2, settle=0.05)
    assert src.follow_mode == "poll" and "watchdog is not installed" in src.follow_note
    assert len(list(src)) == 1
    with pytest.raises(ValueError, match=r"cannot follow .* through OS notifications: watchdog is not installed.*"
                                         r"--follow-mode poll"):
        folder.FolderSource(tmp_path, idle_timeout=0.2, follow="notify")
