"""The video job: objects tracked through a video file or frame folder from clicks or boxes on
any frame (the origin video workflow: a small grid of clicks at the centre of the first frame,
tracked to the end), every frame's files written as it is done: frames/, masks/<obj>/,
masks/palette/, overlays/, overlay.mp4 and results.json."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

import sam2kit
from sam2kit.devices import RELEASE_EVERY
from sam2kit.errors import InputError
from sam2kit.jobs import prompts as P
from sam2kit.jobs.common import Console, one_line, sample, write_export_formats
from sam2kit.jobs.layout import Layout
from sam2kit.jobs.live_results import RunningTotals
from sam2kit.jobs.model import ModelSpec, load_model, video_predictor
from sam2kit.outputs import (BBOX_FORMAT, Mp4Writer, colour, draw_prompt, mask_png, mask_stats, palette_png,
                             save_json, tint)
from sam2kit.video.io import IMAGE_EXTENSIONS, FrameSource, open_frames

DEFAULT_FPS = 25.0
FLAT = Layout(sharded=False)  # a file run's layout
PARTIAL_RESULTS_EVERY_S = 10.0


@dataclass(frozen=True)
class VideoJob:
    """One video and its prompts. ``video``: a video file or a folder of numbered frames (None:
    the bundled sample clip); ``point``/``box``: clicks and boxes on frames for objects (the same
    frame and object form one prompt; none: a 3x3 grid of clicks at the centre of the start
    frame for object 1); tracking from ``start_frame`` (None: the first prompted frame, the last
    with ``reverse``) for at most ``max_frames``; ``fps``: overlay.mp4's frame rate (None: the
    video's)."""

    video: str | None = None
    point: tuple[P.PointSpec, ...] = ()
    box: tuple[P.BoxSpec, ...] = ()
    start_frame: int | None = None
    max_frames: int | None = None
    reverse: bool = False
    fps: float | None = None
    formats: tuple[str, ...] = ()  # export formats (sam2kit.formats.write), e.g. ("coco-polygons", "yolo")
    polygon_tolerance: float = 1.0  # their polygons' Douglas-Peucker tolerance, in pixels


def open_video(path: Path):
    """A FrameSource for a video file or a frame folder; a InputError naming the problem."""
    if not path.exists():
        raise InputError(f"video {str(path)!r} does not exist; check the path")
    if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
        raise InputError(f"{str(path)!r} is a single image, not a video; use `sam2kit image`, or give "
                       "the folder holding the frames")
    if not os.access(path, os.R_OK):
        raise InputError(f"cannot read video {str(path)!r}: permission denied; make it readable (chmod)")
    try:
        return CheckedFrames(open_frames(path))
    except (ImportError, ValueError, OSError, RuntimeError) as e:
        raise InputError(one_line(e)) from None


class CheckedFrames(FrameSource):
    """A frame source whose frames that cannot be read (a damaged video, a bad file in a frame
    folder) are reported as a InputError, wherever the predictor reads them."""

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
            raise InputError(f"{one_line(e)}; repair the video, or track only the frames before "
                           f"frame {index} (--max-frames)") from None

    def close(self) -> None:
        self.source.close()
        super().close()


