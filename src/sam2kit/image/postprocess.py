"""Mask clean-up on any device, without a compiled extension: connected components,
filling small holes and removing small islands (the reference does this with a CUDA kernel)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def connected_components(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """8-connected components of binary masks [N, 1, H, W].

    Returns (labels, areas), both int32 [N, 1, H, W]: labels are 0 on background and a
    positive id per component; areas give, at each foreground pixel, the pixel count of its
    component (0 on background).
    """
    mask = mask.bool()
    n, _, h, w = mask.shape
    if mask.numel() == 0:
        z = torch.zeros_like(mask, dtype=torch.int32)
        return z, z
    ids = torch.arange(1, h * w + 1, device=mask.device, dtype=torch.float32).view(1, 1, h, w)
    labels = torch.where(mask, ids.expand(n, -1, -1, -1), torch.zeros((), device=mask.device))
    # propagate the largest id through each component; a float max-pool is exact for ids < 2**24
    while True:
        grown = F.max_pool2d(labels, kernel_size=3, stride=1, padding=1)
        grown = torch.where(mask, grown, labels)
        # pointer jumping: a pixel may also take the id its current id's seed pixel now holds
        flat = grown.flatten(1)
        idx = (flat.long() - 1).clamp(min=0)
        jumped = torch.where(flat > 0, torch.gather(flat, 1, idx), flat)
        grown = torch.maximum(flat, jumped).view_as(labels)
        if torch.equal(grown, labels):
            break
        labels = grown
    lab = labels.long().flatten(1)  # [N, HW]
    counts = torch.zeros(n, h * w + 1, dtype=torch.long, device=mask.device)
    counts.scatter_add_(1, lab, torch.ones_like(lab))
    counts[:, 0] = 0
    areas = torch.gather(counts, 1, lab).view(n, 1, h, w)
    return labels.to(torch.int32), areas.to(torch.int32)


def fill_holes_and_remove_sprinkles(logits: torch.Tensor, threshold: float = 0.0,
                                    max_hole_area: float = 0.0,
                                    max_sprinkle_area: float = 0.0) -> torch.Tensor:
    """On mask logits [N, M, H, W]: raise background regions of area <= max_hole_area above
    the threshold (fill holes) and lower foreground regions of area <= max_sprinkle_area
    below it (remove islands), as the reference's post-processing does."""
    if max_hole_area <= 0 and max_sprinkle_area <= 0:
        return logits
    out = logits
    flat = logits.flatten(0, 1).unsqueeze(1)
    if max_hole_area > 0:
        labels, areas = connected_components(flat <= threshold)
        is_hole = ((labels > 0) & (areas <= max_hole_area)).reshape_as(logits)
        out = torch.where(is_hole, threshold + 10.0, out)
    if max_sprinkle_area > 0:
        labels, areas = connected_components(flat > threshold)
        is_sprinkle = ((labels > 0) & (areas <= max_sprinkle_area)).reshape_as(logits)
        out = torch.where(is_sprinkle, threshold - 10.0, out)
    return out


def fill_small_holes(logits: torch.Tensor, max_area: int) -> torch.Tensor:
    """Fill background holes of up to ``max_area`` pixels in mask logits [N, 1, H, W]: they get
    the logit 0.1 (just above the threshold), as the reference's video post-processing does."""
    labels, areas = connected_components(logits <= 0)
    return torch.where((labels > 0) & (areas <= max_area), 0.1, logits)
