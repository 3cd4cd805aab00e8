"""Hiera: the hierarchical vision transformer trunk of the SAM 2 image encoder.

Four stages; each later stage halves the resolution (max-pooling the queries of its first
block) and doubles the width and the heads. Blocks attend inside windows, except the few
listed as global. Module names match the official checkpoint keys
(``image_encoder.trunk.blocks.{i}.attn.qkv`` ...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sam2kit.kernels.attention import attention
from sam2kit.modeling.common import MLP, WeightCache, linear


def window_partition(x: torch.Tensor, ws: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """[B, H, W, C] -> [B*nW, ws, ws, C], zero-padding H and W up to multiples of ws."""
    b, h, w, c = x.shape
    pad_h, pad_w = (ws - h % ws) % ws, (ws - w % ws) % ws
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // ws, ws, wp // ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, ws, ws, c), (hp, wp)


def window_unpartition(windows: torch.Tensor, ws: int, pad_hw: tuple[int, int],
                       hw: tuple[int, int]) -> torch.Tensor:
    """[B*nW, ws, ws, C] -> [B, H, W, C], dropping the padding."""
    hp, wp = pad_hw
    h, w = hw
    b = windows.shape[0] // (hp * wp // ws // ws)
    x = windows.reshape(b, hp // ws, wp // ws, ws, ws, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    return x[:, :h, :w, :] if (hp > h or wp > w) else x


def _pool(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Max-pool a channels-last map [B, H, W, C] by ``stride``."""
    x = F.max_pool2d(x.permute(0, 3, 1, 2), kernel_size=stride, stride=stride)
    return x.permute(0, 2, 3, 1)


class MultiScaleAttention(nn.Module):
    def __init__(self, dim: int, dim_out: int, num_heads: int, q_stride: int | None):
        super().__init__()
        self.num_heads = num_heads
        self.q_stride = q_stride
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        qkv = linear(x, self.qkv).reshape(b, h * w, 3, self.num_heads, -1)  # [B, HW, 3, nH, d]
        q, k, v = torch.unbind(qkv, 2)
        if self.q_stride:
            q = _pool(q.reshape(b, h, w, -1), self.q_stride)
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, self.num_heads, -1)
        x = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        x = x.transpose(1, 2).reshape(b, h, w, -1)  # [B, H', W', C_out]
        return linear(x, self.proj)


class MultiScaleBlock(nn.Module):
    def __init__(self, dim: int, dim_out: int, num_heads: int, q_stride: int | None,
                 window_size: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.dim, self.dim_out = dim, dim_out
        self.window_size = window_size
        self.q_stride = q_stride
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MultiScaleAttention(dim, dim_out, num_heads, q_stride)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = MLP(dim_out, int(dim_out * mlp_ratio), dim_out, 2, activation=nn.GELU)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, H, W, C]
        shortcut = x
        x = self.norm1(x)
        if self.dim != self.dim_out:
            shortcut = linear(x, self.proj)
            if self.q_stride:
                shortcut = _pool(shortcut, self.q_stride)

        ws = self.window_size
        h, w = x.shape[1:3]
        if ws > 0:
            x, pad_hw = window_partition(x, ws)
        x = self.attn(x)
        if ws > 0:
            if self.q_stride:  # the queries were pooled: windows and map shrank
                ws = ws // self.q_stride
                h, w = shortcut.shape[1:3]
                pad_hw = (h + (ws - h % ws) % ws, w + (ws - w % ws) % ws)
            x = window_unpartition(x, ws, pad_hw, (h, w))

        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=7, stride=4, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)  # [B, H/4, W/4, C]


class Hiera(nn.Module):
    """Returns the four stage outputs [B, C_i, H_i, W_i], finest first."""

    def __init__(self, embed_dim: int, num_heads: int, stages: tuple[int, ...],
                 global_att_blocks: tuple[int, ...], window_spec: tuple[int, ...],
                 window_pos_embed_bkg_spatial_size: tuple[int, int], q_pool: int = 3,
                 q_stride: int = 2):
        super().__init__()
        self.stage_ends = [sum(stages[: i + 1]) - 1 for i in range(len(stages))]
        q_pool_blocks = [end + 1 for end in self.stage_ends[:-1]][:q_pool]
        self.patch_embed = PatchEmbed(embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *window_pos_embed_bkg_spatial_size))
        self.pos_embed_window = nn.Parameter(torch.zeros(1, embed_dim, window_spec[0], window_spec[0]))
        self._consts = WeightCache(max_entries=4)

        self.blocks = nn.ModuleList()
        dim, stage = embed_dim, 0
        for i in range(sum(stages)):
            dim_out = dim
            # the first block of a stage still windows at the previous stage's size: it pools
            # its queries, so its output windows are window_spec[stage - 1] // q_stride
            window = 0 if i in global_att_blocks else window_spec[stage]
            if i - 1 in self.stage_ends:
                dim_out = dim * 2
                num_heads *= 2
                stage += 1
            self.blocks.append(MultiScaleBlock(
                dim, dim_out, num_heads,
                q_stride=q_stride if i in q_pool_blocks else None,
                window_size=window,
            ))
            dim = dim_out
        self.channel_list = [self.blocks[i].dim_out for i in self.stage_ends[::-1]]

    def _pos_embed(self, h: int, w: int) -> torch.Tensor:
        """Background embedding interpolated to (h, w) plus the tiled window embedding,
        [1, h, w, C]; computed once per size and weights (outside training)."""
        weights = (self.pos_embed, self.pos_embed_window)

        def make():
            pos = F.interpolate(self.pos_embed, size=(h, w), mode="bicubic")
            win = self.pos_embed_window
            pos = pos + win.tile([1, 1, h // win.shape[2], w // win.shape[3]])
            return pos.permute(0, 2, 3, 1).contiguous()
        return self._consts.get(("pos", h, w), weights, make)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)
        x = x + self._pos_embed(*x.shape[1:3])
        outputs = []
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i in self.stage_ends:
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs
