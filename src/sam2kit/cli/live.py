"""``sam2kit video`` on live sources: a camera, a network stream, standard input, a folder being
filled (``--follow``). Frames are tracked as they arrive (``SAM2VideoPredictor.init_stream``),
written as they are done, and the run ends with the stream, a signal or a limit."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

import sam2kit
from sam2kit import SAM2VideoPredictor
from sam2kit.devices import RELEASE_EVERY
from sam2kit.video.sources import (DEFAULT_OPEN_TIMEOUT_S, DEFAULT_RECONNECT_DELAY_S, DEFAULT_TIMEOUT_S, FrameFeed,
                                   IndexRanges, StreamError, classify, open_stream)
from sam2kit.video.sources.base import RECONNECT_MAX_DELAY_S

from sam2kit.cli import prompts as P
from sam2kit.cli.common import CLIError, Console, StagedOutput, load_model, one_line
from sam2kit.cli.video_summary import summary
from sam2kit.jobs.live_results import LiveRecorder
from sam2kit.jobs.layout import Layout
from sam2kit.jobs.video import DEFAULT_FPS, FrameWriter, frame_entry

LIVE_RESULTS_EVERY_S = 2.0
BROKEN_EXIT = 3  # the stream broke or stalled; the outputs hold the frames done
INTERRUPTED_EXIT = 130  # Ctrl-C twice (128 + SIGINT, as shells report it); the outputs hold the frames done
LIVE_ONLY = ("camera", "follow", "realtime", "duration", "timeout", "open_timeout", "reconnect", "reconnect_delay",
             "idle_timeout", "follow_mode")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def _count(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return int(text)


def add_live_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("live sources (a camera, a network URL, - for standard input, a folder "
                             "with --follow)")
    g.add_argument("--camera", metavar="N",
                   help="a camera: /dev/videoN on Linux, AVFoundation device N on macOS, a DirectShow "
                        "device name on Windows")
    g.add_argument("--follow", action="store_true",
                   help="VIDEO is a folder still being filled: track new numbered frames as they appear")
    g.add_argument("--idle-timeout", type=_seconds, metavar="S",
                   help=f"with --follow: end after S seconds without a new frame (default {DEFAULT_TIMEOUT_S:g})")
    g.add_argument("--follow-mode", choices=("auto", "notify", "poll"), default=None,
                   help="with --follow: how new frames are seen: notify (the OS tells, through watchdog: inotify on "
                        "Linux; the cost of a new frame does not grow with the folder), poll (list the whole folder "
                        "every 50 ms: for network file systems, which send no notifications), auto (notify where it "
                        "can, else poll) (default auto)")
    g.add_argument("--realtime", action=argparse.BooleanOptionalAction, default=None,
                   help="when tracking falls behind, drop the oldest waiting frames so that latency "
                        "stays bounded (listed in results.json) (default: on for cameras and network "
                        "streams, off for pipes and folders, which never drop)")
    g.add_argument("--duration", type=_seconds, metavar="S", help="stop after S seconds of tracking")
    g.add_argument("--timeout", type=_seconds, metavar="S",
                   help=f"read timeout: a source silent for S seconds has stalled: the run ends (exit 3) (default "
                        f"{DEFAULT_TIMEOUT_S:g})")
    g.add_argument("--open-timeout", type=_seconds, metavar="S",
                   help=f"seconds to connect to a stream or camera and read its first frame, and to reopen it "
                        f"(default {DEFAULT_OPEN_TIMEOUT_S:g})")
    g.add_argument("--reconnect", type=_count, default=0, metavar="N",
                   help="reopen a network stream that broke, stalled or ended, up to N attempts in a row (the count "
                        "starts again once frames flow); frames the sender made meanwhile are counted as lost in "
                        "results.json (default 0: the run ends, exit 3 for a break or a stall)")
    g.add_argument("--reconnect-delay", type=_seconds, metavar="S",
                   help=f"back-off: wait S seconds before the first attempt to reopen, twice as long before each "
                        f"next one, at most {RECONNECT_MAX_DELAY_S:g} s (default {DEFAULT_RECONNECT_DELAY_S:g})")


def is_live(args) -> bool:
    """Whether the video command's source is live; a CLIError for live options on a file."""
    kind = "camera" if args.camera is not None else (classify(args.video) if args.video else "file")
    if args.follow and kind != "folder":
        raise CLIError(f"--follow watches a folder being filled with frames; {args.video or 'the sample'!r} "
                       "is not a folder")
    live = kind in ("camera", "network", "pipe") or (kind == "folder" and args.follow)
    if not live:
        given = [o for o in LIVE_ONLY if getattr(args, o) not in (None, False, 0)]
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise CLIError(f"{flag} applies to live sources (a camera, a network URL, - for standard input, "
                           f"a folder with --follow); {args.video or 'the sample clip'!r} is tracked as a video file")
        return False
    if args.reverse or args.start_frame is not None:
        raise CLIError(f"{'--reverse' if args.reverse else '--start-frame'} needs a video file: a live "
                       "source is tracked forward from its first prompted frame as frames arrive")
    if (args.reconnect or args.reconnect_delay) and kind != "network":
        flag = "--reconnect" if args.reconnect else "--reconnect-delay"
        raise CLIError(f"{flag} applies to network streams (rtsp://, tcp://, ...)")
    if args.reconnect_delay and not args.reconnect:
        raise CLIError("--reconnect-delay is the wait before reopening a stream: give --reconnect N too")
    for opt in ("idle_timeout", "follow_mode"):
        if getattr(args, opt) is not None and kind != "folder":
            raise CLIError(f"--{opt.replace('_', '-')} applies to a folder with --follow; use --timeout for streams")
    return True


