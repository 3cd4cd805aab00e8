"""Image pre- and post-processing without torchvision, numerically the reference's:
to float in [0, 1], bilinear antialiased resize to the model's square input, ImageNet
normalisation; masks are resized back bilinearly."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def as_rgb_array(image, what: str = "image") -> np.ndarray:
    """A PIL image or an HxWx3 uint8 array as a contiguous HxWx3 uint8 array (RGB)."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        return np.array(image.convert("RGB"))
    if isinstance(image, torch.Tensor):
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


def preprocess(images: list[np.ndarray], size: int, mean: torch.Tensor, std: torch.Tensor,
               device: torch.device) -> torch.Tensor:
    """HxWx3 uint8 arrays -> [B, 3, size, size] normalised float32 on ``device``."""
    out = []
    for img in images:
        t = torch.from_numpy(img).to(device).permute(2, 0, 1).float().div(255)  # [3, H, W]
        t = F.interpolate(t[None], size=(size, size), mode="bilinear", align_corners=False,
                          antialias=True)
        out.append(t)
    batch = torch.cat(out, dim=0)
    return (batch - mean.to(device)) / std.to(device)


def resize_masks(masks: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """[B, M, h, w] logits -> [B, M, H, W] logits at the original image size."""
    return F.interpolate(masks.float(), size=tuple(hw), mode="bilinear", align_corners=False)


def frame_to_input(frame: np.ndarray, size: int, mean: torch.Tensor, std: torch.Tensor,
                   device: torch.device) -> torch.Tensor:
    """A video frame (HxWx3 uint8 RGB) -> [1, 3, size, size] normalised float32, resized as
    the reference resizes video frames: Pillow's bicubic resize to the square input."""
    from PIL import Image

    small = np.asarray(Image.fromarray(frame).resize((size, size), Image.BICUBIC))
    t = torch.from_numpy(small / 255.0).permute(2, 0, 1).float()  # [3, S, S], /255 in float64
    t = t.to(device)
    return ((t - mean.to(device)[0]) / std.to(device)[0])[None]
