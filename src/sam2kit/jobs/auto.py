"""The automatic-masks job (``sam2kit image --auto``): every mask of a photo
(SAM2AutomaticMaskGenerator over a grid of clicks), written as one PNG per mask, a composite in
distinct colours and a COCO-style results.json."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import sam2kit
from sam2kit import SAM2AutomaticMaskGenerator
from sam2kit.image.amg import rle_to_mask
from sam2kit.image.automatic import coco_annotations
from sam2kit.image.io import DEFAULT_MAX_PIXELS
from sam2kit.jobs.common import Console, sample, write_export_formats
from sam2kit.jobs.image import load_image
from sam2kit.errors import InputError
from sam2kit.jobs.model import ModelSpec, load_model, uses_onnx
from sam2kit.outputs import colour, mask_png, save_json, tint


@dataclass(frozen=True)
class AutoJob:
    """One photo segmented everywhere, with SAM2AutomaticMaskGenerator's settings (its names in
    ``settings()``); ``image`` None: the bundled sample photo."""

    image: Path | None = None
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.8
    stability_thresh: float = 0.95
    box_nms_thresh: float = 0.7
    crop_layers: int = 0
    min_region_area: int = 0
    m2m: bool = False
    formats: tuple[str, ...] = ()  # export formats (sam2kit.formats.write), e.g. ("coco-polygons", "yolo")
    polygon_tolerance: float = 1.0  # their polygons' Douglas-Peucker tolerance, in pixels


def settings(args: AutoJob) -> dict:
    """The SAM2AutomaticMaskGenerator arguments the options give."""
    return dict(points_per_side=args.points_per_side, points_per_batch=args.points_per_batch,
                pred_iou_thresh=args.pred_iou_thresh, stability_score_thresh=args.stability_thresh,
                box_nms_thresh=args.box_nms_thresh, crop_n_layers=args.crop_layers,
                min_mask_region_area=args.min_region_area, use_m2m=args.m2m, output_mode="uncompressed_rle")


def run_auto(args: AutoJob, console: Console, out: Path, model=None, model_info=None, model_spec=None) -> dict:
    """Every mask of the image into ``out`` (a folder of its own, being written); ``model``: one
    already loaded (batch runs, with ``model_info``), else ``model_spec``'s is loaded (None: the
    default model). Returns results."""
    t_start = time.perf_counter()
    if model_spec is not None and uses_onnx(model_spec):
        raise InputError("automatic masks (--auto) run on the PyTorch model only: the ONNX runtime has "
                         "prompts, not the mask generator's crops and de-duplication; leave --onnx out")
    path = (args.image or sample("sample_photo.png")).expanduser()
    image = load_image(path, args.max_pixels)
    h, w = image.shape[:2]
    if model is None:
        spec = model_spec or ModelSpec()
        model, model_info = load_model(spec, console, spec.resolution)
    gen = SAM2AutomaticMaskGenerator(model, **settings(args))
    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = console.progress(total=total, desc="click batches", unit="batch")
        bar.update(1)

    gen.progress = progress
    t0 = time.perf_counter()
    try:
        records = gen.generate(image)
    finally:
        if bar is not None:
            bar.close()
    generate_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    masks = [rle_to_mask(r["segmentation"]) for r in records]
    digits = max(3, len(str(len(records) - 1)))
    annotations = coco_annotations(records)
    for k, (a, m) in enumerate(zip(annotations, masks)):
        a["mask_file"] = f"mask_{k:0{digits}d}.png"
        mask_png(m).save(out / a["mask_file"])
    tint(image, masks, [colour(k) for k in range(len(masks))]).save(out / "composite.png")
    write_s = time.perf_counter() - t0
    results = {
        "sam2kit_version": sam2kit.__version__, "command": "image --auto",
        **{k: v for k, v in model_info.items() if k != "load_model_s"},
        "settings": {k: v for k, v in settings(args).items() if k != "output_mode"},
        "bbox_format": "[x, y, width, height] (COCO): x, y the top-left pixel, width = last column - "
                       "first column (as the reference's records)",
        "timings_s": {"load_model": model_info["load_model_s"], "generate": round(generate_s, 4),
                      "write": round(write_s, 4), "total": round(time.perf_counter() - t_start, 4)},
        "images": [{"id": 1, "file_name": str(path.resolve()), "width": w, "height": h}],
        "categories": [{"id": 1, "name": "object"}],
        "annotations": annotations,
    }
    save_json(results, out / "results.json")
    write_export_formats(args, out, results)
    return results