def open_source(args):
    """The live source, its first frame read; a CLIError naming the problem."""
    try:
        return open_stream(None if args.camera is not None else args.video, camera=args.camera,
                           timeout=args.timeout or DEFAULT_TIMEOUT_S, reconnect=args.reconnect,
                           open_timeout=args.open_timeout or DEFAULT_OPEN_TIMEOUT_S,
                           reconnect_delay=args.reconnect_delay or DEFAULT_RECONNECT_DELAY_S,
                           idle_timeout=args.idle_timeout or DEFAULT_TIMEOUT_S, follow=args.follow_mode or "auto")
    except ImportError as e:
        raise CLIError(one_line(e)) from None
    except (ValueError, OSError) as e:
        raise CLIError(one_line(e)) from None


def command(args, console: Console) -> tuple[dict, str]:
    with StopSignals() as signals:  # from here on, Ctrl-C and SIGTERM stop cleanly
        source = open_source(args)
        try:
            with StagedOutput(args.output, args.overwrite) as out:
                results = run(args, console, out, source, signals)
        finally:
            source.close()
    tracking = results["tracking"]
    if tracking["status"] in ("broken", "stalled", "interrupted"):
        args.exit_status = INTERRUPTED_EXIT if tracking["status"] == "interrupted" else BROKEN_EXIT
        print(f"sam2kit: error: {tracking['message']}; the outputs in {args.output} hold the "
              f"{results['totals']['frames']} frame(s) tracked before it", file=sys.stderr)
    return results, summary(results, args.output) + "\n" + status_line(results)


def status_line(results: dict) -> str:
    t = results["tracking"]
    line = f"stream   {t['status']}: {t['message']}; {t['frames_read']} frames read"
    if t["realtime"]:
        line += f", {t['dropped']} dropped (real time)"
    if t.get("late_frames_skipped"):
        line += (f", {t['late_frames_skipped']} late frame(s) skipped (numbered at or below one already "
                 f"taken: {spans(t['late_frames'], t['late_frames_truncated'])})")
    src = t.get("source") or {}
    if src.get("outages"):
        line += (f", {src['outages']} outage(s) reconnected ({src['frames_lost_in_outages']} frame(s) lost, "
                 "none invented)")
    if src.get("missing_frames"):
        line += f", {src['missing_frames']} frame(s) missing from the sender's timestamps"
    if src.get("damaged_frames") or src.get("undecodable_packets"):
        line += (f", {src['damaged_frames']} damaged frame(s) tracked as decoded, "
                 f"{src['undecodable_packets']} undecodable packet(s) skipped")
    if src.get("resized_frames"):
        line += (f", {src['resized_frames']} frame(s) of another size ({', '.join(src['resized_from'])}) "
                 "scaled to the first frame's size")
    lat = t.get("latency_s")
    if lat:
        line += f"; latency p50 {lat['p50']:.3f} s, p95 {lat['p95']:.3f} s"
    return line


def spans(ranges: list[list[int]], truncated: bool = False) -> str:
    """[[3, 3], [7, 9]] -> "3, 7-9" (", ..." when the list was cut short)."""
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)
    return text + (", ..." if truncated else "")


