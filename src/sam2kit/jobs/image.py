"""The image job: masks of a photo from clicks, boxes or a grid of clicks (the origin image
workflow: a 3x3 grid, each point alone as a foreground prompt, the best of three candidates),
written into a folder (mask_NN.png, overlay_NN.png, composite.png, results.json)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import sam2kit
from sam2kit.errors import InputError
from sam2kit.image.io import DEFAULT_MAX_PIXELS, ImageReadError, allow_pixels, read_image
from sam2kit.jobs import prompts as P
from sam2kit.jobs.common import Console, sample, write_export_formats
from sam2kit.jobs.model import ModelSpec, image_predictor, load_model
from sam2kit.outputs import (BBOX_FORMAT, colour, draw_prompt, grid_composite, mask_png, mask_stats,
                             save_json, tint)

STALE = r"(mask|overlay)_\d+\.png"  # files of an earlier run that this one may not rewrite


@dataclass(frozen=True)
class ImageJob:
    """One photo and its prompts. ``image``: the file (None: the bundled sample photo);
    ``point``: clicks, all one prompt (with at most one ``box``); ``box``: boxes (several without
    points: one prompt each); ``grid``: (rows, cols) of single-click prompts (the default, 3x3,
    when no prompt is given); ``single_mask``: one mask per prompt instead of the best of three;
    ``max_pixels``: refuse larger pictures (decompression bombs)."""

    image: Path | None = None
    point: tuple[P.PointSpec, ...] = ()
    box: tuple[P.BoxSpec, ...] = ()
    grid: tuple[int, int] | None = None
    single_mask: bool = False
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    formats: tuple[str, ...] = ()  # export formats (sam2kit.formats.write), e.g. ("coco-polygons", "yolo")
    polygon_tolerance: float = 1.0  # their polygons' Douglas-Peucker tolerance, in pixels


def load_image(path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The picture at ``path`` (``sam2kit.image.io.read_image``); an InputError if it cannot be used."""
    allow_pixels(max_pixels)  # this process is ours: let Pillow open what --max-pixels allows
    try:
        return read_image(path, max_pixels)
    except ImageReadError as e:
        raise InputError(str(e)) from None


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


def run(args: ImageJob, console: Console, out: Path, model=None, model_info=None, model_spec=None) -> dict:
    """The image workflow into ``out`` (a folder of its own, being written); ``model``: one already
    loaded (with ``model_info``), else ``model_spec``'s is loaded (None: the default model).
    Returns results."""
    t_start = time.perf_counter()
    path = (args.image or sample("sample_photo.png")).expanduser()
    image = load_image(path, args.max_pixels)
    h, w = image.shape[:2]
    prompts = P.image_prompts(args.point, args.box, args.grid, w, h)
    grid_rc = (args.grid or (3, 3)) if prompts[0].grid_cell is not None else None
    loaded_before = model is not None  # (the demo shares one model between workflows)
    if model is None:
        spec = model_spec or ModelSpec()
        model, model_info = load_model(spec, console, spec.resolution)
    predictor = image_predictor(model)  # (the ONNX runtime's for an export)
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
    write_export_formats(args, out, results)
    return results
