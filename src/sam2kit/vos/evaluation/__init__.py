"""J&F evaluation of video object segmentation predictions against a benchmark's ground truth,
to the numbers of the official evaluators (DAVIS 2017's davis2017-evaluation, SA-V's
sav_evaluator.py), sequences scored in parallel processes.

    from sam2kit.vos.evaluation import evaluate, write_outputs
    doc = evaluate("DAVIS", "predictions/")      # a results document (dict)
    doc["global"]["J&F-Mean"]
    write_outputs(doc, Path("predictions/"), "davis", "val", overwrite=False)
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from pathlib import Path

from sam2kit.vos.datasets import DatasetError, open_dataset
from sam2kit.vos.evaluation.metrics import BOUND_TH, _kdtree, f_measure, frame_scores, jaccard, seg2bmap, statistics
from sam2kit.vos.evaluation.report import MEASURES, chart, output_files, summarise, table, write_outputs
from sam2kit.vos.evaluation.sequences import SequenceScores, SequenceTask, score_sequence

__all__ = ["evaluate", "write_outputs", "output_files", "table", "chart", "summarise", "MEASURES",
           "jaccard", "f_measure", "seg2bmap", "frame_scores", "statistics", "score_sequence",
           "SequenceTask", "SequenceScores"]


def evaluate(gt, pred, layout: str | None = None, sequences=None, split: str | None = None,
             all_frames: bool = False, strict: bool = False, ignore_void: bool = False,
             jobs: int | None = None, on_sequence=None, bound_th: float = BOUND_TH) -> dict:
    """Score the predictions in ``pred`` against the ground truth ``gt`` (a dataset root in one
    of the layouts of ``sam2kit.vos.datasets`` or its folder of per-sequence annotations).

    layout: "davis" (palette PNGs: DAVIS 2017, YouTube-VOS) or "sav" (per-object PNGs);
    default: from ``gt``. all_frames: score the first and last frames too (semi-supervised
    evaluation skips them). strict: a missing prediction is an error (else scored as an empty
    mask and listed). ignore_void: leave void (255) pixels out of J and F (the official
    semi-supervised DAVIS code scores them as background). jobs: worker processes (default:
    the CPUs). on_sequence(scores, done, total): called as each sequence is done.
    Returns the results document (see ``summarise``) with what was evaluated and how.
    """
    t0 = time.perf_counter()
    _kdtree()  # scipy, checked before any work
    ds = open_dataset(gt, layout, sequences, split, frames=False)
    proto = "sav" if ds.per_object else "davis"
    pred = Path(pred).expanduser()
    if not pred.is_dir():
        raise DatasetError(f"prediction folder {str(pred)!r} does not exist or is not a folder")
    tasks = []
    for name in ds.videos:
        expected = None
        if ds.layout == "davis" and ds.frames_root is not None and (ds.frames_root / name).is_dir():
            expected = tuple(sorted(p.stem for p in (ds.frames_root / name).iterdir()
                                    if p.suffix.lower() in (".jpg", ".jpeg")))
        tasks.append(SequenceTask(name, proto, ds.annotations_dir(name), pred / name, all_frames, strict,
                                  ignore_void, expected, bound_th))
    scores = _run(tasks, jobs, on_sequence)
    doc = {"command": "evaluate", "ground_truth": str(ds.annotations_root), "predictions": str(pred),
           "layout": proto, "dataset_layout": ds.layout, "sequences": len(scores),
           "settings": {"skip_first_and_last": not all_frames, "strict": strict,
                        "void": "left out" if ignore_void else "scored as background (as the official code)",
                        "bound_th": bound_th,
                        "protocol": "davis2017-evaluation (semi-supervised)" if proto == "davis"
                        else "SA-V sav_evaluator.py"},
           **summarise(scores, proto)}
    doc["seconds"] = round(time.perf_counter() - t0, 3)
    return doc


def _context():
    # fork: workers start at once and share what the parent imported; spawn where fork is unsafe
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    return multiprocessing.get_context(method)


def _run(tasks: list[SequenceTask], jobs: int | None, on_sequence) -> list[SequenceScores]:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    jobs = max(1, min(jobs or cpus, len(tasks)))
    done: dict[str, SequenceScores] = {}
    pool = _context().Pool(jobs) if jobs > 1 else None
    results = map(score_sequence, tasks) if pool is None else pool.imap_unordered(score_sequence, tasks)
    try:
        for r in results:
            done[r.name] = r
            if on_sequence is not None:
                on_sequence(r, len(done), len(tasks))
    finally:
        if pool is not None:
            pool.terminate()  # idle by now, or stopped by an error or an interruption
            pool.join()
    return [done[t.name] for t in tasks]
