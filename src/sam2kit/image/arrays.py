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


def prompt_parts(prompt, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(points Nx2 float32, labels N int32, box 4 float32 or None) of one prompt of
    ``predict_many``: a mapping or an object with points, labels and box."""
    get = prompt.get if isinstance(prompt, dict) else (lambda name: getattr(prompt, name, None))
    points, labels, box = get("points"), get("labels"), get("box")
    points = np.zeros((0, 2), np.float32) if points is None else np.asarray(points, dtype=np.float32)
    labels = np.zeros((0,), np.int32) if labels is None else np.asarray(labels)
    if points.size == 0:
        points = points.reshape(0, 2)
    if points.ndim != 2 or points.shape[1] != 2 or labels.shape != points.shape[:1]:
        raise ValueError(f"prompt {k}: points must be Nx2 (x, y) with one label each, got points "
                         f"{points.shape} and labels {labels.shape}")
    if box is not None:
        box = np.asarray(box, dtype=np.float32).reshape(-1)
        if box.shape != (4,):
            raise ValueError(f"prompt {k}: box must be XYXY (4 numbers), got {box.size}")
    if not len(points) and box is None:
        raise ValueError(f"prompt {k} has neither points nor a box")
    return points, labels.astype(np.int32), box


def predict_many(predict, prompts, batch_size: int = 16, progress=None) -> list:
    """The predictors' ``predict_many``, written once: ``prompts`` (see ``prompt_parts``) grouped
    by shape (number of points, box or not), each group decoded ``batch_size`` prompts at a time
    by ``predict(point_coords BxNx2 | None, point_labels BxN | None, box Bx4 | None)``, which
    returns the predictor's (masks, scores, low_res_logits) numpy arrays (without the batch axis
    for one prompt, as ``predict`` returns them). progress: an optional callable(done, total).
    Returns one (masks CxHxW, scores C, low_res_logits Cxhxw) per prompt, in order."""
    if isinstance(batch_size, bool) or int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    batch_size = int(batch_size)
    parts = [prompt_parts(pr, k) for k, pr in enumerate(prompts)]
    groups: dict[tuple, list[int]] = {}
    for k, (points, _, box) in enumerate(parts):
        groups.setdefault((len(points), box is not None), []).append(k)
    batches = [ks[i:i + batch_size] for ks in groups.values() for i in range(0, len(ks), batch_size)]
    results: list = [None] * len(parts)
    done = 0
    for ks in batches:
        has_points, has_box = bool(len(parts[ks[0]][0])), parts[ks[0]][2] is not None
        masks, scores, logits = predict(np.stack([parts[k][0] for k in ks]) if has_points else None,
                                        np.stack([parts[k][1] for k in ks]) if has_points else None,
                                        np.stack([parts[k][2] for k in ks]) if has_box else None)
        if masks.ndim == 3:  # a single prompt comes back without its batch axis
            masks, scores, logits = masks[None], scores[None], logits[None]
        for j, k in enumerate(ks):
            results[k] = (masks[j], scores[j], logits[j])
        done += len(ks)
        if progress is not None:
            progress(done, len(parts))
    return results
