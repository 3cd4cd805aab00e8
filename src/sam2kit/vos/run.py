"""Semi-supervised video object segmentation over a benchmark dataset, the way Meta's
``tools/vos_inference.py`` runs SAM 2 for its published figures, in bounded memory and
resumable per video.

The protocol: each object is prompted with its mask on the first frame where it is annotated
and tracked forward from there; frames before that have no mask for it. Objects first
annotated on the same frame share one video session (objects are tracked independently, so
this equals the official script's one session per object when objects appear later, and its
one session for all when they all start on the first frame); sessions of different start
frames advance together frame by frame and share the frames' image features. The predictor
has the official evaluation settings (``apply_postprocessing=False``: no hole filling, no
dynamic multimask via stability, no binarised memories from clicks); palette layouts keep
objects from overlapping (``non_overlap_masks``), per-object layouts (SA-V) do not. A frame's
mask is its logits > 0. Frames are decoded when needed and each frame's masks are written as
they come, so memory does not grow with a video's length or the dataset's size.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from sam2kit.vos.datasets import (Dataset, DatasetError, ObjectPrompt, first_annotations, frame_files,
                       listdir_videos, save_png)
from sam2kit.video.predictor import SAM2VideoPredictor, apply_non_overlapping_constraints

__all__ = ["OFFICIAL_SETTINGS", "vos_predictor", "track_video", "run_video", "run_dataset",
           "VOSProgress", "LEDGER"]

# tools/vos_inference.py builds its predictor with apply_postprocessing=False
OFFICIAL_SETTINGS = dict(fill_hole_area=0, binarize_mask_from_pts_for_mem_enc=False,
                         dynamic_multimask_via_stability=False)
NOT_STARTED = -1024.0  # the official script's score of an object before its first annotation
LEDGER = "vos.json"
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def vos_predictor(model, non_overlap_masks: bool) -> SAM2VideoPredictor:
    """A video predictor with the official evaluation settings; ``non_overlap_masks`` on for
    palette layouts (one label a pixel), off for per-object masks (SA-V)."""
    return SAM2VideoPredictor(model, non_overlap_masks=non_overlap_masks, **OFFICIAL_SETTINGS)


def track_video(predictor: SAM2VideoPredictor, frames_dir: Path, prompts: list[ObjectPrompt],
                frame_names: list[str], session_options: dict | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Track ``prompts``' objects through the JPEG frames ``frame_names`` (stems, in order) in
    ``frames_dir``. Yields, for every frame in order, (frame index, masks [num_objects, H, W]
    bool in the order of ``prompts``). ``session_options``: keyword arguments of
    ``init_state`` (``spill_dir``, ``release_memory_every``, ...)."""
    groups: dict[int, list[int]] = {}
    for k, p in enumerate(prompts):
        groups.setdefault(p.frame, []).append(k)
    height, width = prompts[0].mask.shape
    active: list[tuple[object, Iterator, list[int]]] = []  # (session, propagation, prompt indices)
    try:
        for f in range(len(frame_names)):
            logits = torch.full((len(prompts), 1, height, width), NOT_STARTED)
            for i, (state, gen, idx) in enumerate(active):
                if i:
                    _share_features(active[0][0], state, f)
                logits[idx] = _next_masks(gen, f)
            if f in groups:  # objects first annotated here: a session of their own from here
                state = predictor.init_state(str(frames_dir), **(session_options or {}))
                _check_frames(state, frames_dir, frame_names, (height, width))
                if active:
                    _share_features(active[0][0], state, f)
                for k in groups[f]:
                    predictor.add_new_mask(state, f, prompts[k].obj_id, prompts[k].mask)
                gen = predictor.propagate_in_video(state, start_frame_idx=f, progress=False)
                active.append((state, gen, groups[f]))
                logits[groups[f]] = _next_masks(gen, f)
            if len(active) > 1 and predictor.non_overlap_masks:
                logits = apply_non_overlapping_constraints(logits)
            yield f, (logits[:, 0] > 0.0).numpy()
    finally:
        for state, gen, _ in active:
            gen.close()
            state.close()


def _next_masks(gen: Iterator, f: int) -> torch.Tensor:
    got, _, masks = next(gen)  # masks: [objects, 1, H, W] logits
    if got != f:
        raise RuntimeError(f"propagation reached frame {got} where frame {f} was expected")
    return masks.float().cpu()


def _share_features(src, dst, f: int) -> None:
    """Hand frame ``f``'s image features from one session to another (same model, same
    frames: the same tensors the other would compute), when the sessions offer it."""
    get, put = getattr(src, "cached_features", None), getattr(dst, "cache_features", None)
    if get is not None and put is not None and dst.cached_features(f) is None:
        feats = get(f)
        if feats is not None:
            put(f, feats)


def _check_frames(state, frames_dir: Path, names: list[str], size: tuple[int, int]) -> None:
    files = getattr(state.frames, "files", None)
    if (files is not None and [p.stem for p in files] != names) or state.num_frames != len(names):
        raise DatasetError(f"{frames_dir} holds images other than its numbered JPEG frames; leave "
                           "only the frames (00000.jpg, ...) there")
    if (state.video_height, state.video_width) != size:
        raise DatasetError(f"the annotations of {frames_dir.name} are {size[1]}x{size[0]} (WxH) but its "
                           f"frames are {state.video_width}x{state.video_height}; they must be the same size")


# ---- one video, written as it goes -----------------------------------------------------------

