"""Memory attention: conditions the current frame's features on memories of past frames
(RoPE self-attention, RoPE cross-attention to memory tokens and object pointers)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import nn

from sam2kit.modeling.common import linear
from sam2kit.modeling.transformer import RoPEAttention


class MemoryAttentionLayer(nn.Module):
    def __init__(self, d_model: int = 256, dim_feedforward: int = 2048, kv_in_dim: int = 64,
                 rope_theta: float = 10000.0):
        super().__init__()
        self.self_attn = RoPEAttention(d_model, 1, rope_theta=rope_theta)
        self.cross_attn_image = RoPEAttention(d_model, 1, kv_in_dim=kv_in_dim, rope_theta=rope_theta)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(self, tgt: torch.Tensor, bank: "MemoryBank") -> torch.Tensor:
        t = self.norm1(tgt)
        tgt = tgt + self.self_attn(t, t, t)
        t = self.norm2(tgt)
        tgt = tgt + self.cross_attn_image.attend_memory(t, self._keys(bank), bank.values)
        t = self.norm3(tgt)
        return tgt + linear(linear(t, self.linear1, "relu"), self.linear2)

    def _keys(self, bank: "MemoryBank") -> torch.Tensor:
        attn = self.cross_attn_image
        parts = [attn.memory_keys(m.features, m.pos, m.tpos, m.cache, bank.cache) for m in bank.frames]
        if bank.pointers is not None:
            parts.append(attn.pointer_keys(*bank.pointers))
        return torch.cat(parts, dim=1)


class MemoryAttention(nn.Module):
    def __init__(self, d_model: int = 256, num_layers: int = 4, dim_feedforward: int = 2048,
                 kv_in_dim: int = 64, rope_theta: float = 10000.0):
        super().__init__()
        self.layers = nn.ModuleList(
            MemoryAttentionLayer(d_model, dim_feedforward, kv_in_dim, rope_theta) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(self, curr: torch.Tensor, curr_pos: torch.Tensor, bank: "MemoryBank") -> torch.Tensor:
        """curr, curr_pos: [B, HW, C] current frame tokens and their position encoding;
        bank: the memories and object pointers they attend to. Returns [B, HW, C]."""
        x = curr + 0.1 * curr_pos
        for layer in self.layers:
            x = layer(x, bank)
        return self.norm(x)


@dataclass
class MemoryTokens:
    """One memory frame as tokens: features [B, HW, 64] (the values, and the keys' input),
    their spatial position encoding pos [1 or B, HW, 64], the temporal encoding of its slot
    tpos [64], and ``cache``: a dict that belongs to these features (None: no caching)."""

    features: torch.Tensor
    pos: torch.Tensor
    tpos: torch.Tensor
    cache: dict | None = None


@dataclass
class MemoryBank:
    """What the current frame attends to: memory frames (rotated keys) and object-pointer
    tokens with their position encodings ([B, P, 64] each; not rotated), or None.
    ``cache``: a dict of the caller's (one video session's) where the position-and-slot terms
    of the keys are kept between frames; None keeps nothing."""

    frames: list[MemoryTokens]
    pointers: tuple[torch.Tensor, torch.Tensor] | None
    cache: dict | None = None

    @cached_property
    def values(self) -> torch.Tensor:
        """[B, M, 64]: every memory token, then the pointer tokens."""
        vals = [m.features for m in self.frames]
        if self.pointers is not None:
            vals.append(self.pointers[0])
        return torch.cat(vals, dim=1)
