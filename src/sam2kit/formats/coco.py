"""COCO instance annotations (the `instances_*.json` layout pycocotools reads), with
segmentations as polygons or as compressed RLE.

Polygons follow `formats.polygons`: one COCO polygon per 4-connected part of a mask, pixel-edge
coordinates. A mask with holes cannot be a COCO polygon list (pycocotools takes the union of the
polygons), so by default (`holes="rle"`) such an annotation is written as compressed RLE
(`{"size": [H, W], "counts": str}`, still `iscrowd: 0`), which pycocotools and detectron2 read;
`holes="keyhole"` writes each part with its holes joined in (`Polygon.keyhole`), which
pycocotools rasterises with the holes empty but polygon-only editors may draw as one outline.
Video frames become images ("frames/00000.jpg"), each annotation carrying `track_id`.
"""

from __future__ import annotations

import json

import numpy as np

from ..image.amg import coco_encode_rle, mask_to_rle
from .document import Document
from .polygons import DEFAULT_TOLERANCE, flat, mask_to_polygons

HOLE_RULES = ("rle", "keyhole")


def _box_xywh(mask: np.ndarray) -> list[float]:
    ys, xs = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return [int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)]


def segmentation(mask: np.ndarray, mode: str = "polygons", tolerance: float = DEFAULT_TOLERANCE,
                 holes: str = "rle"):
    """COCO `segmentation` of an [H, W] mask: a list of flat polygons, or an RLE dict
    (mode "rle", or a mask with holes under holes="rle")."""
    if holes not in HOLE_RULES:
        raise ValueError(f"holes must be one of {HOLE_RULES}, got {holes!r}")
    if mode == "rle":
        return _rle(mask)
    polys = mask_to_polygons(mask, tolerance)
    if holes == "rle" and any(p.holes for p in polys):
        return _rle(mask)
    return [flat(p.keyhole() if p.holes else p.outer) for p in polys]


def _rle(mask: np.ndarray) -> dict:
    return coco_encode_rle(mask_to_rle(mask))


def coco_dict(doc: Document, mode: str = "polygons", tolerance: float = DEFAULT_TOLERANCE,
              holes: str = "rle") -> dict:
    """The COCO document of `doc`: images (one per frame), annotations (non-empty masks only,
    bbox [x, y, w, h] of the mask's pixels, area = pixel count), categories (ids from 1)."""
    cats = {name: k + 1 for k, name in enumerate(doc.labels)}
    images, anns = [], []
    for i, fr in enumerate(doc.frames, start=1):
        images.append({"id": i, "file_name": fr.file_name, "width": fr.width, "height": fr.height,
                       **({"frame_index": fr.index} if doc.kind == "video" else {})})
        for inst in fr.instances:
            m = inst.mask()
            if not m.any():
                continue
            a = {"id": len(anns) + 1, "image_id": i, "category_id": cats[inst.label],
                 "segmentation": segmentation(m, mode, tolerance, holes), "area": int(m.sum()),
                 "bbox": _box_xywh(m), "iscrowd": 0}
            if inst.score is not None:
                a["score"] = round(float(inst.score), 6)
            if inst.track_id is not None:
                a["track_id"] = inst.track_id
            anns.append(a)
    return {"info": {"description": f"sam2kit export of {doc.source}",
                     "segmentation": mode if mode == "rle" else f"polygons (tolerance {tolerance} px, "
                     f"masks with holes as {'RLE' if holes == 'rle' else 'keyhole polygons'})"},
            "images": images, "annotations": anns,
            "categories": [{"id": k, "name": n, "supercategory": n} for n, k in cats.items()]}


def coco_json(doc: Document, **kw) -> str:
    return json.dumps(coco_dict(doc, **kw))