class StopSignals:
    """SIGINT and SIGTERM set ``stop``: a clean stop after the frame being tracked. A second
    SIGINT interrupts at once (``interrupted``; KeyboardInterrupt raised where the program is,
    so the frame being tracked is abandoned), except while a finished frame's outputs are
    written (``writing()``, milliseconds: raised as it ends) and once the run is closing its
    outputs (``closing()``: noted only), so that every output stays whole. Handlers are only
    installed from the main thread."""

    def __init__(self):
        self.stop = threading.Event()
        self.signal_name = None
        self.interrupted = False
        self._hold = self._closing = False
        self._old = {}

    def _handle(self, signum, frame):
        if self.stop.is_set() and signum == signal.SIGINT:
            self.interrupted = True
            if not self._hold:
                raise KeyboardInterrupt("interrupted twice")
            return
        self.signal_name = signal.Signals(signum).name
        self.stop.set()

    @contextlib.contextmanager
    def writing(self):
        self._hold = True
        try:
            yield
        finally:
            self._hold = self._closing
        if self.interrupted and not self._closing:
            raise KeyboardInterrupt("interrupted twice")

    def closing(self) -> None:
        self._hold = self._closing = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def header(model_info: dict, source, fps: float, prompts, obj_ids, args, realtime: bool) -> dict:
    from sam2kit.outputs import BBOX_FORMAT, colour

    path = source.name
    if source.kind in ("folder", "file"):
        path = str(Path(path).resolve())
    return {
        "sam2kit_version": sam2kit.__version__, "command": "video",
        **{k: v for k, v in model_info.items() if k != "load_model_s"},
        "video": {"path": path, "kind": source.kind, "live": True, "width": source.width,
                  "height": source.height, "num_frames": None, "fps": source.fps, "output_fps": fps},
        "prompts": [{"frame": p.frame, "object": p.obj, **p.as_json(), "source": p.source} for p in prompts],
        "objects": [{"id": i, "palette_index": k + 1, "overlay_colour": list(colour(k)),
                     "masks": f"masks/{i}/"} for k, i in enumerate(obj_ids)],
        "tracking": {"start_frame": min(p.frame for p in prompts), "reverse": False,
                     "max_frames": args.max_frames, "duration_s": args.duration, "frames_planned": None,
                     "realtime": realtime, "status": "running", "message": None, "frames_read": 0,
                     "last_frame": None, "dropped": 0, "dropped_frames": [], "reconnects": 0,
                     "limits_s": limits(args, source), "complete": False},
        "layout": Layout(sharded=True).as_json(),
        "masks": "logit > 0", "bbox_format": BBOX_FORMAT,
        "object_score": "the model's object-presence logit: > 0 means the object is visible",
    }


def limits(args, source) -> dict:
    """The timeouts and the reconnection policy the run keeps (seconds; None: not used)."""
    if source.kind == "folder":
        return {"idle": args.idle_timeout or DEFAULT_TIMEOUT_S, "follow_mode": source.follow_mode,
                "follow_note": source.follow_note}
    return {"open": args.open_timeout or DEFAULT_OPEN_TIMEOUT_S, "read": args.timeout or DEFAULT_TIMEOUT_S,
            "reconnect": args.reconnect,
            "reconnect_delay": (args.reconnect_delay or DEFAULT_RECONNECT_DELAY_S) if args.reconnect else None,
            "reconnect_max_delay": RECONNECT_MAX_DELAY_S if args.reconnect else None}


