"""Position encodings: 2-D sine tables, random Fourier features for prompts, axial RoPE."""

from __future__ import annotations

import math

import torch
from torch import nn

from sam2kit.modeling.common import WeightCache


class PositionEmbeddingSine(nn.Module):
    """The DETR sine encoding of a feature map's (y, x) grid, normalised to [0, 2*pi].

    Returns [B, num_pos_feats, H, W] for an input [B, C, H, W]. Tables depend on the size and
    device alone and are computed once each (a shared, bounded ``WeightCache``).
    """

    def __init__(self, num_pos_feats: int, temperature: float = 10000.0):
        super().__init__()
        if num_pos_feats % 2:
            raise ValueError("num_pos_feats must be even")
        self.half = num_pos_feats // 2
        self.temperature = temperature
        self.scale = 2 * math.pi
        self._consts = WeightCache(max_entries=8)

    def table(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        """[C, H, W] float32 table."""
        def make():
            eps = 1e-6
            y = torch.arange(1, h + 1, dtype=torch.float32, device=device)
            x = torch.arange(1, w + 1, dtype=torch.float32, device=device)
            y = y / (h + eps) * self.scale
            x = x / (w + eps) * self.scale
            dim_t = torch.arange(self.half, dtype=torch.float32, device=device)
            dim_t = self.temperature ** (2 * (dim_t // 2) / self.half)
            py = _interleave_sin_cos(y[:, None] / dim_t)  # [H, C/2]
            px = _interleave_sin_cos(x[:, None] / dim_t)  # [W, C/2]
            pos = torch.cat(
                (py[:, None, :].expand(h, w, -1), px[None, :, :].expand(h, w, -1)), dim=-1
            )  # [H, W, C]
            return pos.permute(2, 0, 1).contiguous()
        return self._consts.get((h, w, str(device)), (), make)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos = self.table(x.shape[-2], x.shape[-1], x.device)
        return pos[None].expand(x.shape[0], -1, -1, -1).to(x.dtype)


def _interleave_sin_cos(t: torch.Tensor) -> torch.Tensor:
    """[N, D] angles -> [N, D] with sin of even columns and cos of odd ones, interleaved."""
    return torch.stack((t[:, 0::2].sin(), t[:, 1::2].cos()), dim=2).flatten(1)


def sine_pe_1d(pos: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """1-D sine encoding of positions [N] -> [N, dim] (sines then cosines)."""
    half = dim // 2
    dim_t = torch.arange(half, dtype=torch.float32, device=pos.device)
    dim_t = temperature ** (2 * (dim_t // 2) / half)
    pe = pos.unsqueeze(-1) / dim_t
    return torch.cat([pe.sin(), pe.cos()], dim=-1)


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier features of normalised (x, y) coordinates (the prompt encoder's PE)."""

    def __init__(self, num_pos_feats: int = 64):
        super().__init__()
        # a persistent buffer: its values come from the checkpoint
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_pos_feats))

    def _encode(self, coords: torch.Tensor) -> torch.Tensor:
        coords = 2 * coords.float() - 1
        with torch.autocast(coords.device.type, enabled=False):  # phases need fp32
            coords = coords @ self.positional_encoding_gaussian_matrix.float()
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Dense encoding of an HxW grid of cell centres: [C, H, W]."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        y = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h
        x = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w
        grid = torch.stack([x[None, :].expand(h, w), y[:, None].expand(h, w)], dim=-1)
        return self._encode(grid).permute(2, 0, 1)

    def forward_with_coords(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """Encode [B, N, 2] (x, y) pixel coordinates of an image of ``image_size`` (H, W)."""
        size_xy = torch.tensor([image_size[1], image_size[0]], dtype=torch.float32,
                               device=coords.device)
        return self._encode(coords.float() / size_xy)


# ---- axial rotary position encoding (memory attention) -------------------------------------

def axial_rope_angles(dim: int, end_x: int, end_y: int, theta: float = 10000.0) -> torch.Tensor:
    """Rotation angles [end_x*end_y, dim/2] for tokens in row-major (y, x) order.

    The first dim/4 pairs rotate with x, the last dim/4 with y.
    """
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 4)[: dim // 4].float() / dim))
    t = torch.arange(end_x * end_y, dtype=torch.float32)
    t_x = t % end_x
    t_y = torch.div(t, end_x, rounding_mode="floor")
    return torch.cat([torch.outer(t_x, freqs), torch.outer(t_y, freqs)], dim=-1)

