"""Scoring one sequence: its ground-truth and predicted masks read frame by frame (memory does
not grow with the sequence), each object's per-frame J and F.

Two protocols, each that of its official evaluator:

``davis`` (davis2017-evaluation, semi-supervised): palette PNGs ``<seq>/<frame>.png``. The
objects are the labels of the ground truth (255 is void, never an object); every object is
scored on every ground-truth frame but the first and the last, J = F = 1 where both masks are
empty; void pixels count as background, as the official semi-supervised code scores them
(``ignore_void`` leaves them out instead). A predicted label the ground truth lacks is an
error, as it is there.

``sav`` (SA-V's ``sav_evaluator.py``): ``<vid>/<obj>/<frame>.png``, one binary mask per
object. Each object is scored on its own annotated frames but its first and last; as there,
frames before the first one where either mask is non-empty are left out, and an object whose
ground truth is empty on all scored frames is not scored (the official code stops on it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sam2kit.vos.datasets import VOID, DatasetError, read_labels, read_object_mask
from sam2kit.vos.evaluation.metrics import BOUND_TH, frame_scores

__all__ = ["SequenceTask", "ObjectScores", "SequenceScores", "score_sequence"]


@dataclass(frozen=True)
class SequenceTask:
    """What to score (picklable: it travels to a worker process)."""

    name: str
    layout: str                           # "davis" | "sav"
    gt_dir: Path
    pred_dir: Path
    all_frames: bool = False              # keep the first and last frames
    strict: bool = False                  # a missing prediction is an error (else: empty masks)
    ignore_void: bool = False             # leave void (255) pixels out (davis)
    expected_frames: tuple[str, ...] | None = None  # frames that must have ground truth
    bound_th: float = BOUND_TH


@dataclass
class ObjectScores:
    """One object's per-frame J and F [num scored frames] and the scored frames' names."""

    obj_id: int
    frames: list[str]
    j: np.ndarray
    f: np.ndarray


@dataclass
class SequenceScores:
    name: str
    objects: list[ObjectScores]
    missing: list[str] = field(default_factory=list)     # prediction files scored as empty
    unscored: list[int] = field(default_factory=list)    # objects without ground truth to score
    seconds: float = 0.0


def score_sequence(task: SequenceTask) -> SequenceScores:
    t0 = time.perf_counter()
    out = _score_palette(task) if task.layout == "davis" else _score_per_object(task)
    out.seconds = time.perf_counter() - t0
    return out


def _pngs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")


def _missing(task: SequenceTask, path: Path, missing: list[str]) -> None:
    """A prediction file that is not there: an error with ``strict``, else recorded (once per
    absent folder) and scored as an empty mask, as the official code scores absent objects."""
    if task.strict:
        raise DatasetError(f"prediction {path} is missing (--strict); predict every frame of the "
                           "ground truth, or leave out --strict to score it as an empty mask")
    folder = next((str(d) for d in (task.pred_dir, path.parent) if not d.is_dir()), None)
    if folder is None:
        missing.append(str(path))
    elif folder not in missing:
        missing.append(folder)


def _check_size(gt: np.ndarray, pred: np.ndarray, gt_path: Path, pred_path: Path) -> None:
    if gt.shape != pred.shape:
        raise DatasetError(f"prediction {pred_path} is {pred.shape[1]}x{pred.shape[0]} (WxH) but the "
                           f"ground truth {gt_path} is {gt.shape[1]}x{gt.shape[0]}; predict at the "
                           "annotations' size")


def _score_palette(task: SequenceTask) -> SequenceScores:
    files = _pngs(task.gt_dir) if task.gt_dir.is_dir() else []
    if not files:
        raise DatasetError(f"no ground-truth PNGs in {task.gt_dir}")
    if task.expected_frames is not None:
        lacking = sorted(set(task.expected_frames) - {p.stem for p in files})
        if lacking:
            raise DatasetError(f"missing ground-truth frames in {task.gt_dir}: {', '.join(lacking[:5])}"
                               f"{' ...' if len(lacking) > 5 else ''} ({len(lacking)} of "
                               f"{len(task.expected_frames)} frames have no annotation)")
    scored = files if task.all_frames else files[1:-1]
    gt_ids: set[int] = set()
    per_frame: list[dict[int, tuple[float, float]]] = []
    pred_ids: dict[int, Path] = {}
    missing: list[str] = []
    scored_names = {p.name for p in scored}
    for gt_path in files:
        gt, _ = read_labels(gt_path)
        if gt_path.name not in scored_names:
            present = np.flatnonzero(np.bincount(gt.ravel(), minlength=256))
            gt_ids.update(int(k) for k in present if 0 < k < VOID)
            continue
        pred_path = task.pred_dir / gt_path.name
        if pred_path.is_file():
            pred, _ = read_labels(pred_path)
            _check_size(gt, pred, gt_path, pred_path)
        else:
            _missing(task, pred_path, missing)
            pred = np.zeros_like(gt)
        fs = frame_scores(gt, pred, None, (gt == VOID) if task.ignore_void else None, task.bound_th)
        gt_ids.update(int(k) for k in fs.gt_labels if 0 < k < VOID)
        for k in fs.pred_labels:
            if k:
                pred_ids.setdefault(int(k), pred_path)
        per_frame.append({int(k): (jk, fk) for k, jk, fk in zip(fs.ids, fs.j, fs.f)})
    extra = sorted(set(pred_ids) - gt_ids)
    if extra:
        raise DatasetError(f"prediction {pred_ids[extra[0]]} holds object id(s) {', '.join(map(str, extra))} "
                           f"that the ground truth of {task.name} lacks (its objects: "
                           f"{', '.join(map(str, sorted(gt_ids))) or 'none'}); number the objects as the "
                           "annotations do")
    names = [p.stem for p in scored]
    objects = [ObjectScores(k, names, np.array([fr.get(k, (1.0, 1.0))[0] for fr in per_frame]),
                            np.array([fr.get(k, (1.0, 1.0))[1] for fr in per_frame]))
               for k in sorted(gt_ids)]
    return SequenceScores(task.name, objects, missing)


def _read_binary(path: Path) -> np.ndarray:
    """A per-object PNG as a 0/1 [H, W] uint8 array; more than one object in it is an error."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "1"):
                read_object_mask(path)  # raises the message about the mode
            values = np.asarray(im)
    except (OSError, SyntaxError) as e:
        raise DatasetError(f"cannot read mask {path}: {e}") from None
    if np.count_nonzero(np.bincount(values.ravel().astype(np.uint8), minlength=256)) > 2:
        raise DatasetError(f"{path} holds more than one object: the SA-V layout has one object per "
                           "PNG (0 background, anything else the object)")
    return (values > 0).astype(np.uint8)


