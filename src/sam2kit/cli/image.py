"""``sam2kit image``: masks of a photo from clicks, boxes or a grid of clicks (the origin image
workflow: a 3x3 grid, each point alone as a foreground prompt, the best of three candidates)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import sam2kit
from sam2kit import SAM2ImagePredictor
from sam2kit.images import DEFAULT_MAX_PIXELS, ImageReadError, allow_pixels, read_image

from . import prompts as P
from .auto import add_auto_options, check_auto_args, run_auto, summary_auto
from .common import (CLIError, Console, StagedOutput, add_feedback_options, add_model_options,
                     add_output_options, check_model_options, load_model, sample)
from ..outputs import (BBOX_FORMAT, colour, draw_prompt, grid_composite, mask_png, mask_stats,
                      save_json, tint)

STALE = r"(mask|overlay)_\d+\.png"  # files of an earlier run that this one may not rewrite

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
    add_model_options(p)
    add_feedback_options(p)
    p.set_defaults(run=command)
    return p


def load_image(path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The picture at ``path`` (``sam2kit.images.read_image``); a CLIError if it cannot be used."""
    allow_pixels(max_pixels)  # this process is ours: let Pillow open what --max-pixels allows
    try:
        return read_image(path, max_pixels)
    except ImageReadError as e:
        raise CLIError(str(e)) from None


def max_pixels(text: str) -> int:
    """argparse type of ``--max-pixels``."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of pixels, got {text!r}")
    return int(text)


def predict_all(predictor, prompts: list[P.Prompt], multimask: bool, console: Console):
    """(masks, entries): each prompt's chosen mask and its results.json entry (the library's
    ``predict_many``: prompts of one shape are decoded together, with the masks of one prompt
    at a time)."""
    with console.progress(total=len(prompts), desc="prompts", unit="prompt") as bar:
        t0 = time.perf_counter()
        results = predictor.predict_many(prompts, multimask_output=multimask,
                                         progress=lambda done, total: bar.update(done - bar.n))
        dt = (time.perf_counter() - t0) / len(prompts)
    masks, entries = [], []
    for k, (pr, (cand, scores, _)) in enumerate(zip(prompts, results)):
        best = int(np.argmax(scores))
        mask = cand[best] > 0.5
        masks.append(mask)
        entries.append({"index": k, **pr.as_json(), "chosen_candidate": best,
                        "score": round(float(scores[best]), 6),
                        "candidate_scores": [round(float(s), 6) for s in scores],
                        **mask_stats(mask), "predict_s": round(dt, 4)})
    return masks, entries


def write_pictures(out: Path, image: np.ndarray, prompts, masks, entries, grid_rc) -> None:
    """mask_NN.png, overlay_NN.png and composite.png."""
    digits = max(2, len(str(len(prompts) - 1)))
    panels = []
    for k, (pr, mask, e) in enumerate(zip(prompts, masks, entries)):
        rgb = colour(0 if grid_rc else k)
        e["mask_file"], e["overlay_file"] = f"mask_{k:0{digits}d}.png", f"overlay_{k:0{digits}d}.png"
        mask_png(mask).save(out / e["mask_file"])
        overlay = tint(image, [mask], [rgb])
        draw_prompt(overlay, pr.points, pr.labels, pr.box, rgb)
        overlay.save(out / e["overlay_file"])
        panels.append(overlay)
    if grid_rc:
        captions = [f"{e['index']}  score {e['score']:.3f}" for e in entries]
        composite = grid_composite(panels, *grid_rc, captions)
    else:
        composite = tint(image, masks, [colour(k) for k in range(len(masks))])
        for k, pr in enumerate(prompts):
            draw_prompt(composite, pr.points, pr.labels, pr.box, colour(k), str(k))
    composite.save(out / "composite.png")


def run(args, console: Console, out: Path, model=None, model_info=None) -> dict:
    """The image workflow into ``out`` (a folder of its own, being written); returns results."""
    t_start = time.perf_counter()
    path = (args.image or sample("sample_photo.png")).expanduser()
    image = load_image(path, args.max_pixels)
    h, w = image.shape[:2]
    prompts = P.image_prompts(args.point, args.box, args.grid, w, h)
    grid_rc = (args.grid or (3, 3)) if prompts[0].grid_cell is not None else None
    loaded_before = model is not None  # (the demo shares one model between workflows)
    if model is None:
        model, model_info = load_model(args, console, args.resolution)
    predictor = SAM2ImagePredictor(model)
    t0 = time.perf_counter()
    predictor.set_image(image)
    set_image_s = time.perf_counter() - t0
    masks, entries = predict_all(predictor, prompts, not args.single_mask, console)
    write_pictures(out, image, prompts, masks, entries, grid_rc)
    predict_s = sum(e["predict_s"] for e in entries)
    timings = {"load_model": model_info["load_model_s"], "set_image": round(set_image_s, 4),
               "predict_total": round(predict_s, 4), "predict_mean": round(predict_s / len(entries), 4),
               "total": round(time.perf_counter() - t_start + loaded_before * model_info["load_model_s"], 4)}
    results = {
        "sam2kit_version": sam2kit.__version__, "command": "image",
        **{k: v for k, v in model_info.items() if k != "load_model_s"},
        "image": {"path": str(path.resolve()), "width": w, "height": h},
        "prompt_mode": "grid" if grid_rc else ("points" if args.point else "boxes"),
        "grid": {"rows": grid_rc[0], "cols": grid_rc[1]} if grid_rc else None,
        "multimask_output": not args.single_mask,
        "selection": "the candidate with the highest predicted score",
        "coordinates": "pixels, x from the left, y from the top", "bbox_format": BBOX_FORMAT,
        "timings_s": timings, "prompts": entries,
    }
    save_json(results, out / "results.json")
    return results


def command(args, console: Console) -> tuple[dict, str]:
    """Returns the results document and a summary for the terminal."""
    check_model_options(args)  # fail fast, before anything slow
    if args.auto:  # segment everything: a path of its own (cli/auto.py)
        check_auto_args(args)
        with StagedOutput(args.output, args.overwrite, stale=STALE) as out:
            results = run_auto(args, console, out, lambda p: load_image(p, args.max_pixels))
        return results, summary_auto(results, args.output)
    with StagedOutput(args.output, args.overwrite, stale=STALE) as out:
        results = run(args, console, out)
    return results, summary(results, args.output)


def summary(results: dict, output: Path) -> str:
    t, img = results["timings_s"], results["image"]
    lines = [f"image    {img['path']} ({img['width']}x{img['height']})",
             f"model    {results['model_config']} at {results['resolution']} px on {results['device']}",
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
