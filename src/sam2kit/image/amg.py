"""Helpers of automatic mask generation, without torchvision, cv2 or pycocotools: point grids,
crop boxes, stability scores, boxes around masks, box non-maximum suppression and run-length
encodings (uncompressed and the COCO compressed string).

Conventions: boxes are XYXY with inclusive pixel indices of the mask's first and last row and
column ([0, 0, 0, 0] for an empty mask), as the reference's; RLE counts run down the columns
(column-major, "Fortran" order) and start with a run of zeros (possibly of length 0).
"""

from __future__ import annotations

import math
from itertools import product

import numpy as np
import torch

# ---- prompts and crops --------------------------------------------------------------------


def build_point_grid(n_per_side: int) -> np.ndarray:
    """[n*n, 2] (x, y) points in [0, 1], at the centres of an n x n grid of cells, row by row."""
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs = np.tile(side[None, :], (n_per_side, 1))
    ys = np.tile(side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> list[np.ndarray]:
    """One grid per crop layer 0..n_layers; layer i has int(n_per_side / scale**i) points a side."""
    return [build_point_grid(int(n_per_side / (scale_per_layer ** i))) for i in range(n_layers + 1)]


def generate_crop_boxes(im_size: tuple[int, int], n_layers: int,
                        overlap_ratio: float) -> tuple[list[list[int]], list[int]]:
    """Crop boxes (XYXY, exclusive end) and their layer: the whole image (layer 0), then for
    layer i >= 1 a (2**i) x (2**i) set of overlapping crops, listed column by column."""
    im_h, im_w = im_size
    boxes, layers = [[0, 0, im_w, im_h]], [0]
    for layer in range(1, n_layers + 1):
        n = 2 ** layer
        overlap = int(overlap_ratio * min(im_h, im_w) * (2 / n))
        crop_w = int(math.ceil((overlap * (n - 1) + im_w) / n))
        crop_h = int(math.ceil((overlap * (n - 1) + im_h) / n))
        x0s = [int((crop_w - overlap) * i) for i in range(n)]
        y0s = [int((crop_h - overlap) * i) for i in range(n)]
        for x0, y0 in product(x0s, y0s):
            boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
            layers.append(layer)
    return boxes, layers


# ---- scores and boxes ---------------------------------------------------------------------


def stability_score(logits: torch.Tensor, mask_threshold: float, offset: float) -> torch.Tensor:
    """[N, H, W] logits -> [N] float32: the IoU of the masks thresholded at threshold +- offset
    (the higher one lies inside the lower one, so it is a ratio of pixel counts; 0/0 is NaN)."""
    inter = (logits > (mask_threshold + offset)).flatten(1).sum(-1, dtype=torch.int32)
    union = (logits > (mask_threshold - offset)).flatten(1).sum(-1, dtype=torch.int32)
    return inter.float() / union.float()


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """[N, H, W] bool -> [N, 4] int64 XYXY inclusive pixel boxes; [0, 0, 0, 0] for empty masks."""
    n, h, w = masks.shape
    if n == 0:
        return torch.zeros(0, 4, dtype=torch.long, device=masks.device)
    rows = masks.any(dim=2)  # [N, H]
    cols = masks.any(dim=1)  # [N, W]
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    top = torch.where(rows, ar_h, h).amin(1)
    bottom = torch.where(rows, ar_h, -1).amax(1)
    left = torch.where(cols, ar_w, w).amin(1)
    right = torch.where(cols, ar_w, -1).amax(1)
    boxes = torch.stack([left, top, right, bottom], 1)
    return boxes * rows.any(1, keepdim=True)


def is_box_near_crop_edge(boxes: torch.Tensor, crop_box: list[int], orig_box: list[int],
                          atol: float = 20.0) -> torch.Tensor:
    """[N, 4] boxes in crop coordinates -> [N] bool: a side lies within atol of the crop's
    edge where that edge is not also the image's edge (the mask is probably cut off)."""
    x0, y0 = crop_box[:2]
    b = (boxes + torch.tensor([x0, y0, x0, y0], device=boxes.device)).float()
    crop = torch.as_tensor(crop_box, dtype=torch.float, device=boxes.device)
    orig = torch.as_tensor(orig_box, dtype=torch.float, device=boxes.device)
    near_crop = torch.isclose(b, crop[None], atol=atol, rtol=0)
    near_image = torch.isclose(b, orig[None], atol=atol, rtol=0)
    return (near_crop & ~near_image).any(1)


def box_xyxy_to_xywh(box) -> list[float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


def box_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression of XYXY boxes [N, 4]; returns the kept indices (int64),
    highest score first.

    Semantics of torchvision's ``nms`` / ``batched_nms`` with one category, on which the
    reference relies: boxes are visited by score, highest first, equal scores in index order
    (a stable sort); a visited box that was not suppressed is kept and suppresses every later
    box whose IoU with it is greater than ``iou_threshold``. Areas are (x1 - x0) * (y1 - y0)
    (a box of one pixel row has area 0); IoU = inter / (area_a + area_b - inter) in float32,
    compared with the threshold in float64; a 0/0 IoU (NaN) suppresses nothing. (torchvision's
    ``batched_nms`` returns the same boxes; with more than 1000 boxes on the CPU it orders
    equal scores arbitrarily, here they stay in index order.)
    """
    n = boxes.shape[0]
    order = torch.sort(scores, descending=True, stable=True)[1]
    if n == 0 or iou_threshold >= 1.0:  # an IoU is never above 1: nothing is suppressed
        return order
    b = boxes[order].float().cpu()
    x0, y0, x1, y1 = b.unbind(1)
    areas = (x1 - x0) * (y1 - y0)
    suppressed = torch.zeros(n, dtype=torch.bool)
    keep = []
    for i in range(n):
        if suppressed[i]:
            continue
        keep.append(i)
        w = (torch.minimum(x1[i], x1[i + 1:]) - torch.maximum(x0[i], x0[i + 1:])).clamp(min=0)
        h = (torch.minimum(y1[i], y1[i + 1:]) - torch.maximum(y0[i], y0[i + 1:])).clamp(min=0)
        inter = w * h
        iou = inter / ((areas[i] + areas[i + 1:]) - inter)
        suppressed[i + 1:] |= iou.double() > iou_threshold
    return order[torch.tensor(keep, dtype=torch.long, device=order.device)]


# ---- run-length encodings -----------------------------------------------------------------


def masks_to_rle_counts(masks: torch.Tensor) -> list[np.ndarray]:
    """[N, H, W] bool -> per mask the int64 run lengths down the columns, starting with zeros."""
    n, h, w = masks.shape
    flat = masks.transpose(1, 2).reshape(n, h * w)  # column-major
    change = flat[:, 1:] ^ flat[:, :-1]
    mask_idx, pos = change.nonzero(as_tuple=True)
    per_mask = torch.bincount(mask_idx, minlength=n).tolist()
    pos = (pos + 1).cpu().numpy()
    first = flat[:, 0].cpu().numpy()
    out, start = [], 0
    for i in range(n):
        cuts = np.concatenate([[0], pos[start:start + per_mask[i]], [h * w]])
        start += per_mask[i]
        runs = np.diff(cuts)
        out.append(np.concatenate([[0], runs]) if first[i] else runs)
    return out


def mask_to_rle(mask) -> dict:
    """An HxW binary mask -> the uncompressed RLE {"size": [h, w], "counts": [int, ...]}."""
    m = torch.as_tensor(np.asarray(mask, dtype=bool))[None]
    return {"size": list(m.shape[1:]), "counts": masks_to_rle_counts(m)[0].tolist()}


def rle_to_mask(rle: dict) -> np.ndarray:
    """An uncompressed or COCO-compressed RLE -> the HxW bool mask."""
    h, w = rle["size"]
    counts = rle["counts"]
    counts = _coco_counts(counts) if isinstance(counts, (str, bytes)) else np.asarray(counts, dtype=np.int64)
    if counts.sum() != h * w:
        raise ValueError(f"RLE counts add up to {counts.sum()}, not {h}x{w} = {h * w} pixels")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    return np.repeat(values, counts).reshape(w, h).T


def area_from_rle(rle: dict) -> int:
    return int(sum(rle["counts"][1::2]))


def counts_to_coco_string(counts) -> str:
    """Run lengths -> the COCO compressed RLE string (pycocotools' ``rleToString``): from the
    fourth count on, each is stored as the difference to the count two before; each number is
    written 5 bits at a time, least significant first, as characters 48 + value, with 32 added
    while more follow; the last group's bit 16 carries the sign. Vectorised over the counts (a
    noisy mask has hundreds of thousands of runs)."""
    c = np.asarray(counts, dtype=np.int64).reshape(-1) & 0xFFFFFFFF  # pycocotools stores uint32
    x = c.copy()
    x[3:] -= c[1:-2]
    chars = np.zeros((x.size, 7), dtype=np.uint8)  # 7 groups of 5 bits hold any difference
    active = np.ones(x.size, dtype=bool)
    for k in range(7):
        ch = x & 0x1F
        x >>= 5  # arithmetic shift: negative numbers end at -1
        more = np.where(ch & 0x10, x != -1, x != 0)
        chars[:, k] = np.where(active, 48 + np.where(more, ch | 0x20, ch), 0)
        active &= more
    return chars[chars != 0].tobytes().decode("ascii")


def coco_string_to_counts(s) -> list[int]:
    """The inverse of ``counts_to_coco_string`` (pycocotools' ``rleFrString``)."""
    return _coco_counts(s).tolist()


def _coco_counts(s) -> np.ndarray:
    """``coco_string_to_counts`` as an int64 array (vectorised over the characters)."""
    if isinstance(s, str):
        if not s.isascii():
            raise ValueError("not a COCO RLE string: characters outside '0'..'o'")
        s = s.encode("ascii")
    v = np.frombuffer(s, dtype=np.uint8).astype(np.int64) - 48
    if v.size == 0:
        return np.zeros(0, dtype=np.int64)
    if v.min() < 0 or v.max() > 63:
        raise ValueError("not a COCO RLE string: characters outside '0'..'o'")
    end = (v & 0x20) == 0
    if not end[-1]:
        raise ValueError("not a COCO RLE string: it ends inside a number")
    starts = np.flatnonzero(np.concatenate([[True], end[:-1]]))
    group = np.cumsum(np.concatenate([[0], end[:-1]]))
    k = np.arange(v.size) - starts[group]
    x = np.add.reduceat((v & 0x1F) << (5 * k), starts)
    last = np.flatnonzero(end)
    negative = (v[last] & 0x10) != 0
    x[negative] |= -1 << (5 * (k[last][negative] + 1))
    counts = x.copy()
    counts[1::2] = np.cumsum(x[1::2])
    counts[2::2] = np.cumsum(x[2::2])
    return counts & 0xFFFFFFFF


def coco_encode_rle(rle: dict) -> dict:
    """An uncompressed RLE -> COCO's compressed form {"size": [h, w], "counts": str}, as
    pycocotools' ``frPyObjects`` gives it (decoded to str, ready for JSON)."""
    return {"size": list(rle["size"]), "counts": counts_to_coco_string(rle["counts"])}
