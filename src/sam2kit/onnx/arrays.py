"""NumPy versions of the few tensor operations around the graphs (no PyTorch): PyTorch's
bilinear resize (plain and antialiased, ``align_corners=False``) as separable interpolation
matrices, connected components and hole filling (``sam2kit.image.postprocess``'s algorithm), bf16
rounding (how the torch session stores memories), the 4x4 mask downsampling convolution."""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=32)
def _bilinear_matrix(n_in: int, n_out: int, antialias: bool) -> np.ndarray:
    """[n_out, n_in] float32 weights of torch's 1-D bilinear interpolation (align_corners=False)."""
    scale = np.float32(n_in) / np.float32(n_out)
    mat = np.zeros((n_out, n_in), np.float64)
    if antialias and scale > 1:  # torch's _upsample_bilinear2d_aa: a triangle filter widened by scale
        support = scale
        for i in range(n_out):
            center = scale * (i + 0.5)
            lo = max(int(center - support + 0.5), 0)
            hi = min(int(center + support + 0.5), n_in)
            j = np.arange(lo, hi)
            w = np.maximum(0.0, 1.0 - np.abs((j - center + 0.5) / scale))
            if w.sum() > 0:
                mat[i, lo:hi] = w / w.sum()
        return mat.astype(np.float32)
    if antialias:  # upsampling with antialias: the same filter, renormalised at the borders
        for i in range(n_out):
            center = scale * (i + 0.5)
            lo = max(int(center - 1 + 0.5), 0)
            hi = min(int(center + 1 + 0.5), n_in)
            j = np.arange(lo, hi)
            w = np.maximum(0.0, 1.0 - np.abs(j - center + 0.5))
            if w.sum() > 0:
                mat[i, lo:hi] = w / w.sum()
        return mat.astype(np.float32)
    src = np.maximum(scale * (np.arange(n_out, dtype=np.float32) + 0.5) - 0.5, 0).astype(np.float32)
    i0 = np.minimum(src.astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    l1 = src - i0
    rows = np.arange(n_out)
    np.add.at(mat, (rows, i0), 1 - l1)
    np.add.at(mat, (rows, i1), l1)
    return mat.astype(np.float32)


def resize(x: np.ndarray, hw: tuple[int, int], antialias: bool = False) -> np.ndarray:
    """[..., H, W] float32 -> [..., h, w] as ``F.interpolate(mode="bilinear",
    align_corners=False, antialias=...)`` (to float rounding)."""
    h, w = int(hw[0]), int(hw[1])
    if x.shape[-2:] == (h, w):
        return x.astype(np.float32, copy=False)
    ry = _bilinear_matrix(x.shape[-2], h, antialias)
    rx = _bilinear_matrix(x.shape[-1], w, antialias)
    return np.matmul(np.matmul(ry, x.astype(np.float32, copy=False)), rx.T)


def preprocess_image(image: np.ndarray, size: int, mean, std) -> np.ndarray:
    """HxWx3 uint8 -> [1, 3, size, size] float32: /255, antialiased bilinear resize, ImageNet
    normalisation (as ``sam2kit.image.transforms.preprocess``)."""
    t = image.astype(np.float32).transpose(2, 0, 1) / np.float32(255)  # [3, H, W]
    t = resize(t, (size, size), antialias=True)
    mean = np.asarray(mean, np.float32).reshape(3, 1, 1)
    std = np.asarray(std, np.float32).reshape(3, 1, 1)
    return ((t - mean) / std)[None].astype(np.float32)


def preprocess_frame(small: np.ndarray, mean, std) -> np.ndarray:
    """A frame already resized to [S, S, 3] uint8 -> [1, 3, S, S] float32 (as
    ``sam2kit.image.transforms.frame_to_input``: /255 in float64, then float32 normalisation)."""
    t = (small / 255.0).transpose(2, 0, 1).astype(np.float32)
    mean = np.asarray(mean, np.float32).reshape(3, 1, 1)
    std = np.asarray(std, np.float32).reshape(3, 1, 1)
    return ((t - mean) / std)[None]


def round_bf16(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to bfloat16 (round to nearest even), kept as float32."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32)
    u = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return u.view(np.float32)


def _max3x3(x: np.ndarray) -> np.ndarray:
    p = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    h, w = x.shape[-2:]
    out = x.copy()
    for dy in range(3):
        for dx in range(3):
            np.maximum(out, p[:, dy:dy + h, dx:dx + w], out=out)
    return out


def connected_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components of binary masks [N, 1, H, W]: (labels, areas) int32 [N, 1, H, W]
    as ``sam2kit.image.postprocess.connected_components`` (max-id propagation with pointer jumping)."""
    mask = mask.astype(bool)
    n, _, h, w = mask.shape
    m = mask[:, 0]
    ids = np.arange(1, h * w + 1, dtype=np.float32).reshape(1, h, w)
    labels = np.where(m, ids, 0).astype(np.float32)
    while True:
        grown = np.where(m, _max3x3(labels), labels)
        flat = grown.reshape(n, -1)
        idx = np.maximum(flat.astype(np.int64) - 1, 0)
        jumped = np.where(flat > 0, np.take_along_axis(flat, idx, 1), flat)
        grown = np.maximum(flat, jumped).reshape(n, h, w)
        if np.array_equal(grown, labels):
            break
        labels = grown
    lab = labels.astype(np.int64).reshape(n, -1)
    areas = np.zeros_like(lab)
    for i in range(n):
        counts = np.bincount(lab[i], minlength=h * w + 1)
        counts[0] = 0
        areas[i] = counts[lab[i]]
    return labels.astype(np.int32)[:, None], areas.reshape(n, 1, h, w).astype(np.int32)


def fill_small_holes(logits: np.ndarray, max_area: int) -> np.ndarray:
    """Background holes of up to ``max_area`` pixels in [N, 1, H, W] logits get 0.1."""
    labels, areas = connected_components(logits <= 0)
    return np.where((labels > 0) & (areas <= max_area), np.float32(0.1), logits).astype(np.float32)


def fill_holes_and_remove_sprinkles(logits: np.ndarray, threshold: float = 0.0, max_hole_area: float = 0.0,
                                    max_sprinkle_area: float = 0.0) -> np.ndarray:
    """As ``sam2kit.image.postprocess.fill_holes_and_remove_sprinkles`` on [N, M, H, W] logits."""
    if max_hole_area <= 0 and max_sprinkle_area <= 0:
        return logits
    out = logits
    flat = logits.reshape(-1, 1, *logits.shape[-2:])
    if max_hole_area > 0:
        labels, areas = connected_components(flat <= threshold)
        hole = ((labels > 0) & (areas <= max_hole_area)).reshape(logits.shape)
        out = np.where(hole, np.float32(threshold + 10.0), out)
    if max_sprinkle_area > 0:
        labels, areas = connected_components(flat > threshold)
        sprinkle = ((labels > 0) & (areas <= max_sprinkle_area)).reshape(logits.shape)
        out = np.where(sprinkle, np.float32(threshold - 10.0), out)
    return out.astype(np.float32)


def mask_downsample(mask: np.ndarray, weight: np.ndarray, bias: float) -> np.ndarray:
    """The model's 4x4-stride-4 convolution (1 -> 1 channel) of masks [B, 1, S, S]."""
    b, _, s, _ = mask.shape
    blocks = mask.reshape(b, 1, s // 4, 4, s // 4, 4)
    return (np.einsum("bcyixj,ij->bcyx", blocks, weight.reshape(4, 4)) + np.float32(bias)).astype(np.float32)


def non_overlapping(masks: np.ndarray) -> np.ndarray:
    """Keep each pixel only in the highest-scoring object [N, 1, H, W]; others clamped to <= -10."""
    if masks.shape[0] == 1:
        return masks
    best = np.argmax(masks, axis=0)[None]
    keep = best == np.arange(masks.shape[0])[:, None, None, None]
    return np.where(keep, masks, np.minimum(masks, np.float32(-10.0)))
