"""What pictures and videos share on the wire: masks as COCO RLE, boxes, coordinate checks, JPEG."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from .. import amg
from .media import BadInput


def coco_rle(mask: np.ndarray) -> dict:
    """HxW bool -> COCO compressed RLE {"size": [H, W], "counts": str}."""
    return amg.coco_encode_rle(amg.mask_to_rle(mask))


def xywh(mask: np.ndarray) -> list[int] | None:
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return None
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


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