def run_video(predictor: SAM2VideoPredictor, ds: Dataset, video: str, out: Path,
              on_start=None, on_frame=None, session_options: dict | None = None) -> dict:
    """Track one video of ``ds`` and write its masks into ``out`` (an empty folder): palette
    PNGs ``<frame>.png`` (object number as the value, the annotations' palette) or, for
    per-object layouts, ``<obj:03d>/<frame>.png`` (0/1). Returns the video's figures."""
    frames = frame_files(ds, video)
    names = [p.stem for p in frames]
    prompts, palette = first_annotations(ds, video, names)
    ids = [p.obj_id for p in prompts]
    if on_start is not None:
        on_start(video, len(frames), len(ids))
    if ds.per_object:
        for i in ids:
            (out / f"{i:03d}").mkdir()
    order = np.argsort(ids)[::-1]  # lower numbers drawn last: they win where masks overlap
    t0 = time.perf_counter()
    done = 0
    for f, masks in track_video(predictor, ds.frames_dir(video), prompts, names, session_options):
        if ds.per_object:
            for i, m in zip(ids, masks):
                save_png(out / f"{i:03d}" / f"{names[f]}.png", m.astype(np.uint8), palette)
        else:
            labels = np.zeros(masks.shape[1:], np.uint8)
            for k in order:
                labels[masks[k]] = ids[k]
            save_png(out / f"{names[f]}.png", labels, palette)
        done += 1
        if on_frame is not None:
            on_frame()
    seconds = time.perf_counter() - t0
    return {"frames": done, "objects": ids, "first_frames": {str(p.obj_id): p.frame for p in prompts},
            "seconds": round(seconds, 3), "frames_per_second": round(done / seconds, 3) if seconds else None}


# ---- a dataset, resumable ------------------------------------------------------------------

class VOSProgress:
    """What ``run_dataset`` reports as it goes (subclass and override; each does nothing here)."""

    def begin(self, videos: list[str], finished: list[str]) -> None: ...
    def video_start(self, video: str, num_frames: int, num_objects: int) -> None: ...
    def frame_done(self) -> None: ...
    def video_end(self, video: str, figures: dict) -> None: ...


def run_dataset(predictor: SAM2VideoPredictor, ds: Dataset, out: Path, header: dict,
                redo: bool = False, progress: VOSProgress | None = None,
                session_options: dict | None = None) -> dict:
    """Predict every video of ``ds`` into ``out/<video>/``. Resumable: a video whose folder is
    there is finished and skipped (``redo``: predicted again); one is written in
    ``out/<video>.partial-XXXX/`` and moved into place when complete, so an interrupted one is
    redone. ``out/vos.json`` (the ledger) records ``header`` (what made the predictions:
    model and settings) and each video's figures; resuming with another header is an error.
    ``session_options``: as for ``track_video``. Returns the ledger."""
    progress = progress or VOSProgress()
    ledger = _open_ledger(out, header, redo)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.partial-*"):  # videos interrupted by an earlier run
        shutil.rmtree(stale, ignore_errors=True)
    finished = [] if redo else [v for v in ds.videos if (out / v).is_dir()]
    progress.begin(list(ds.videos), finished)
    t0 = time.perf_counter()
    ran = frames = 0
    for video in ds.videos:
        if video in finished:
            continue
        tmp = Path(tempfile.mkdtemp(prefix=f"{video}.partial-", dir=out))
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes it private
        try:
            figures = run_video(predictor, ds, video, tmp, progress.video_start, progress.frame_done,
                                session_options)
            if (out / video).exists():
                shutil.rmtree(out / video)
            os.replace(tmp, out / video)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        ledger["videos"][video] = figures
        ran, frames = ran + 1, frames + figures["frames"]
        _save_json(out / LEDGER, ledger)
        progress.video_end(video, figures)
    seconds = time.perf_counter() - t0
    track_s = sum(ledger["videos"][v]["seconds"] for v in ds.videos if v not in finished)
    ledger["complete"] = all((out / v).is_dir() for v in ds.videos)
    ledger["last_run"] = {"videos": list(ds.videos), "predicted": ran, "skipped": finished, "frames": frames,
                          "seconds": round(seconds, 3),
                          "frames_per_second": round(frames / track_s, 3) if track_s else None}
    _save_json(out / LEDGER, ledger)
    return ledger


def _open_ledger(out: Path, header: dict, redo: bool) -> dict:
    path = out / LEDGER
    if path.is_file():
        try:
            ledger = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise DatasetError(f"cannot read {path} ({e}); remove it, or choose another output folder") from None
        if not redo and ledger.get("settings") != header.get("settings"):
            raise DatasetError(f"{out} holds predictions made with other settings "
                               f"({_difference(ledger.get('settings') or {}, header['settings'])}); choose "
                               "another output folder, or pass --overwrite to predict every video again")
        if redo:
            ledger = {**header, "videos": {}}
        ledger.update({k: v for k, v in header.items() if k != "settings"})
    elif out.is_dir() and listdir_videos(out) and not redo:
        raise DatasetError(f"{out} already holds folders but no {LEDGER}, so it is not the output of an "
                           "earlier `sam2kit vos` run; choose another output folder, or pass --overwrite")
    else:
        ledger = {**header, "videos": {}}
    ledger.setdefault("videos", {})
    return ledger


def _difference(old: dict, new: dict) -> str:
    keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return "; ".join(f"{k}: {old.get(k)!r} then, {new.get(k)!r} now" for k in keys[:3])


def _save_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
