"""Image encoder: Hiera trunk + FPN neck with sine position encodings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sam2kit.modeling.hiera import Hiera
from sam2kit.modeling.position_encoding import PositionEmbeddingSine


class FpnNeck(nn.Module):
    """Projects each trunk stage to ``d_model`` channels; the two coarsest levels are fused
    top-down (nearest upsampling, sum), the two finest are passed through as projected."""

    def __init__(self, d_model: int, backbone_channel_list: tuple[int, ...],
                 fpn_top_down_levels: tuple[int, ...] = (2, 3)):
        super().__init__()
        self.position_encoding = PositionEmbeddingSine(d_model)
        self.convs = nn.ModuleList()
        for dim in backbone_channel_list:  # deepest first, as in the checkpoint
            seq = nn.Sequential()
            seq.add_module("conv", nn.Conv2d(dim, d_model, kernel_size=1))
            self.convs.append(seq)
        self.fpn_top_down_levels = tuple(fpn_top_down_levels)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """xs: stage outputs finest first; returns fused maps finest first."""
        n = len(self.convs) - 1
        out: list[torch.Tensor] = [None] * len(xs)  # type: ignore[list-item]
        prev = None
        for i in range(n, -1, -1):
            lateral = self.convs[n - i](xs[i])
            if i in self.fpn_top_down_levels and prev is not None:
                top_down = F.interpolate(prev.to(torch.float32), scale_factor=2.0, mode="nearest")
                prev = lateral + top_down
            else:
                prev = lateral
            out[i] = prev
        return out


class ImageEncoder(nn.Module):
    """[B, 3, S, S] normalised images -> three feature maps (strides 4, 8, 16) and their
    position encodings; the stride-32 level is computed by the trunk and dropped ("scalp")."""

    def __init__(self, trunk: Hiera, neck: FpnNeck, scalp: int = 1):
        super().__init__()
        self.trunk = trunk
        self.neck = neck
        self.scalp = scalp
        if list(trunk.channel_list) != [c.conv.in_channels for c in neck.convs]:
            raise ValueError("trunk and neck channel lists do not match")

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        feats = self.neck(self.trunk(images))
        if self.scalp:
            feats = feats[: -self.scalp]
        pos = [self.neck.position_encoding(f) for f in feats]
        return feats, pos
