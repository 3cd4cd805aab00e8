"""``sam2kit video``: track objects through a video from clicks or boxes on any frame (the origin
video workflow: a small grid of clicks at the centre of the first frame, tracked to the end)."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

import sam2kit
from sam2kit import SAM2VideoPredictor
from sam2kit.devices import RELEASE_EVERY
from sam2kit.video_io import IMAGE_EXTENSIONS, FrameSource, open_frames

from . import live
from . import prompts as P
from .live_results import RunningTotals
from .common import (CLIError, Console, StagedOutput, add_feedback_options, add_model_options,
                     add_output_options, check_model_options, load_model, one_line, sample)
from ..outputs import (BBOX_FORMAT, Mp4Writer, colour, draw_prompt, mask_png, mask_stats, palette_png,
                      save_json, tint)

DEFAULT_FPS = 25.0
PARTIAL_RESULTS_EVERY_S = 10.0

DESCRIPTION = """\
Track objects through a video with SAM 2 and write, into the output folder, for every frame
tracked (files numbered by frame index):
  frames/00000.jpg          the video frame
  masks/<obj>/00000.png     each object's mask (8-bit, 0 background / 255 object)
  masks/palette/00000.png   all objects in one indexed PNG (DAVIS layout: 0 background, k the
                            k-th object in order of object number, DAVIS colours)
  overlays/00000.jpg        the frame with every object's mask (and the prompts) drawn on it
  overlay.mp4               the overlays as an H.264 video at the input's frame rate
  results.json              per frame and object: mask area, bounding box, object score;
                            totals, timings and frames per second
Files are written as frames are done, into DIR.partial-XXXX beside DIR, which becomes DIR when
the run completes (a failed run leaves nothing). Without --point or --box, object 1 is
prompted with a 3x3 grid of foreground points spanning the central tenth of the start frame.

Live sources (a camera, a network stream, - for standard input, a folder with --follow) are
tracked as frames arrive, in flat memory, until the stream ends, Ctrl-C or SIGTERM (a clean
stop: exit 0), --max-frames or --duration; a second Ctrl-C stops at once (exit 130). overlay.mp4
is then a fragmented mp4, playable however the run stopped; the per-frame results go to
frames.jsonl (a line per frame, as it is done) and results.json is a summary of bounded size,
refreshed every 2 s. A stream that breaks or stalls ends the run with the frames done kept and
exit status 3.
"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("video", help="track objects through a video from clicks or boxes",
                       description=DESCRIPTION, epilog=f"Prompts: {P.COORDINATES_HELP}.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video", nargs="?", metavar="VIDEO",
                   help="a video file in any container FFmpeg reads (mp4, mov, mkv, webm, ts, ...), a "
                        "folder of numbered JPEG/PNG frames, or a live source: - (standard input), a "
                        "network URL (rtsp:// rtmp:// http(s):// udp:// tcp:// srt://), a camera "
                        "(/dev/video0; or --camera N) (default: the bundled sample clip)")
    add_output_options(p)
    g = p.add_argument_group("prompts (repeatable; the same FRAME and OBJ form one prompt)")
    g.add_argument("--point", type=P.video_point, action="append", default=[],
                   metavar="FRAME:X,Y[:LABEL][@OBJ]",
                   help="a click on frame FRAME (from 0) for object OBJ (default 1); LABEL 1 "
                        "foreground (default) or 0 background")
    g.add_argument("--box", type=P.video_box, action="append", default=[],
                   metavar="FRAME:X0,Y0,X1,Y1[@OBJ]", help="a box on frame FRAME for object OBJ")
    add_tracking_options(p)
    live.add_live_options(p)
    add_model_options(p)
    add_feedback_options(p)
    p.set_defaults(run=command)
    return p