def tracking_range(args: "VideoJob", num_frames: int, prompts: list[P.Prompt]) -> tuple[int, int]:
    """(start frame, number of frames to track)."""
    if args.start_frame is not None and args.start_frame >= num_frames:
        raise InputError(f"--start-frame {args.start_frame} is past the end of the video, which has "
                       f"{num_frames} frames (0 to {num_frames - 1})")
    frames = [p.frame for p in prompts]
    start = args.start_frame if args.start_frame is not None else (max if args.reverse else min)(frames)
    if args.reverse and start == 0:
        raise InputError("--reverse tracks backward from the start frame, here frame 0, so there is "
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
        self.layout = Layout(sharded=live)  # a live run may go on for days: at most 1000 files a folder
        self.kinds = ["frames", "overlays", "masks/palette", *(f"masks/{i}" for i in obj_ids)]
        for sub in self.kinds:
            (out / sub).mkdir(parents=True)
        self.mp4 = Mp4Writer(out / "overlay.mp4", fps, w, h, note=console.note, fragmented=live)
        self.count = 0  # frames written
        self.done: list[int] = []  # their indices, kept for --reverse only (a live stream never ends)

    def write(self, f: int, frame: np.ndarray, logits: np.ndarray) -> list[np.ndarray]:
        masks = logits > 0.0  # [num_objects, H, W]
        name = f"{f:05d}"
        folder = {kind: self.layout.make(self.out, kind, f) for kind in self.kinds}
        Image.fromarray(frame).save(folder["frames"] / f"{name}.jpg", quality=95)
        for obj_id, m in zip(self.obj_ids, masks):
            mask_png(m).save(folder[f"masks/{obj_id}"] / f"{name}.png")
        palette_png(masks, logits).save(folder["masks/palette"] / f"{name}.png")
        overlay = tint(frame, list(masks), self.colours)
        for p, rgb in self.prompts.get(f, []):
            draw_prompt(overlay, p.points, p.labels, p.box, rgb)
        overlay.save(folder["overlays"] / f"{name}.jpg", quality=90)
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
                    with Image.open(self.out / self.layout.path("overlays", f, "jpg")) as im:
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
                                       reverse=reverse, **torch_only(predictor, progress=False))
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
            masks = writer.write(f, frame, as_numpy(logits[:, 0]))
            on_frame(f, masks, object_scores(state, f))
            t2 = time.perf_counter()
            model_s, write_s = model_s + t1 - t0, write_s + t2 - t1
            bar.update(1)
    return {"model": model_s, "write": write_s}


def torch_only(predictor, **options) -> dict:
    """``options`` that only the PyTorch predictor takes (progress bars, releasing the allocator's
    memory), left out for the ONNX runtime's."""
    from sam2kit.onnx.video import OnnxVideoPredictor

    return {} if isinstance(predictor, OnnxVideoPredictor) else options


def as_numpy(masks) -> np.ndarray:
    """Masks from either predictor (a torch tensor, or the ONNX runtime's numpy array) as float32 numpy."""
    if isinstance(masks, np.ndarray):
        return masks.astype(np.float32, copy=False)
    return masks.float().cpu().numpy()


def add_prompts(predictor, state, prompts: list[P.Prompt]) -> None:
    for p in prompts:
        predictor.add_new_points_or_box(
            state, p.frame, p.obj, points=p.points or None, labels=p.labels or None, box=p.box)


def frame_entry(f: int, obj_ids, masks, scores, layout: Layout = FLAT) -> dict:
    return {"frame": f, "file": layout.path("frames", f, "jpg"),
            "objects": [{"id": i, **mask_stats(m), "object_score": s}
                        for i, m, s in zip(obj_ids, masks, scores)]}


def totals(frames: list[dict], obj_ids) -> dict:
    running = RunningTotals(obj_ids)  # the one computation, shared with live runs
    for fr in frames:
        running.add(fr)
    return running.as_json()


def prepare(args: "VideoJob", console: Console):
    """Open the video and check the prompts, before the model is loaded."""
    try:
        import av  # noqa: F401 - overlay.mp4 needs it whatever the input
    except ImportError:
        raise InputError("PyAV is needed to read videos and write overlay.mp4: pip install av "
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


def run(args: "VideoJob", console: Console, out: Path, model=None, model_info=None, model_spec=None) -> dict:
    """The video workflow into ``out`` (a folder of its own, being written); ``model``: one already
    loaded (with ``model_info``), else ``model_spec``'s is loaded (None: the default model).
    Returns results."""
    t_start = time.perf_counter()
    path, frames, prompts, start, n = prepare(args, console)
    fps = args.fps or frames.fps or DEFAULT_FPS
    state = writer = None
    loaded_before = model is not None  # (the demo shares one model between workflows)
    try:
        if model is None:
            spec = model_spec or ModelSpec()
            model, model_info = load_model(spec, console, spec.resolution)
        predictor = video_predictor(model)  # (the ONNX runtime's for an export)
        t0 = time.perf_counter()
        state = predictor.init_state(frames, **torch_only(predictor, release_memory_every=RELEASE_EVERY))
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
    results = recorder.finish(timings, spent)
    write_export_formats(args, out, results)
    return results
