"""CVAT's formats: the mask encoding of its API and SDK, and CVAT XML 1.1 (for images and for
video), as CVAT's own importer (`cvat/apps/dataset_manager/formats/cvat.py`, `load_anno`) reads it.

Mask points (cvat-sdk `cvat_sdk/masks.py`): run lengths over the mask's bounding-box crop in
row-major order, the first run counting zeros (possibly 0), followed by the box as
[x1, y1, x2 - 1, y2 - 1] (inclusive last column and row).

XML: "CVAT for images 1.1" writes each mask as a `<mask>` shape (the run lengths in `rle`, the
crop in `left`, `top`, `width`, `height`), exact. "CVAT for video 1.1" writes one `<track>` per
object with a `<polygon>` keyframe on every frame (`outside="1"` where the mask is empty):
CVAT's importer turns a track of masks into a single shape of its first frame, so masks cannot
be tracks; the polygon is every part and hole of the mask joined into one ring
(`polygons.join_rings`; outer rings clockwise and holes counter-clockwise, so the holes stay
empty under both even-odd and non-zero fills).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime, timezone

import numpy as np

from .document import Document
from .polygons import DEFAULT_TOLERANCE, join_rings, mask_to_polygons


def encode_mask(mask: np.ndarray) -> list[int] | None:
    """[H, W] mask -> CVAT mask points (module docstring); None for an empty mask (CVAT has no
    empty mask shape)."""
    mask = np.asarray(mask) != 0
    ys, xs = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if ys.size == 0:
        return None
    x1, y1, x2, y2 = int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1
    crop = mask[y1:y2, x1:x2].ravel()
    change = np.flatnonzero(crop[1:] != crop[:-1]) + 1
    runs = np.diff(np.concatenate([[0], change, [crop.size]]))
    if crop[0]:
        runs = np.concatenate([[0], runs])
    return [int(r) for r in runs] + [x1, y1, x2 - 1, y2 - 1]


def decode_mask(points, width: int, height: int) -> np.ndarray:
    """CVAT mask points -> [height, width] bool. ValueError names what is wrong."""
    if len(points) < 5:
        raise ValueError("a CVAT mask needs run lengths and a box [x1, y1, x2, y2]")
    if any(float(v) != int(float(v)) or float(v) < 0 for v in points):
        raise ValueError("CVAT mask points must be non-negative integers")
    *runs, x1, y1, x2, y2 = (int(float(v)) for v in points)
    x2, y2 = x2 + 1, y2 + 1
    if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
        raise ValueError(f"CVAT mask box {[x1, y1, x2 - 1, y2 - 1]} lies outside the {width}x{height} image")
    if sum(runs) != (x2 - x1) * (y2 - y1):
        raise ValueError(f"CVAT mask runs add up to {sum(runs)} pixels, its box holds {(x2 - x1) * (y2 - y1)}")
    values = (np.arange(len(runs)) % 2).astype(bool)
    out = np.zeros((height, width), dtype=bool)
    out[y1:y2, x1:x2] = np.repeat(values, runs).reshape(y2 - y1, x2 - x1)
    return out


def mask_polygon(mask: np.ndarray, tolerance: float = DEFAULT_TOLERANCE) -> np.ndarray | None:
    """One [N, 2] ring holding every part and hole of the mask; None when empty."""
    polys = mask_to_polygons(mask, tolerance)
    if not polys:
        return None
    return join_rings([r for p in polys for r in (p.outer, *p.holes)])


def _points(ring: np.ndarray) -> str:
    return ";".join(f"{x:.2f},{y:.2f}" for x, y in ring)


def _meta(root: ET.Element, doc: Document, mode: str, shape_type: str) -> None:
    meta = ET.SubElement(root, "meta")
    task = ET.SubElement(meta, "task")
    fr0 = doc.frames[0] if doc.frames else None
    for k, v in [("name", doc.source or "sam2kit"), ("size", str(len(doc.frames))), ("mode", mode),
                 ("overlap", "0"), ("start_frame", "0"), ("stop_frame", str(max(len(doc.frames) - 1, 0))),
                 ("z_order", "False")]:
        ET.SubElement(task, k).text = v
    labels = ET.SubElement(task, "labels")
    for name in doc.labels:
        lab = ET.SubElement(labels, "label")
        ET.SubElement(lab, "name").text = name
        ET.SubElement(lab, "type").text = shape_type
        ET.SubElement(lab, "attributes")
    if fr0 is not None:
        size = ET.SubElement(task, "original_size")
        ET.SubElement(size, "width").text = str(fr0.width)
        ET.SubElement(size, "height").text = str(fr0.height)
    ET.SubElement(meta, "dumped").text = datetime.now(timezone.utc).isoformat()


def images_xml(doc: Document, shape: str = "mask", tolerance: float = DEFAULT_TOLERANCE) -> str:
    """CVAT for images 1.1: an `<image>` per frame, a `<mask>` (or, shape="polygon", a `<polygon>`
    per 4-connected part, holes dropped) per non-empty instance."""
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    _meta(root, doc, "annotation", shape)
    for k, fr in enumerate(doc.frames):
        img = ET.SubElement(root, "image", id=str(k), name=fr.file_name, width=str(fr.width), height=str(fr.height))
        for inst in fr.instances:
            m = inst.mask()
            common = {"label": inst.label, "source": "auto", "occluded": "0", "z_order": "0"}
            if shape == "polygon":
                for p in mask_to_polygons(m, tolerance):
                    ET.SubElement(img, "polygon", **common, points=_points(p.outer))
                continue
            pts = encode_mask(m)
            if pts is None:
                continue
            x1, y1, x2, y2 = pts[-4:]
            ET.SubElement(img, "mask", **common, rle=", ".join(map(str, pts[:-4])), left=str(x1),
                          top=str(y1), width=str(x2 - x1 + 1), height=str(y2 - y1 + 1))
    return _serialise(root)


def video_xml(doc: Document, tolerance: float = DEFAULT_TOLERANCE) -> str:
    """CVAT for video 1.1: a `<track>` per object, a `<polygon>` keyframe on each of its frames."""
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    _meta(root, doc, "interpolation", "polygon")
    tracks: dict[int, ET.Element] = {}
    last: dict[int, str] = {}
    for fr in doc.frames:
        for inst in fr.instances:
            tid = inst.track_id if inst.track_id is not None else 0
            if tid not in tracks:
                tracks[tid] = ET.SubElement(root, "track", id=str(len(tracks)), label=inst.label, source="auto")
            ring = mask_polygon(inst.mask(), tolerance)
            if ring is None and tid not in last:
                continue  # a track starts on the first frame its object shows
            pts = last[tid] if ring is None else _points(ring)
            last[tid] = pts
            ET.SubElement(tracks[tid], "polygon", frame=str(fr.index), keyframe="1",
                          outside="1" if ring is None else "0", occluded="0", points=pts, z_order="0")
    for tid in [t for t, el in tracks.items() if len(el) == 0]:
        root.remove(tracks[tid])  # an object never seen: no track
    return _serialise(root)


def _serialise(root: ET.Element) -> str:
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