def run(args, console: Console, out: Path, source, signals: "StopSignals") -> dict:
    """Track the live ``source`` into ``out``; returns the results (status in "tracking")."""
    t_start = time.perf_counter()
    w, h = source.width, source.height
    prompts = P.video_prompts(args.point, args.box, 2**62, w, h, 0)
    prompts.sort(key=lambda p: (p.obj, p.frame))  # palette index = rank of the object number
    obj_ids = sorted({p.obj for p in prompts})
    fps = args.fps or source.fps or DEFAULT_FPS
    realtime = args.realtime if args.realtime is not None else source.live
    model, model_info = load_model(args, console, args.resolution)
    predictor = SAM2VideoPredictor(model)
    dropped = IndexRanges()
    recorder = LiveRecorder(header(model_info, source, fps, prompts, obj_ids, args, realtime), out, obj_ids,
                            LIVE_RESULTS_EVERY_S, dropped, getattr(source, "late", None), source.health)
    console.note(f"{source.kind} {source.name}: {w}x{h}{f' at {source.fps:g} fps' if source.fps else ''}; "
                 f"tracking {len(obj_ids)} object(s) as frames arrive{' (real time)' if realtime else ''}; "
                 f"writing into {out}; Ctrl-C stops")
    if getattr(source, "follow_note", None):
        console.note(f"note: --follow {source.follow_note}")
    writer = feed = session = None
    spent = {"model": 0.0, "write": 0.0}
    try:
        writer = FrameWriter(out, obj_ids, prompts, fps, w, h, False, console, live=True)
        # reading starts once all is ready: a real-time feed would drop frames meanwhile
        feed = FrameFeed(source, realtime, stall_timeout=source.stall_limit(args.timeout or DEFAULT_TIMEOUT_S),
                         dropped=dropped)
        session = predictor.init_stream(release_memory_every=RELEASE_EVERY)
        status, message = track(args, console, source, feed, session, writer, recorder, signals, prompts, spent)
        writer.close()
    finally:
        if writer is not None:
            writer.mp4.close()
        if feed is not None:
            feed.close()
        if session is not None:
            session.close()
        recorder.close()
    recorder.results["tracking"].update(status=status, message=message, frames_read=feed.frames_read,
                                        reconnects=source.reconnects)
    recorder.results["video"]["num_frames"] = feed.frames_read
    timings = {"load_model": model_info["load_model_s"], "tracking": spent["model"], "writing": spent["write"],
               "total": time.perf_counter() - t_start}
    return recorder.finish(timings, spent)


def track(args, console: Console, source, feed: FrameFeed, session, writer, recorder: LiveRecorder,
          signals: StopSignals, prompts: list, spent: dict) -> tuple[str, str]:
    """The frame loop: each frame from ``feed`` tracked, written and recorded, until the stream
    ends, a limit, a stop or an interruption; returns (status, message)."""
    w, h, obj_ids = source.width, source.height, writer.obj_ids
    tracking = recorder.results["tracking"]
    pending = sorted(prompts, key=lambda p: p.frame)
    first = pending[0].frame
    first_frame_at = None
    empty = np.full((h, w), -1024.0, np.float32)
    try:
        with console.progress(desc="tracking", unit="frame") as bar:
            while True:
                if signals.stop.is_set():
                    return "stopped", f"stopped by {signals.signal_name}"
                if args.max_frames is not None and writer.count >= args.max_frames:
                    return "limit", f"--max-frames {args.max_frames} reached"
                if args.duration and first_frame_at and time.monotonic() - first_frame_at >= args.duration:
                    return "limit", f"--duration {args.duration:g} s reached"
                try:
                    item = feed.get(signals.stop)
                except StreamError as e:
                    return ("stalled" if e.stalled else "broken"), one_line(e)
                if item is None:
                    if signals.stop.is_set():
                        continue  # said at the top
                    if source.kind == "folder":
                        return "ended", f"no new frame in {source.name} for {source.idle_timeout:g} s"
                    return "ended", f"{source.name} ended"
                index, frame, arrived = item
                if index < first:
                    continue  # before the first prompted frame
                first_frame_at = first_frame_at or time.monotonic()
                t0 = time.perf_counter()
                f = session.add_frame(frame)
                while pending and pending[0].frame <= index:
                    p = pending.pop(0)
                    session.add_new_points_or_box(f, p.obj, points=p.points or None, labels=p.labels or None,
                                                  box=p.box)
                ids, logits = session.track()
                scores = dict(zip(ids, session.object_scores(f)))
                by_id = dict(zip(ids, logits[:, 0].float().cpu().numpy()))
                stacked = np.stack([by_id.get(i, empty) for i in obj_ids])
                t1 = time.perf_counter()
                with signals.writing():  # a frame's outputs are written whole, even on a second Ctrl-C
                    masks = writer.write(index, frame, stacked)
                    recorder(frame_entry(index, obj_ids, masks, [None if scores.get(i) is None else
                                                                 round(scores[i], 4) for i in obj_ids],
                                         writer.layout), time.monotonic() - arrived)
                    tracking["frames_read"] = feed.frames_read
                t2 = time.perf_counter()
                spent["model"] += t1 - t0
                spent["write"] += t2 - t1
                bar.update(1)
    except KeyboardInterrupt:
        return "interrupted", "interrupted by a second SIGINT (Ctrl-C): the frame being tracked was abandoned"
    finally:
        signals.closing()  # from here on a second Ctrl-C would cost the outputs: it is noted only
        tracking["prompts_not_reached"] = [p.source for p in pending]
