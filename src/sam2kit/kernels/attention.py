"""Attention kernels: the image encoder's global attention (SDPA, or bf16 products in chunks
under CPU autocast) and the memory cross-attention (chunked products by torch.mm or oneDNN, or
torch's fused SDPA), each chosen per machine by measurement (``sam2kit.kernels.tuning``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sam2kit.kernels import tuning


# queries from which bf16 attention may run in chunks (the global-attention blocks)
BF16_CHUNKED_FROM = 1024


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """SDPA of [B, nH, N, d] tensors; under CPU bf16 autocast, long sequences may go through
    ``bf16_chunked_attention`` instead, where this machine measured it faster (tuning choice
    "bf16_global_attention")."""
    if (q.shape[-2] >= BF16_CHUNKED_FROM and q.is_cpu and torch.is_autocast_enabled("cpu")
            and not torch.is_grad_enabled() and not torch.compiler.is_compiling()):
        if tuning.choose("bf16_global_attention") == "chunked":
            return bf16_chunked_attention(q, k, v)
    return F.scaled_dot_product_attention(q, k, v)


def bf16_chunked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v in bfloat16 for [B, nH, N, d] q and k, [B, nH, M, dv] v, ``chunk`` queries at
    a time (bf16 matrix products, softmax accumulated in fp32 and rounded to bf16)."""
    with torch.autocast("cpu", enabled=False):
        q, k, v = (t.to(torch.bfloat16) for t in (q, k, v))
        out = q.new_empty(*q.shape[:-1], v.shape[-1])
        kt = k.transpose(-1, -2)
        scale = q.shape[-1] ** -0.5
        for j in range(0, q.shape[-2], chunk):
            s = torch.matmul(q[..., j:j + chunk, :] * scale, kt)  # [B, nH, chunk, M]
            out[..., j:j + chunk, :] = torch.matmul(torch.softmax(s, dim=-1), v)
    return out


def bf16_memory_path() -> str:
    """The measured bf16 memory-attention path on a CPU (tuning choice "bf16_memory_attention")."""
    if torch.is_grad_enabled() or torch.compiler.is_compiling():
        return "values-first"
    return tuning.choose("bf16_memory_attention")


def memory_attention_kernel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel: str) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v for q [B, N, d], k [B, M, d], v [B, M, dv] (one head, fp32
    inference) by ``kernel`` (a candidate of the tuning choice "memory_attention"):
    "mm-<chunk>" (``chunked_attention``), "onednn-<chunk>" (the same with oneDNN products) or
    "sdpa" (torch's fused attention)."""
    if kernel == "sdpa":
        return F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None].to(q.dtype))[:, 0]
    name, _, chunk = kernel.partition("-")
    return chunked_attention(q, k, v, int(chunk), onednn=(name == "onednn"))


def chunked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk: int = 128,
                      onednn: bool = False) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v for q [B, N, d], k [B, M, d], v [B, M, dv], ``chunk`` queries
    at a time (exp in place, normalised after the product), the products by torch.mm or, with
    ``onednn``, by oneDNN's linear kernel. Inference only (in-place and out= products)."""
    b, n, d = q.shape
    out = q.new_empty(b, n, v.shape[-1])
    buf = q.new_empty(min(chunk, n), k.shape[1])
    scale = d ** -0.5
    mm = torch.ops.mkldnn._linear_pointwise
    for i in range(b):
        if onednn:
            ki, vt = k[i].contiguous(), v[i].t().contiguous()
        else:
            kt, vi = k[i].t(), v[i].contiguous()
        for j in range(0, n, chunk):
            qs = q[i, j:j + chunk] * scale
            if onednn:
                s = mm(qs, ki, None, "none", [], "")
            else:
                s = torch.mm(qs, kt, out=buf[: qs.shape[0]])
            s.sub_(s.amax(dim=-1, keepdim=True)).exp_()
            if onednn:
                out[i, j:j + chunk] = mm(s, vt, None, "none", [], "").div_(s.sum(dim=-1, keepdim=True))
            else:
                torch.mm(s, vi, out=out[i, j:j + chunk]).div_(s.sum(dim=-1, keepdim=True))
    return out


# ---- the kernel choices (sam2kit.kernels.tuning) ----------------------------------------

def _memory_attention_inputs(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    n, m = 512, 7 * 4096 + 64  # an eighth of a 1024 frame's queries; seven memory frames, pointers
    q = torch.randn(1, n, 256, generator=g).to(dtype)
    k = torch.randn(1, m, 256, generator=g).to(dtype) * 0.1
    v = torch.randn(1, m, 64, generator=g).to(dtype)
    return q, k, v


@tuning.register("memory_attention", ("mm-128", "mm-512", "onednn-128", "sdpa"),
          "fp32 memory cross-attention (256-wide keys, 64-wide values): chunked attention with "
          "torch.mm in chunks of 128 or 512 queries, with oneDNN products, or torch's fused SDPA")
def _bench_memory_attention():
    q, k, v = _memory_attention_inputs()
    return {c: (lambda c=c: memory_attention_kernel(q, k, v, c)) for c in tuning.CHOICES["memory_attention"].candidates}


@tuning.register("bf16_memory_attention", ("values-first", "values-after", "chunked"),
          "bf16 memory cross-attention: project the values to 256 channels before SDPA, or "
          "attend over the 64-wide values and project after, with SDPA or in chunks of bf16 "
          "matrix products")
def _bench_bf16_memory_attention():
    q, k, v = _memory_attention_inputs(torch.bfloat16)
    w = torch.randn(256, 64, dtype=torch.bfloat16) * 0.1

    def first():
        return F.scaled_dot_product_attention(q[:, None], k[:, None], F.linear(v, w)[:, None])

    def after():
        return F.linear(F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None]), w)

    def chunked():
        return F.linear(bf16_chunked_attention(q[:, None], k[:, None], v[:, None]), w)
    return {"values-first": first, "values-after": after, "chunked": chunked}


@tuning.register("bf16_global_attention", ("sdpa", "chunked"),
          "bf16 global attention of the image encoder (4096 tokens at 1024): torch's fused SDPA, or "
          "bf16 matrix products in chunks of 512 queries")
def _bench_bf16_global_attention():
    g = torch.Generator().manual_seed(0)
    # as the encoder holds them: [B, N, nH, d] viewed as [B, nH, N, d]; half a frame's queries
    q, k, v = (torch.randn(1, n, 4, 96, generator=g).to(torch.bfloat16).transpose(1, 2) for n in (2048, 4096, 4096))
    return {"sdpa": lambda: F.scaled_dot_product_attention(q, k, v), "chunked": lambda: bf16_chunked_attention(q, k, v)}
