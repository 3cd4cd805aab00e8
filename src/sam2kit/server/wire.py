"""What pictures and videos share on the wire: masks as COCO RLE, boxes, coordinate checks, JPEG."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from sam2kit.image import amg
from sam2kit.server.media import BadInput


def coco_rle(mask: np.ndarray) -> dict:
    """HxW bool -> COCO compressed RLE {"size": [H, W], "counts": str}."""
    return amg.coco_encode_rle(amg.mask_to_rle(mask))


def xywh(mask: np.ndarray) -> list[int] | None:
    """The mask's bounding box [x, y, w, h], None when it is empty (from the rows and columns
    that hold any pixel: 10x faster than listing the pixels of a noisy mask)."""
    cols = np.flatnonzero(mask.any(axis=0))
    if not len(cols):
        return None
    rows = np.flatnonzero(mask.any(axis=1))
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


def check_inside(x: float, y: float, w: int, h: int, what: str) -> None:
    if not (0 <= x <= w and 0 <= y <= h):
        raise BadInput(422, f"{what} ({x:g}, {y:g}) is outside the {w}x{h} picture; coordinates are "
                            "pixels, x from 0 to the width, y from 0 to the height")


def check_box(box, w: int, h: int) -> None:
    x0, y0, x1, y1 = box
    check_inside(x0, y0, w, h, "box corner")
    check_inside(x1, y1, w, h, "box corner")
    if x1 <= x0 or y1 <= y0:
        raise BadInput(422, f"box {list(box)} is empty or reversed; give [x0, y0, x1, y1] with x1 > x0, y1 > y0")


def encode_jpeg(array: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