def _score_per_object(task: SequenceTask) -> SequenceScores:
    if not task.gt_dir.is_dir():
        raise DatasetError(f"no ground truth folder {task.gt_dir}")
    objects, unscored, missing = [], [], []
    for obj_dir in sorted(p for p in task.gt_dir.iterdir() if p.is_dir()):
        if not obj_dir.name.isdigit():
            raise DatasetError(f"object folder {obj_dir} is not numbered (000, 001, ...)")
        files = _pngs(obj_dir)
        scored = files if task.all_frames else files[1:-1]
        js, fs, names, seen_gt = [], [], [], False
        for gt_path in scored:
            gt = _read_binary(gt_path)
            pred_path = task.pred_dir / obj_dir.name / gt_path.name
            if pred_path.is_file():
                pred = _read_binary(pred_path)
                _check_size(gt, pred, gt_path, pred_path)
            else:
                _missing(task, pred_path, missing)
                pred = np.zeros_like(gt)
            gt_any = bool(gt.any())
            if not names and not gt_any and not pred.any():
                continue  # the official evaluator starts an object where it is first seen
            seen_gt |= gt_any
            scores = frame_scores(gt, pred, [1], None, task.bound_th)
            js.append(scores.j[0])
            fs.append(scores.f[0])
            names.append(gt_path.stem)
        if seen_gt:
            objects.append(ObjectScores(int(obj_dir.name), names, np.array(js), np.array(fs)))
        else:
            unscored.append(int(obj_dir.name))
    if not objects and not unscored:
        raise DatasetError(f"no object folders with PNGs in {task.gt_dir}")
    return SequenceScores(task.name, objects, missing, unscored)
