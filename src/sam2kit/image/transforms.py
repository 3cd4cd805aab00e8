"""Image pre- and post-processing without torchvision, numerically the reference's:
to float in [0, 1], bilinear antialiased resize to the model's square input, ImageNet
normalisation; masks are resized back bilinearly."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sam2kit.image.arrays import as_rgb_array, resize_frame  # noqa: F401  (as_rgb_array: re-exported)


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
    small = resize_frame(frame, size)
    t = torch.from_numpy(small / 255.0).permute(2, 0, 1).float()  # [3, S, S], /255 in float64
    t = t.to(device)
    return ((t - mean.to(device)[0]) / std.to(device)[0])[None]
