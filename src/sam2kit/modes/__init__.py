"""Opt-in faster modes: bfloat16 compute, torch.compile, int8 dynamic quantisation.

The default is none of them: fp32, eager, outputs within float tolerance of the reference.
Each mode trades accuracy or start-up time for speed (docs/speed.md; accuracy figures from
``benchmarks/accuracy.py``). Lower resolution (``image_size=512``) is the fourth lever; it is
a model configuration, not a mode here.

- ``precision="bf16"``: matrix products, convolutions and attention run in bfloat16 under
  autocast (layer norms, softmax and the prompt position encodings stay fp32); every model
  output is returned as fp32, so predictors and stored memories are unchanged. Offered only on
  CPUs whose flags name native bf16 instructions (``amx_bf16`` or ``avx512_bf16``); refused
  elsewhere, where it would be emulated and slower than fp32.
- ``backend="openvino"``: the image encoder runs on OpenVINO (``sam2kit.modes.openvino``),
  in the given precision; with bf16 it is the fastest encoder on CPUs with native bf16.
- ``compile=True``: the image encoder is compiled with ``torch.compile`` (Inductor; needs a C++
  compiler on the CPU). The first image takes a minute or more; later ones are faster.
- ``quantize="int8"``: linear layers get int8 weights (one scale per output channel) with
  activations quantised on the fly
  (``torch.ao.quantization.quantize_dynamic``), except the memory-attention query/key
  projections, whose weights RoPE attention reads directly.
"""

from __future__ import annotations

import os
import shutil
import warnings

import torch
from torch import nn

PRECISIONS = ("fp32", "bf16")
QUANTIZE = (None, "int8")
BACKENDS = ("torch", "openvino")


def cpu_flags() -> frozenset[str]:
    """The instruction-set flags of this machine's CPU (Linux ``/proc/cpuinfo``); empty where
    they cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def native_bf16_cpu() -> str | None:
    """The flag that gives this CPU native bf16 matrix products (``amx_bf16``, else
    ``avx512_bf16``), or None. ``torch.backends.mkldnn.is_bf16_supported()`` is not asked: it
    is also true on AVX-512 CPUs where oneDNN emulates bf16, which is slower than fp32."""
    flags = cpu_flags()
    return next((f for f in NATIVE_BF16_FLAGS if f in flags), None)


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 compute is worth it on ``device``: a CPU with native bf16 instructions
    (``native_bf16_cpu``), a CUDA GPU with bf16 support."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return native_bf16_cpu() is not None
    return False


def check_modes(precision: str = "fp32", compile: bool = False, quantize: str | None = None,
                backend: str = "torch") -> None:
    """Raise ValueError for a value that is not a mode, or modes that do not go together."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize must be None or 'int8', got {quantize!r}")
    if not isinstance(compile, bool):
        raise ValueError(f"compile must be True or False, got {compile!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "openvino" and (compile or quantize):
        raise ValueError("backend='openvino' runs the image encoder on OpenVINO: not together with "
                         "compile or quantize; choose one")
    if backend == "openvino":
        from sam2kit.modes.openvino import import_openvino

        import_openvino()  # before any slow work: an ImportError that says how to install it


def apply_modes(model, precision: str = "fp32", compile: bool = False, quantize: str | None = None,
                backend: str = "torch"):
    """Switch ``model`` (a SAM2Model, weights loaded) to the given modes, in place; returns it."""
    check_modes(precision, compile, quantize, backend)
    if precision == "bf16":
        if not bf16_supported(model.device):
            raise ValueError(f"bf16 is not supported on this {model.device.type.upper()}: "
                             f"{_bf16_missing(model.device)}; use precision='fp32'")
        if quantize:
            raise ValueError("choose one of precision='bf16' and quantize='int8', not both")
    model.precision = precision
    if backend == "openvino":
        from sam2kit.modes.openvino import OpenVINOEncoder

        model.encoder_backend = OpenVINOEncoder(model, precision)
    if quantize == "int8":
        if model.device.type != "cpu":
            raise ValueError("int8 dynamic quantisation runs on the CPU only; use device='cpu'")
        _quantize_int8(model)
    if compile:
        if model.device.type == "cpu" and shutil.which(_cpp_compiler()) is None:
            raise ValueError(f"compile=True needs a C++ compiler on the CPU (torch.compile looks for "
                             f"{_cpp_compiler()!r}): install g++ or set CXX, or leave compile off")
        model.image_encoder.compile(dynamic=False)
    return model


def _bf16_missing(device: torch.device) -> str:
    """Why bf16 is refused on ``device``, in words."""
    if device.type == "cpu":
        return ("its flags (/proc/cpuinfo) have neither amx_bf16 nor avx512_bf16, so bf16 would be "
                "emulated, slower than fp32")
    if device.type == "cuda":
        return "this GPU has no bf16 support"
    return f"bf16 is offered on CPUs with native bf16 and CUDA GPUs only, not {device.type}"


def _cpp_compiler() -> str:
    """The compiler Inductor would call for CPU code."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        return get_cpp_compiler()
    except Exception:  # an internal API: fall back to its usual default
        return os.environ.get("CXX", "g++")


def _quantize_int8(model: nn.Module) -> None:
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    from sam2kit.modeling.transformer import RoPEAttention

    skip = set()
    for name, mod in model.named_modules():
        if isinstance(mod, RoPEAttention):  # reads q_proj / k_proj weights itself
            skip.update({f"{name}.q_proj", f"{name}.k_proj"})
    targets = {name for name, mod in model.named_modules() if isinstance(mod, nn.Linear) and name not in skip}
    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
        warnings.simplefilter("ignore")
        # one weight scale per output channel: SAM 2's projections have rows of very different
        # ranges, and a single scale per matrix costs them most of their 8 bits
        quantize_dynamic(model, {name: per_channel_dynamic_qconfig for name in targets},
                         dtype=torch.qint8, inplace=True)
