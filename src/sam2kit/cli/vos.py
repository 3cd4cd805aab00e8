"""``sam2kit vos``: semi-supervised video object segmentation over a benchmark dataset (DAVIS
2017, SA-V, YouTube-VOS), as Meta's tools/vos_inference.py runs it; resumable per video."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import sam2kit
from sam2kit.vos.datasets import LAYOUTS, DatasetError, open_dataset
from sam2kit.devices import RELEASE_EVERY
from sam2kit.vos.run import LEDGER, OFFICIAL_SETTINGS, VOSProgress, run_dataset, vos_predictor

from sam2kit.cli.common import (CLIError, Console, add_feedback_options, add_model_options, check_model_options,
                     load_model, one_line)

DESCRIPTION = """\
Run SAM 2 over a video object segmentation benchmark the standard (semi-supervised) way: each
object is prompted with its mask on the first frame where it is annotated and tracked forward,
with the settings of Meta's tools/vos_inference.py (no hole filling, no dynamic multimask, no
binarised memories; objects kept apart in palette layouts). Predictions go into PRED in the
layout the evaluators read:
  PRED/<video>/<frame>.png        palette PNGs, the object number as the value (DAVIS, YouTube-VOS)
  PRED/<video>/<obj>/<frame>.png  one 0/1 PNG per object (SA-V)
  PRED/vos.json                   model, settings, per-video frames, objects and frames/s
Resumable: a video already in PRED is skipped; an interrupted one is done again. Score the
predictions with `sam2kit evaluate --gt DATASET --pred PRED`.
"""

EPILOG = """\
dataset layouts:
  DAVIS 2017   JPEGImages/480p/<seq>/*.jpg, Annotations/480p/<seq>/*.png, ImageSets/2017/val.txt
  SA-V         JPEGImages_24fps/<vid>/*.jpg, Annotations_6fps/<vid>/<obj>/*.png
  YouTube-VOS  valid/JPEGImages/<vid>/*.jpg, valid/Annotations/<vid>/*.png
"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("vos", help="semi-supervised VOS over a benchmark dataset (DAVIS, SA-V, YouTube-VOS)",
                       description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", type=Path, metavar="DATASET", help="the dataset's root folder")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="PRED",
                   help="prediction folder: created if missing; an earlier run's is resumed")
    add_dataset_options(p)
    p.add_argument("--overwrite", action="store_true",
                   help="predict every video again, replacing PRED's earlier predictions")
    add_model_options(p)
    add_feedback_options(p)
    p.set_defaults(run=command)
    return p


def add_dataset_options(p: argparse.ArgumentParser, layouts=LAYOUTS) -> None:
    g = p.add_argument_group("dataset")
    g.add_argument("--layout", choices=layouts, help="the dataset's layout (default: recognised from "
                                                     "its folders)")
    g.add_argument("--sequences", metavar="NAMES|FILE",
                   help="only these videos: comma-separated names, or a text file with one a line "
                        "(default: DAVIS's ImageSets/2017/<split>.txt, else every annotated video)")
    g.add_argument("--split", metavar="NAME",
                   help="DAVIS: the ImageSets/2017/NAME.txt list (default val); YouTube-VOS: the "
                        "NAME/ folder (default valid)")


def dataset(args, frames: bool):
    try:
        return open_dataset(args.dataset if frames else args.gt, args.layout, args.sequences, args.split,
                            frames=frames)
    except DatasetError as e:
        raise CLIError(one_line(e)) from None


class Bars(VOSProgress):
    """An overall bar over the videos and one over each video's frames, on stderr."""

    def __init__(self, console: Console):
        self.console, self.videos, self.frames = console, None, None

    def begin(self, videos, finished):
        if finished:
            self.console.note(f"{len(finished)} of {len(videos)} videos already predicted: skipped")
        self.videos = self.console.progress(total=len(videos), desc="videos", unit="video")
        self.videos.update(len(finished))

    def video_start(self, video, num_frames, num_objects):
        self.frames = self.console.progress(total=num_frames, desc=f"{video} ({num_objects} obj)", unit="frame")

    def frame_done(self):
        self.frames.update(1)

    def video_end(self, video, figures):
        self.frames.close()
        self.videos.update(1)

    def close(self):
        for bar in (self.frames, self.videos):
            if bar is not None:
                bar.close()


def command(args, console: Console) -> tuple[dict, str]:
    check_model_options(args)
    ds = dataset(args, frames=True)  # fail fast, before the model loads
    out = args.output.expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise CLIError(f"output {str(out)!r} exists and is not a folder; choose a folder with -o")
    model, info = load_model(args, console, args.resolution)
    predictor = vos_predictor(model, non_overlap_masks=not ds.per_object)
    settings = {k: info[k] for k in ("model_config", "checkpoint", "resolution", "precision", "compile", "int8")}
    if info["backend"] != "torch":  # named only when not the default: earlier runs resume as before
        settings["backend"] = info["backend"]
    settings.update(layout=ds.layout, non_overlap_masks=not ds.per_object, score_threshold=0.0, **OFFICIAL_SETTINGS)
    header = {"sam2kit_version": sam2kit.__version__, "command": "vos", "device": info["device"],
              "dataset": {"path": str(ds.root.resolve()), "layout": ds.layout, "videos": len(ds.videos)},
              "settings": settings}
    console.note(f"{ds.layout} dataset {ds.root}: {len(ds.videos)} videos; predictions into {out}")
    bars = Bars(console)
    t0 = time.perf_counter()
    try:
        ledger = run_dataset(predictor, ds, out, header, redo=args.overwrite, progress=bars,
                             session_options={"release_memory_every": RELEASE_EVERY})
    except DatasetError as e:
        raise CLIError(one_line(e)) from None
    finally:
        bars.close()
    ledger["timings_s"] = {"load_model": info["load_model_s"], "total": round(time.perf_counter() - t0, 3)}
    return ledger, summary(ledger, out, args.dataset)


def summary(ledger: dict, out: Path, dataset_path: Path) -> str:
    run = ledger["last_run"]
    fps = run["frames_per_second"]
    lines = [f"dataset  {ledger['dataset']['path']} ({ledger['dataset']['layout']}, {len(run['videos'])} videos)",
             f"model    {ledger['settings']['model_config']} at {ledger['settings']['resolution']} px on "
             f"{ledger['device']}",
             f"videos   {run['predicted']} predicted, {len(run['skipped'])} already done",
             f"frames   {run['frames']} in {run['seconds']:.1f} s"
             + (f" ({fps:.2f} frames/s tracking and writing)" if fps else ""),
             f"wrote    {out}/<video>/ and {LEDGER}",
             f"next     sam2kit evaluate --gt {dataset_path} --pred {out}"]
    return "\n".join(lines)
