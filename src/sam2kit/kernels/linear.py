"""Fused linear kernels: ``act(x @ W.T + b)`` by torch's default kernel or by oneDNN's with the
activation fused, chosen per machine by measurement (tuning choice "linear")."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sam2kit.kernels import tuning


def linear_act(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, act: str | None,
               kernel: str = "aten") -> torch.Tensor:
    """``act(x @ weight.T + bias)`` with ``act`` None, "relu" or "gelu" (exact erf), by
    ``kernel``: "aten" (F.linear then the activation) or "onednn" (one oneDNN call with the
    activation fused: fp32 CPU tensors, no gradients)."""
    if kernel == "onednn":
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, act or "none", [],
                                                  "none" if act == "gelu" else "")
    return _activation(F.linear(x, weight, bias), act)


def _activation(y: torch.Tensor, act: str | None) -> torch.Tensor:
    if act == "relu":
        return F.relu(y)
    return F.gelu(y) if act == "gelu" else y


def _fast_path(x: torch.Tensor) -> bool:
    """Whether ``x`` may take a measured kernel choice (``sam2kit.kernels.tuning``): fp32 CPU
    inference outside autocast and compilation."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()
            and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling())


# ---- the kernel choice (sam2kit.kernels.tuning) ----------------------------------------

@tuning.register("linear", ("aten", "onednn"),
          "fp32 linear layers of the image encoder, memory attention and MLPs: torch's default "
          "kernel, or oneDNN's with the activation fused (torch.ops.mkldnn._linear_pointwise)")
def _bench_linear():
    g = torch.Generator().manual_seed(0)
    shapes = [(16384, 96, 384, "gelu"), (4096, 384, 96, None), (2048, 256, 2048, "relu"), (2048, 2048, 256, None)]
    cases = [(torch.randn(m, k, generator=g), torch.randn(n, k, generator=g) * k ** -0.5, torch.zeros(n), act)
             for m, k, n, act in shapes]

    def run(kernel):
        return lambda: [linear_act(x, w, b, act, kernel) for x, w, b, act in cases]
    out = {"aten": run("aten")}
    if torch.backends.mkldnn.is_available():
        out["onednn"] = run("onednn")
    return out
