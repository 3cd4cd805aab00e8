"""Attention layers: the mask decoder's two-way transformer and RoPE attention for memory."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sam2kit.kernels import tuning
from sam2kit.kernels.attention import (bf16_chunked_attention, bf16_memory_path, chunked_attention,
                                       memory_attention_kernel)
from sam2kit.kernels.linear import _fast_path
from sam2kit.modeling.common import MLP, WeightCache, linear, linear_weights, weights_key
from sam2kit.modeling.position_encoding import axial_rope_angles


class Attention(nn.Module):
    """Multi-head attention whose internal width may be ``embedding_dim // downsample_rate``
    and whose keys/values may come in with another width (``kv_in_dim``)."""

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1,
                 kv_in_dim: int | None = None):
        super().__init__()
        kv_in_dim = kv_in_dim or embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ValueError("num_heads must divide the internal dimension")
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(kv_in_dim, self.internal_dim)
        self.v_proj = nn.Linear(kv_in_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)  # [B, nH, N, d]

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        b, h, n, d = x.shape
        return x.transpose(1, 2).reshape(b, n, h * d)  # [B, N, C]

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        return self.out_proj(self._merge(F.scaled_dot_product_attention(q, k, v)))


class RoPEAttention(Attention):
    """Attention with 2-D axial rotary encodings on a square token grid (memory attention).

    Queries are one HxW grid. ``forward`` is self-attention (keys on the same grid);
    ``attend_memory`` attends to memories: memory frames on such grids (keys from
    ``memory_keys``) followed by object-pointer tokens that are not rotated (``pointer_keys``).

    Inside, the query and key channels of each head are reordered, evens then odds, so that a
    rotation acts on two contiguous halves; queries and keys are reordered alike, so every
    attention score is the same. What derives from the weights alone (the reordered
    projections, RoPE tables) is computed once and shared (``WeightCache``, keyed by the
    weights, so that loading or moving weights recomputes it). What derives from a caller's
    memories (their keys, their position-and-slot terms) is kept in dicts the caller owns and
    passes in, and dies with it.
    """

    def __init__(self, *args, rope_theta: float = 10000.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.rope_theta = rope_theta
        self._consts = WeightCache(max_entries=8)

    def _qk_weights(self) -> tuple[torch.Tensor, ...]:
        """q/k projections with each head's channels in half layout (evens, then odds)."""
        weights = (self.q_proj.weight, self.q_proj.bias, self.k_proj.weight, self.k_proj.bias)

        def make():
            d = self.internal_dim // self.num_heads
            half = torch.cat([torch.arange(0, d, 2), torch.arange(1, d, 2)])
            perm = (torch.arange(self.num_heads)[:, None] * d + half).flatten().to(weights[0].device)
            return tuple(t[perm] for t in weights)
        return self._consts.get(("qk",), weights, make)

    def rope_tables(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin [n, d/2] of the rotation angles of an n-token square grid."""
        def make():
            side = int(round(n ** 0.5))
            if side * side != n:
                raise ValueError(f"RoPE attention needs a square token grid, got {n} tokens")
            ang = axial_rope_angles(self.internal_dim // self.num_heads, side, side, self.rope_theta)
            return ang.cos().to(device), ang.sin().to(device)
        return self._consts.get(("rope", n, str(device)), (), make)

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotate [B, nH, N, d] (half layout) by the angles of its N positions."""
        a, b = x.chunk(2, dim=-1)
        return torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1)

    def _queries(self, q: torch.Tensor) -> torch.Tensor:
        wq, bq, _, _ = self._qk_weights()
        q = self._heads(linear_weights(q, wq, bq))
        return self._rotate(q, *self.rope_tables(q.shape[-2], q.device))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Self-attention: q, k, v [B, N, C] on the same N-token grid."""
        if k.shape[-2] != q.shape[-2]:
            raise ValueError("RoPEAttention.forward is self-attention; memories go through attend_memory")
        _, _, wk, bk = self._qk_weights()
        q = self._queries(q)
        k, v = self._heads(linear_weights(k, wk, bk)), self._heads(linear(v, self.v_proj))
        k = self._rotate(k, *self.rope_tables(k.shape[-2], k.device))
        return linear(self._merge(F.scaled_dot_product_attention(q, k, v)), self.out_proj)

    # ---- memory cross-attention: keys prepared per memory, values projected after ----------

    def memory_keys(self, features: torch.Tensor, pos: torch.Tensor, tpos: torch.Tensor,
                    cache: dict | None = None, slot_cache: dict | None = None) -> torch.Tensor:
        """Rotated keys [B, N, C] (half layout) of one memory frame: features [B, N, kv_dim],
        its position encoding pos [1 or B, N, kv_dim], the slot's temporal encoding tpos
        [kv_dim]. The key is linear in their sum, so it splits into the features' part, kept
        in ``cache`` (a dict that belongs to this memory frame and is emptied when its
        features change), so that a memory is projected once however many frames read it;
        and the position-and-slot part, kept in ``slot_cache`` (a dict of the caller's: one
        video's memories share one position encoding). Without the dicts nothing is kept."""
        _, _, wk, bk = self._qk_weights()
        cos, sin = self.rope_tables(features.shape[1], features.device)

        def rotate(x):
            return self._merge(self._rotate(self._heads(x), cos, sin))

        part = _kept(cache, (id(self), "features"), (wk,), lambda: rotate(linear_weights(features, wk, None)))
        slot = _kept(slot_cache, (id(self), "slot"), (wk, bk, pos, tpos),
                     lambda: rotate(linear_weights(pos + tpos, wk, bk)))
        return part + slot

    def pointer_keys(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Keys [B, P, C] (half layout, not rotated) of object-pointer tokens [B, P, kv_dim]."""
        _, _, wk, bk = self._qk_weights()
        return linear_weights(tokens + pos, wk, bk)

    def attend_memory(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """x [B, N, C] attends to keys [B, M, C] (``memory_keys``/``pointer_keys``) with
        values given unprojected [B, M, kv_dim]. With one head, the value projection is
        applied after the attention (softmax rows sum to one, so P(VW + b) = (PV)W + b): the
        weighted sum then runs over kv_dim channels instead of C. fp32 CPU inference runs the
        kernel this machine measured fastest (``memory_attention_kernel``, tuning choice
        "memory_attention"); bf16 on a CPU projects the values before or after as measured
        (choice "bf16_memory_attention")."""
        q = self._queries(x)
        k = self._heads(keys)
        if self.num_heads == 1:
            if _fast_path(q):
                out = memory_attention_kernel(q[:, 0], k[:, 0], values, tuning.choose("memory_attention"))
                return linear(linear(out, self.v_proj), self.out_proj)
            if (q.dtype == torch.float32 and not torch.is_grad_enabled()
                    and not torch.is_autocast_enabled(q.device.type)):  # other devices: as before
                return self.out_proj(self.v_proj(chunked_attention(q[:, 0], k[:, 0], values)))
            if q.is_cpu:  # fp32 with gradients: values first, as below
                path = bf16_memory_path() if torch.is_autocast_enabled("cpu") else "values-first"
            else:
                path = "values-after"
            if path == "chunked":
                out = bf16_chunked_attention(q, k, values.unsqueeze(1))
                return self.out_proj(self.v_proj(out.squeeze(1)))
            if path == "values-after":
                out = F.scaled_dot_product_attention(q, k, values.unsqueeze(1).to(q.dtype))
                return self.out_proj(self.v_proj(out.squeeze(1)))
        out = F.scaled_dot_product_attention(q, k, self._heads(self.v_proj(values)))
        return self.out_proj(self._merge(out))


def _kept(cache: dict | None, name: tuple, tensors: tuple[torch.Tensor, ...], make):
    """``make()``, kept in the caller's ``cache`` under ``name`` and the identity of
    ``tensors`` (held with it); computed every time without a cache or with gradients on."""
    if cache is None or torch.is_grad_enabled():
        return make()
    key = (name, weights_key(*tensors))
    hit = cache.get(key)
    if hit is None:
        hit = cache[key] = (tensors, make())
    return hit[1]


class TwoWayAttentionBlock(nn.Module):
    """Self-attention of tokens, token->image and image->token cross-attention, token MLP."""

    def __init__(self, embedding_dim: int, num_heads: int, mlp_dim: int,
                 attention_downsample_rate: int, skip_first_layer_pe: bool):
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLP(embedding_dim, mlp_dim, embedding_dim, 2, activation=nn.ReLU)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries, keys, query_pe, key_pe):
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        k = keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(queries + query_pe, k, keys))
        queries = self.norm3(queries + self.mlp(queries))
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, queries + query_pe, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    def __init__(self, depth: int = 2, embedding_dim: int = 256, num_heads: int = 8,
                 mlp_dim: int = 2048, attention_downsample_rate: int = 2):
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(embedding_dim, num_heads, mlp_dim, attention_downsample_rate,
                                 skip_first_layer_pe=(i == 0))
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(self, image_embedding: torch.Tensor, image_pe: torch.Tensor,
                point_embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image_embedding, image_pe: [B, C, h, w]; point_embedding: [B, N, C].
        Returns the tokens [B, N, C] and the image tokens [B, h*w, C]."""
        keys = image_embedding.flatten(2).permute(0, 2, 1)  # [B, hw, C]
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe)
        attn = self.final_attn_token_to_image(queries + point_embedding, keys + key_pe, keys)
        return self.norm_final_attn(queries + attn), keys