def _positive(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(text)


def _frame_index(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected a frame index (0, 1, ...), got {text!r}")
    return int(text)


def _fps(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 1000:
        raise argparse.ArgumentTypeError(f"expected frames per second (e.g. 25 or 29.97), got {text!r}")
    return value


def add_tracking_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("tracking")
    g.add_argument("--start-frame", type=_frame_index, metavar="N",
                   help="track from frame N (default: the first prompted frame; the last one with "
                        "--reverse)")
    g.add_argument("--max-frames", type=_positive, metavar="N",
                   help="track at most N frames, the start frame included (default: to the end)")
    g.add_argument("--reverse", action="store_true", help="track backward, toward frame 0")
    g.add_argument("--fps", type=_fps, metavar="FPS",
                   help=f"frame rate of overlay.mp4 (default: the video's own; {DEFAULT_FPS:g} for "
                        "a folder of frames)")


def open_video(path: Path):
    """A FrameSource for a video file or a frame folder; a CLIError naming the problem."""
    if not path.exists():
        raise CLIError(f"video {str(path)!r} does not exist; check the path")
    if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
        raise CLIError(f"{str(path)!r} is a single image, not a video; use `sam2kit image`, or give "
                       "the folder holding the frames")
    if not os.access(path, os.R_OK):
        raise CLIError(f"cannot read video {str(path)!r}: permission denied; make it readable (chmod)")
    try:
        return CheckedFrames(open_frames(path))
    except (ImportError, ValueError, OSError, RuntimeError) as e:
        raise CLIError(one_line(e)) from None


class CheckedFrames(FrameSource):
    """A frame source whose frames that cannot be read (a damaged video, a bad file in a frame
    folder) are reported as a CLIError, wherever the predictor reads them."""

    def __init__(self, source: FrameSource):
        super().__init__(0)
        self.source = source
        self.height, self.width, self.fps = source.height, source.width, source.fps

    def __len__(self) -> int:
        return len(self.source)

    def get(self, index: int) -> np.ndarray:
        try:
            return self.source.get(index)
        except (ValueError, RuntimeError) as e:
            raise CLIError(f"{one_line(e)}; repair the video, or track only the frames before "
                           f"frame {index} (--max-frames)") from None

    def close(self) -> None:
        self.source.close()
        super().close()


def tracking_range(args, num_frames: int, prompts: list[P.Prompt]) -> tuple[int, int]:
    """(start frame, number of frames to track)."""
    if args.start_frame is not None and args.start_frame >= num_frames:
        raise CLIError(f"--start-frame {args.start_frame} is past the end of the video, which has "
                       f"{num_frames} frames (0 to {num_frames - 1})")
    frames = [p.frame for p in prompts]
    start = args.start_frame if args.start_frame is not None else (max if args.reverse else min)(frames)
    if args.reverse and start == 0:
        raise CLIError("--reverse tracks backward from the start frame, here frame 0, so there is "
                       "nothing to track; prompt a later frame or give --start-frame")
    limit = args.max_frames or num_frames
    last = max(start - limit + 1, 0) if args.reverse else min(start + limit - 1, num_frames - 1)
    return start, abs(last - start) + 1


class FrameWriter:
    """Writes each tracked frame's files as it comes, and overlay.mp4 (in frame order: with
    --reverse it is encoded from the overlays at the end)."""

    def __init__(self, out: Path, obj_ids: list, prompts: list[P.Prompt], fps: float, w: int, h: int,
                 reverse: bool, console: Console, live: bool = False):
        self.out, self.obj_ids, self.reverse = out, obj_ids, reverse
        self.colours = [colour(k) for k in range(len(obj_ids))]
        self.prompts: dict[int, list] = {}
        for p in prompts:
            self.prompts.setdefault(p.frame, []).append((p, self.colours[obj_ids.index(p.obj)]))
        for sub in ["frames", "overlays", "masks/palette", *(f"masks/{i}" for i in obj_ids)]:
            (out / sub).mkdir(parents=True)
        self.mp4 = Mp4Writer(out / "overlay.mp4", fps, w, h, note=console.note, fragmented=live)
        self.count = 0  # frames written
        self.done: list[int] = []  # their indices, kept for --reverse only (a live stream never ends)

    def write(self, f: int, frame: np.ndarray, logits: np.ndarray) -> list[np.ndarray]:
        masks = logits > 0.0  # [num_objects, H, W]
        name = f"{f:05d}"
        Image.fromarray(frame).save(self.out / "frames" / f"{name}.jpg", quality=95)
        for obj_id, m in zip(self.obj_ids, masks):
            mask_png(m).save(self.out / "masks" / str(obj_id) / f"{name}.png")
        palette_png(masks, logits).save(self.out / "masks" / "palette" / f"{name}.png")
        overlay = tint(frame, list(masks), self.colours)
        for p, rgb in self.prompts.get(f, []):
            draw_prompt(overlay, p.points, p.labels, p.box, rgb)
        overlay.save(self.out / "overlays" / f"{name}.jpg", quality=90)
        if self.reverse:
            self.done.append(f)
        else:
            self.mp4.add(np.asarray(overlay))
        self.count += 1
        return list(masks)

    def close(self) -> None:
        try:
            if self.reverse:
                for f in sorted(self.done):
                    with Image.open(self.out / "overlays" / f"{f:05d}.jpg") as im:
                        self.mp4.add(np.asarray(im.convert("RGB")))
        finally:
            self.mp4.close()


def object_scores(state, frame_idx: int) -> list[float | None]:
    """Each object's object-score logit on a tracked frame (> 0: the object is visible)."""
    return [None if v is None else round(v, 4) for v in state.object_scores(frame_idx)]


def track(predictor, state, writer: FrameWriter, start: int, n: int, reverse: bool,
          console: Console, on_frame) -> dict:
    """Propagate, writing every frame as it comes; returns the time spent in the model and in
    writing."""
    gen = predictor.propagate_in_video(state, start_frame_idx=start, max_frame_num_to_track=n - 1,
                                       reverse=reverse, progress=False)
    model_s = write_s = 0.0
    with console.progress(total=n, desc="tracking", unit="frame") as bar:
        while True:
            t0 = time.perf_counter()
            try:
                f, _, logits = next(gen)
            except StopIteration:
                break
            t1 = time.perf_counter()
            frame = state.frames.get(f)
            masks = writer.write(f, frame, logits[:, 0].float().cpu().numpy())
            on_frame(f, masks, object_scores(state, f))
            t2 = time.perf_counter()
            model_s, write_s = model_s + t1 - t0, write_s + t2 - t1
            bar.update(1)
    return {"model": model_s, "write": write_s}


def add_prompts(predictor, state, prompts: list[P.Prompt]) -> None:
    for p in prompts:
        predictor.add_new_points_or_box(
            state, p.frame, p.obj, points=p.points or None, labels=p.labels or None, box=p.box)


def frame_entry(f: int, obj_ids, masks, scores) -> dict:
    return {"frame": f, "file": f"frames/{f:05d}.jpg",
            "objects": [{"id": i, **mask_stats(m), "object_score": s}
                        for i, m, s in zip(obj_ids, masks, scores)]}


def totals(frames: list[dict], obj_ids) -> dict:
    running = RunningTotals(obj_ids)  # the one computation, shared with live runs
    for fr in frames:
        running.add(fr)
    return running.as_json()


def prepare(args, console: Console):
    """Open the video and check the prompts, before the model is loaded."""
    try:
        import av  # noqa: F401 - overlay.mp4 needs it whatever the input
    except ImportError:
        raise CLIError("PyAV is needed to read videos and write overlay.mp4: pip install av "
                       "(or pip install 'sam2kit[video]')") from None
    path = (Path(args.video) if args.video else sample("sample_video.mp4")).expanduser()
    frames = open_video(path)
    try:
        n_all, w, h = len(frames), frames.width, frames.height
        default_frame = args.start_frame if args.start_frame is not None else (n_all - 1 if args.reverse else 0)
        prompts = P.video_prompts(args.point, args.box, n_all, w, h, min(default_frame, n_all - 1))
        prompts.sort(key=lambda p: (p.obj, p.frame))  # palette index = rank of the object number
        start, n = tracking_range(args, n_all, prompts)
    except BaseException:
        frames.close()
        raise
    lo, hi = sorted((start, start - n + 1 if args.reverse else start + n - 1))
    outside = sorted({p.frame for p in prompts if not lo <= p.frame <= hi})
    if outside:
        console.note(f"note: prompts on frame(s) {', '.join(map(str, outside))} lie outside the "
                     f"frames tracked ({lo} to {hi}); they still guide the tracking")
    return path, frames, prompts, start, n


class Recorder:
    """results.json: a frame's entry is added as it is done; the file is saved every
    PARTIAL_RESULTS_EVERY_S seconds while tracking ("complete": false) and at the end."""

    def __init__(self, results: dict, path: Path, obj_ids: list, every_s: float = PARTIAL_RESULTS_EVERY_S):
        self.results, self.path, self.obj_ids, self.every_s = results, path, obj_ids, every_s
        self.saved = time.perf_counter()

    def __call__(self, f: int, masks, scores) -> None:
        self.results["frames"].append(frame_entry(f, self.obj_ids, masks, scores))
        if time.perf_counter() - self.saved > self.every_s:
            save_json(self.results, self.path)
            self.saved = time.perf_counter()

    def finish(self, timings: dict, spent: dict) -> dict:
        r = self.results
        r["frames"].sort(key=lambda fr: fr["frame"])
        r["tracking"]["complete"] = True
        r["totals"] = totals(r["frames"], self.obj_ids)
        done = len(r["frames"])
        r["timings_s"] = {k: round(v, 4) for k, v in timings.items()}
        r["frames_per_second"] = {
            "tracking": round(done / spent["model"], 4) if done and spent["model"] else None,
            "with_writing": round(done / (spent["model"] + spent["write"]), 4) if done else None}
        save_json(r, self.path)
        return r


def results_header(model_info: dict, path: Path, state, fps: float, prompts, obj_ids, args,
                   start: int, n: int) -> dict:
    return {
        "sam2kit_version": sam2kit.__version__, "command": "video",
        **{k: v for k, v in model_info.items() if k != "load_model_s"},
        "video": {"path": str(path.resolve()), "width": state.video_width,
                  "height": state.video_height, "num_frames": state.num_frames,
                  "fps": state.frames.fps, "output_fps": fps},
        "prompts": [{"frame": p.frame, "object": p.obj, **p.as_json(), "source": p.source}
                    for p in prompts],
        "objects": [{"id": i, "palette_index": k + 1, "overlay_colour": list(colour(k)),
                     "masks": f"masks/{i}/"} for k, i in enumerate(obj_ids)],
        "tracking": {"start_frame": start, "reverse": args.reverse, "max_frames": args.max_frames,
                     "frames_planned": n, "complete": False},
        "masks": "logit > 0", "bbox_format": BBOX_FORMAT,
        "object_score": "the model's object-presence logit: > 0 means the object is visible",
        "frames": [],
    }


def run(args, console: Console, out: Path, model=None, model_info=None) -> dict:
    """The video workflow into ``out`` (a folder of its own, being written); returns results."""
    t_start = time.perf_counter()
    path, frames, prompts, start, n = prepare(args, console)
    fps = args.fps or frames.fps or DEFAULT_FPS
    state = writer = None
    loaded_before = model is not None  # (the demo shares one model between workflows)
    try:
        if model is None:
            model, model_info = load_model(args, console, args.resolution)
        predictor = SAM2VideoPredictor(model)
        t0 = time.perf_counter()
        state = predictor.init_state(frames, release_memory_every=RELEASE_EVERY)
        add_prompts(predictor, state, prompts)
        prompt_s = time.perf_counter() - t0
        obj_ids = list(state.obj_ids)
        console.note(f"video {path.name}: {state.num_frames} frames {state.video_width}x"
                     f"{state.video_height} at {fps:g} fps; tracking {len(obj_ids)} object(s) over "
                     f"{n} frames from frame {start}{' backward' if args.reverse else ''}; writing "
                     f"into {out} as frames are done")
        recorder = Recorder(results_header(model_info, path, state, fps, prompts, obj_ids, args, start, n),
                            out / "results.json", obj_ids)
        writer = FrameWriter(out, obj_ids, prompts, fps, state.video_width, state.video_height,
                             args.reverse, console)
        spent = track(predictor, state, writer, start, n, args.reverse, console, recorder)
        writer.close()
    finally:
        if writer is not None:
            writer.mp4.close()
        if state is not None:
            state.close()
        frames.close()
    timings = {"load_model": model_info["load_model_s"], "open_video_and_prompts": prompt_s,
               "tracking": spent["model"], "writing": spent["write"],
               "total": time.perf_counter() - t_start + loaded_before * model_info["load_model_s"]}
    return recorder.finish(timings, spent)


def command(args, console: Console) -> tuple[dict, str]:
    check_model_options(args)  # fail fast, before anything slow
    if live.is_live(args):
        return live.command(args, console)
    with StagedOutput(args.output, args.overwrite) as out:
        results = run(args, console, out)
    return results, summary(results, args.output)


def summary(results: dict, output: Path) -> str:
    v, t, fps = results["video"], results["timings_s"], results["frames_per_second"]
    lines = [f"video    {v['path']} ({v['width']}x{v['height']}, {v['num_frames']} frames)",
             f"model    {results['model_config']} at {results['resolution']} px on {results['device']}",
             f"tracked  {results['totals']['frames']} frames in {t['tracking']:.1f} s "
             f"({fps['tracking'] or 0:.2f} frames/s; {fps['with_writing'] or 0:.2f} with writing)"]
    for o in results["totals"]["objects"]:
        lines.append(f"object {o['id']}: mask on {o['frames_with_mask']} frames, mean area "
                     f"{o['mean_area']:.0f} px, mean object score {o['mean_object_score']}")
    lines.append(f"wrote    frames/, masks/, overlays/, overlay.mp4, results.json to {output}")
    return "\n".join(lines)
