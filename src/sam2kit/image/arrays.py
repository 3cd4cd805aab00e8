"""Input arrays for the predictors without PyTorch: pictures as HxWx3 uint8 RGB, video frames
resized to the model input, point prompts validated. Used by the torch predictors and by the
ONNX runtime (``sam2kit.onnx``), which must not import torch."""

from __future__ import annotations

import numpy as np


def as_rgb_array(image, what: str = "image") -> np.ndarray:
    """A PIL image or an HxWx3 uint8 array as a contiguous HxWx3 uint8 array (RGB)."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        return np.array(image.convert("RGB"))
    if type(image).__module__.split(".")[0] == "torch":  # a tensor, told without importing torch
        raise ValueError(f"{what} must be an HxWx3 uint8 numpy array or a PIL image, got a torch "
                         "tensor; pass tensor.cpu().numpy() in HWC uint8")
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{what} must be an HxWx3 uint8 numpy array or a PIL image, "
                         f"got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        hint = " (drop the alpha channel: image[..., :3])" if image.ndim == 3 and image.shape[2] == 4 else ""
        hint = hint or (" (grayscale: np.stack([img] * 3, -1))" if image.ndim == 2 else "")
        raise ValueError(f"{what} must have shape HxWx3 (RGB), got {tuple(image.shape)}{hint}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{what} is empty: shape {tuple(image.shape)}")
    if image.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8 with values 0..255, got dtype {image.dtype} "
                         "(convert with (img * 255).round().astype(np.uint8) for floats in [0, 1])")
    if not image.flags.writeable or not image.flags.c_contiguous:
        image = np.array(image)  # torch wants a writable, contiguous buffer
    return image


def resize_frame(frame: np.ndarray, size: int) -> np.ndarray:
    """A video frame (HxWx3 uint8 RGB) resized as the reference resizes video frames: Pillow's
    bicubic resize to the square input -> [size, size, 3] uint8."""
    from PIL import Image

    return np.asarray(Image.fromarray(frame).resize((size, size), Image.BICUBIC))


def check_points(coords, labels):
    """Validate point prompts: (coords [B, N, 2] float32, labels [B, N] int32) from Nx2 or BxNx2
    coordinates and N or BxN labels (1 foreground, 0 background)."""
    if coords is None:
        raise ValueError("point_labels were given without point_coords")
    if labels is None:
        raise ValueError("point_labels must be supplied if point_coords is supplied "
                         "(1 for foreground, 0 for background)")
    coords = np.asarray(coords, dtype=np.float32)
    labels = np.asarray(labels)
    if coords.ndim == 2:
        coords = coords[None]
        labels = labels[None] if labels.ndim == 1 else labels
    if coords.ndim != 3 or coords.shape[-1] != 2:
        raise ValueError(f"point_coords must be Nx2 (x, y) or BxNx2, got shape {coords.shape}")
    if labels.shape != coords.shape[:2]:
        raise ValueError(f"point_labels must have one label per point: shape {coords.shape[:2]} "
                         f"expected, got {labels.shape}")
    if not np.all(np.isfinite(coords)):
        raise ValueError("point_coords contain NaN or infinite values; give finite pixel coordinates")
    if labels.size and not np.all(np.isin(labels, (0, 1))):
        bad = sorted(set(np.unique(labels).tolist()) - {0, 1})
        raise ValueError(f"point_labels must be 1 (foreground) or 0 (background), got {bad}")
    return coords, labels.astype(np.int32)
