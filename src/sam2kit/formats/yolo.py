"""YOLO segmentation labels, the layout ultralytics trains on
(https://docs.ultralytics.com/datasets/segment/#ultralytics-yolo-format): one text file per
picture, same stem as the picture, one line per object

    <class-index> <x1> <y1> <x2> <y2> ... <xn> <yn>

with coordinates divided by the picture's width and height (0..1), plus a `data.yaml` naming
the classes. One line carries one polygon, so an object of several parts or with holes is written
as one ring that joins every part and hole by zero-width cuts (`polygons.join_rings`, as
ultralytics' own `merge_multi_segment` joins COCO parts); the holes stay empty in a
crossing-rule fill such as OpenCV's `fillPoly` (ultralytics' `polygon2mask`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .document import Document, write_atomic
from .polygons import DEFAULT_TOLERANCE, join_rings, mask_to_polygons


def yolo_line(mask: np.ndarray, class_index: int, tolerance: float = DEFAULT_TOLERANCE) -> str | None:
    """The label line of one [H, W] mask; None for an empty mask."""
    polys = mask_to_polygons(mask, tolerance)
    if not polys:
        return None
    h, w = mask.shape
    ring = join_rings([r for p in polys for r in (p.outer, *p.holes)])
    xy = np.clip(ring / [w, h], 0.0, 1.0)
    return f"{class_index} " + " ".join(f"{v:.6f}" for v in xy.ravel())


def write_yolo(doc: Document, folder: Path, tolerance: float = DEFAULT_TOLERANCE) -> list[Path]:
    """`folder`/labels/<stem>.txt for every frame (empty file: no objects) and `folder`/data.yaml.
    Returns the files written."""
    folder = Path(folder)
    classes = {name: k for k, name in enumerate(doc.labels)}
    written = []
    for fr in doc.frames:
        lines = [yolo_line(inst.mask(), classes[inst.label], tolerance) for inst in fr.instances]
        path = folder / "labels" / f"{Path(fr.file_name).stem}.txt"
        write_atomic(path, "".join(f"{ln}\n" for ln in lines if ln is not None))
        written.append(path)
    names = "\n".join(f"  {k}: {_yaml_str(n)}" for n, k in classes.items())
    images = "images"  # ultralytics finds labels/x.txt for images/x.jpg
    yaml = (f"# sam2kit export of {_yaml_str(doc.source)}; labels/ holds one file per picture in {images}/\n"
            f"path: .\ntrain: {images}\nval: {images}\nnames:\n{names}\n")
    write_atomic(folder / "data.yaml", yaml)
    return [*written, folder / "data.yaml"]


def _yaml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
