"""``sam2kit image --auto``: the options of the automatic-masks job (``sam2kit.jobs.auto``): every mask of a photo (SAM2AutomaticMaskGenerator over a grid of
clicks), written as one PNG per mask, a composite in distinct colours and a COCO-style JSON."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from sam2kit.jobs.auto import run_auto, settings  # noqa: F401 - for callers

from sam2kit.cli.common import CLIError, model_line

HELP = """\
--auto: segment everything. A grid of single clicks covers the image; each click's candidate
masks are kept if their predicted IoU and stability pass the thresholds, duplicates are removed
by box NMS. Writes mask_000.png ... (one per mask, in the generator's order), composite.png
(all masks in distinct colours) and results.json (COCO style: annotations with the RLE
segmentation as a COCO compressed string, bbox [x, y, w, h], area, predicted_iou,
stability_score, point_coords, crop_box; the image, the settings and timings)."""


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}")
    return v


def _count(minimum: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = minimum - 1
        if v < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number of at least {minimum}, got {text!r}")
        return v
    return parse


def add_auto_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("automatic masks (--auto)", HELP)
    g.add_argument("--auto", action="store_true", help="segment everything (not with --point, --box, --grid)")
    g.add_argument("--points-per-side", type=_count(1), default=32, metavar="N",
                   help="an NxN grid of clicks (default 32)")
    g.add_argument("--points-per-batch", type=_count(1), default=64, metavar="N",
                   help="clicks decoded at once (default 64; more is faster and uses more memory)")
    g.add_argument("--pred-iou-thresh", type=_fraction, default=0.8, metavar="T",
                   help="keep masks whose predicted IoU is above T (default 0.8)")
    g.add_argument("--stability-thresh", type=_fraction, default=0.95, metavar="T",
                   help="keep masks whose stability score is at least T (default 0.95)")
    g.add_argument("--box-nms-thresh", type=_fraction, default=0.7, metavar="T",
                   help="drop a mask whose box overlaps a better one's by IoU above T (default 0.7; "
                        "1 keeps all)")
    g.add_argument("--crop-layers", type=_count(0), default=0, metavar="N",
                   help="also run on overlapping crops: layer i adds (2**i)**2 crops (default 0)")
    g.add_argument("--min-region-area", type=_count(0), default=0, metavar="A",
                   help="fill holes and remove islands of up to A pixels of the 256x256 low-res "
                        "mask (default 0: off)")
    g.add_argument("--m2m", action="store_true",
                   help="refine each mask once by feeding it back with its click")


def check_auto_args(args) -> None:
    clash = [name for name, given in (("--point", args.point), ("--box", args.box),
                                      ("--grid", args.grid), ("--single-mask", args.single_mask)) if given]
    if clash:
        raise CLIError(f"--auto segments everything from its own grid of clicks; it does not take "
                       f"{', '.join(clash)} (leave {'them' if len(clash) > 1 else 'it'} out, or drop --auto)")


def summary_auto(results: dict, output: Path) -> str:
    t, img = results["timings_s"], results["images"][0]
    s = results["settings"]
    anns = results["annotations"]
    lines = [f"image    {img['file_name']} ({img['width']}x{img['height']})",
             model_line(results),
             f"grid     {s['points_per_side']}x{s['points_per_side']} clicks, crop layers {s['crop_n_layers']}",
             f"timings  load {t['load_model']:.2f} s, generate {t['generate']:.2f} s, write {t['write']:.2f} s"]
    if anns:
        areas = np.array([a["area"] for a in anns])
        lines.append(f"masks    {len(anns)}: areas {areas.min()} to {areas.max()} pixels, predicted IoU "
                     f"{min(a['predicted_iou'] for a in anns):.3f} to {max(a['predicted_iou'] for a in anns):.3f}")
    else:
        lines.append("masks    none passed the thresholds (lower --pred-iou-thresh / --stability-thresh)")
    lines.append(f"wrote    {len(anns)} masks, composite.png, results.json to {output}")
    return "\n".join(lines)
