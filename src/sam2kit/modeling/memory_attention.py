"""Memory attention: conditions the current frame's features on memories of past frames
(RoPE self-attention, RoPE cross-attention to memory tokens and object pointers)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .transformer import RoPEAttention


class MemoryAttentionLayer(nn.Module):
    def __init__(self, d_model: int = 256, dim_feedforward: int = 2048, kv_in_dim: int = 64,
                 rope_theta: float = 10000.0):
        super().__init__()
        self.self_attn = RoPEAttention(d_model, 1, rope_theta=rope_theta)
        self.cross_attn_image = RoPEAttention(d_model, 1, kv_in_dim=kv_in_dim, rope_theta=rope_theta,
                                              rope_k_repeat=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor,
                num_k_exclude_rope: int) -> torch.Tensor:
        t = self.norm1(tgt)
        tgt = tgt + self.self_attn(t, t, t)
        t = self.norm2(tgt)
        tgt = tgt + self.cross_attn_image(t, memory + memory_pos, memory,
                                          num_k_exclude_rope=num_k_exclude_rope)
        t = self.norm3(tgt)
        return tgt + self.linear2(F.relu(self.linear1(t)))


class MemoryAttention(nn.Module):
    def __init__(self, d_model: int = 256, num_layers: int = 4, dim_feedforward: int = 2048,
                 kv_in_dim: int = 64, rope_theta: float = 10000.0):
        super().__init__()
        self.layers = nn.ModuleList(
            MemoryAttentionLayer(d_model, dim_feedforward, kv_in_dim, rope_theta) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(self, curr: torch.Tensor, curr_pos: torch.Tensor, memory: torch.Tensor,
                memory_pos: torch.Tensor, num_obj_ptr_tokens: int = 0) -> torch.Tensor:
        """curr, curr_pos: [B, HW, C] current frame tokens; memory, memory_pos: [B, M, 64] with
        the last ``num_obj_ptr_tokens`` tokens being object pointers (no RoPE). Returns [B, HW, C]."""
        x = curr + 0.1 * curr_pos
        for layer in self.layers:
            x = layer(x, memory, memory_pos, num_obj_ptr_tokens)
        return self.norm(x)
