"""``sam2kit image``: masks of a photo from clicks, boxes or a grid of clicks (the origin image
workflow: a 3x3 grid, each point alone as a foreground prompt, the best of three candidates)."""

from __future__ import annotations

import argparse
from pathlib import Path


from sam2kit.image.io import DEFAULT_MAX_PIXELS
from sam2kit.jobs import image as job
from sam2kit.jobs.auto import AutoJob, run_auto
from sam2kit.jobs.image import STALE, ImageJob, load_image  # noqa: F401 - load_image: for callers

from sam2kit.cli import prompts as P
from sam2kit.cli.auto import add_auto_options, check_auto_args, summary_auto
from sam2kit.cli.common import (Console, StagedOutput, add_feedback_options, add_format_options,
                                add_model_options, add_output_options, check_model_options, fields_of,
                                model_line, model_spec)

DESCRIPTION = """\
Segment a photo with SAM 2 from prompts and write, into the output folder:
  mask_00.png ...     one mask per prompt (8-bit, 0 background / 255 object, the image's size)
  overlay_00.png ...  the image with that mask and its prompt drawn on it
  composite.png       all masks with their prompts (for a grid: one panel per point, laid out
                      like the grid)
  results.json        per prompt: points/box, chosen score, every candidate's score, mask area
                      and bounding box; model, device, image size, timings
Without --point or --box, a 3x3 grid of points is used, each point alone as a foreground
prompt; every prompt keeps the best of the model's three candidate masks (--single-mask: one).
"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("image", help="segment a photo from clicks, a box or a grid of clicks",
                       description=DESCRIPTION, epilog=f"Prompts: {P.COORDINATES_HELP}.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", nargs="?", type=Path, metavar="IMAGE",
                   help="the image file (default: the bundled sample photo)")
    add_output_options(p)
    add_format_options(p)
    g = p.add_argument_group("prompts")
    g.add_argument("--grid", type=P.grid, metavar="ROWSxCOLS",
                   help="a grid of points at the cells' centres, each its own prompt (default: 3x3)")
    g.add_argument("--point", type=P.image_point, action="append", default=[], metavar="X,Y[:LABEL]",
                   help="a click (repeatable; all clicks form one prompt); LABEL 1 foreground "
                        "(default) or 0 background")
    g.add_argument("--box", type=P.image_box, action="append", default=[], metavar="X0,Y0,X1,Y1",
                   help="a box (with --point: part of that prompt; several boxes: one prompt each)")
    g.add_argument("--single-mask", action="store_true",
                   help="ask for one mask per prompt instead of keeping the best of three")
    p.add_argument("--max-pixels", type=max_pixels, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help="refuse pictures of more than N pixels, a guard against decompression bombs "
                        f"(default: {DEFAULT_MAX_PIXELS}, Pillow's)")
    add_auto_options(p)
    add_model_options(p, onnx=True)
    add_feedback_options(p)
    p.set_defaults(run=command)
    return p


def max_pixels(text: str) -> int:
    """argparse type of ``--max-pixels``."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of pixels, got {text!r}")
    return int(text)


def command(args, console: Console) -> tuple[dict, str]:
    """Returns the results document and a summary for the terminal."""
    check_model_options(args)  # fail fast, before anything slow
    if args.auto:  # segment everything: a job of its own (sam2kit.jobs.auto)
        check_auto_args(args)
        with StagedOutput(args.output, args.overwrite, stale=STALE) as out:
            results = run_auto(fields_of(AutoJob, args), console, out, model_spec=model_spec(args))
        return results, summary_auto(results, args.output)
    with StagedOutput(args.output, args.overwrite, stale=STALE) as out:
        results = job.run(fields_of(ImageJob, args), console, out, model_spec=model_spec(args))
    return results, summary(results, args.output)


def summary(results: dict, output: Path) -> str:
    t, img = results["timings_s"], results["image"]
    lines = [f"image    {img['path']} ({img['width']}x{img['height']})",
             model_line(results),
             f"timings  load {t['load_model']:.2f} s, set_image {t['set_image']:.3f} s, predict "
             f"{t['predict_total']:.3f} s ({t['predict_mean'] * 1000:.1f} ms a prompt)",
             f"{'k':>3} {'prompt':<26} {'score':>7}  {'candidates':<22} {'area':>8}  bbox"]
    for e in results["prompts"]:
        pts = " ".join(f"({x:.0f},{y:.0f})" for x, y in e["points"][:2])
        pts += "..." if len(e["points"]) > 2 else ""
        what = (pts + (" box" if e["box"] else "")).strip()
        cands = " ".join(f"{s:.3f}" for s in e["candidate_scores"])
        lines.append(f"{e['index']:>3} {what:<26} {e['score']:>7.3f}  {cands:<22} {e['area']:>8}  "
                     f"{e['bbox_xyxy']}")
    n = len(results["prompts"])
    lines.append(f"wrote    {n} masks, {n} overlays, composite.png, results.json to {output}")
    return "\n".join(lines)
