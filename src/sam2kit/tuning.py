"""Kernel choices made by measurement on this machine, once, and cached.

Some ways of computing the same thing are faster on one CPU and slower on another: oneDNN's
linear kernels against torch's default (MKL) ones, our chunked memory attention against
torch's fused one, prompts through the mask decoder in passes of one, two or more, the bf16
attention path. Each such choice (``CHOICES``) lists its candidates, the first being the
default, and a small benchmark on shapes of the tiny model at 1024 (a fraction of a second
per candidate).

``choose(name)`` answers from this process's memory, else from the cache file
(``~/.cache/sam2kit/tuning.json``, or ``SAM2KIT_TUNING_FILE``), whose entries are keyed by
CPU model, torch version and thread count; else it measures every candidate, keeps the
fastest and writes it with the timings. Measuring happens under a file lock (a process that
waits for it then reads what the other one measured) and the file is replaced atomically.

Candidates compute the same function, but not always with the same float rounding: a process
that measures differently from another could give outputs that differ in the last bits. All
processes of one machine read the same file, so they agree. ``SAM2KIT_TUNING``: ``on`` (the
default), ``off`` (no measuring, no file: every choice is its default; what the test suite
uses to compare processes bit for bit), ``remeasure`` (measure again in this process and
rewrite the entry).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch


@dataclass(frozen=True)
class Choice:
    """A kernel choice: its candidates (the first is the default) and ``bench()``, which builds
    representative inputs and returns {candidate: function to time} for those available here."""

    name: str
    candidates: tuple[str, ...]
    bench: Callable[[], dict[str, Callable[[], object]]]
    doc: str

    @property
    def default(self) -> str:
        return self.candidates[0]


CHOICES: dict[str, Choice] = {}
_decided: dict[str, dict] = {}  # name -> {"choice", "source", "timings"} for this process
_lock = threading.RLock()


def register(name: str, candidates: tuple[str, ...], doc: str):
    """Decorator: register ``bench`` as the benchmark of the choice ``name``."""
    def wrap(bench):
        CHOICES[name] = Choice(name, candidates, bench, doc)
        return bench
    return wrap


def mode() -> str:
    value = os.environ.get("SAM2KIT_TUNING", "on").strip().lower()
    if value not in ("on", "off", "remeasure"):
        raise ValueError(f"SAM2KIT_TUNING must be on, off or remeasure, got {value!r}")
    return value


def cache_home() -> Path:
    """sam2kit's folder in the user's cache (``$XDG_CACHE_HOME/sam2kit``, else ``~/.cache/sam2kit``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sam2kit"


def cache_file() -> Path:
    if os.environ.get("SAM2KIT_TUNING_FILE"):
        return Path(os.environ["SAM2KIT_TUNING_FILE"])
    return cache_home() / "tuning.json"


def machine_key() -> str:
    """What the measurements hold for: CPU model, torch version, thread count."""
    return f"{cpu_model()} | torch {torch.__version__} | {torch.get_num_threads()} threads"


def cpu_model() -> str:
    """The CPU's model name with its family/model/stepping numbers (Linux), else platform's."""
    fields = {}
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor is enough
                k, _, v = line.partition(":")
                fields[k.strip()] = v.strip()
    if "model name" in fields:
        ids = "/".join(fields.get(k, "?") for k in ("cpu family", "model", "stepping"))
        return f"{fields['model name']} ({ids})"
    return platform.processor() or platform.machine() or "unknown CPU"


def choose(name: str) -> str:
    """The candidate to use for the choice ``name`` on this machine (see the module doc)."""
    hit = _decided.get(name)
    if hit is not None:
        return hit["choice"]
    with _lock:
        if name not in _decided:
            _decided[name] = _decide(CHOICES[name])
        return _decided[name]["choice"]


def decisions() -> dict[str, dict]:
    """Every choice made so far in this process: {name: {"choice", "source" (default, cache or
    measured), "timings" (candidate -> seconds, as measured on this machine)}}."""
    with _lock:
        return {k: dict(v) for k, v in _decided.items()}


def decide_all() -> dict[str, dict]:
    """Make every registered choice now (measuring those not cached); returns ``decisions()``."""
    for name in CHOICES:
        choose(name)
    return decisions()


@contextlib.contextmanager
def pinned(**choices: str):
    """Within the block, use the given candidates (``pinned(linear="onednn")``) in this process,
    whatever was measured; for tests and comparisons. Not thread-safe against other choosers."""
    for name, cand in choices.items():
        if cand not in CHOICES[name].candidates:
            raise ValueError(f"{cand!r} is not a candidate of {name!r}: {', '.join(CHOICES[name].candidates)}")
    with _lock:
        saved = {name: _decided.get(name) for name in choices}
        for name, cand in choices.items():
            _decided[name] = {"choice": cand, "source": "pinned", "timings": {}}
    try:
        yield
    finally:
        with _lock:
            for name, entry in saved.items():
                if entry is None:
                    _decided.pop(name, None)
                else:
                    _decided[name] = entry


def reset() -> None:
    """Forget this process's choices (the next ``choose`` reads the environment and file again)."""
    with _lock:
        _decided.clear()


def _decide(choice: Choice) -> dict:
    how = mode()
    if how == "off":
        return {"choice": choice.default, "source": "default", "timings": {}}
    path, key = cache_file(), machine_key()
    if how == "on":
        entry = _read(path).get(key, {}).get(choice.name)
        if _valid(choice, entry):
            return {**entry, "source": "cache"}
    with _file_lock(path):
        if how == "on":  # another process may have measured while this one waited
            entry = _read(path).get(key, {}).get(choice.name)
            if _valid(choice, entry):
                return {**entry, "source": "cache"}
        timings = measure(choice)
        best = min(timings, key=timings.get) if timings else choice.default
        entry = {"choice": best, "timings": timings, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        data = _read(path)
        data.setdefault(key, {})[choice.name] = entry
        _write(path, data)
    return {**entry, "source": "measured"}


def measure(choice: Choice, repeats: int = 2) -> dict[str, float]:
    """Seconds per call of each available candidate (best of ``repeats`` after a warm-up), in
    fp32 or as the candidate sets it, without gradients."""
    timings = {}
    with torch.inference_mode(), torch.autocast("cpu", enabled=False):
        for cand, fn in choice.bench().items():
            try:
                fn()
            except (RuntimeError, NotImplementedError):  # not available in this build / CPU
                continue
            best = float("inf")
            for _ in range(repeats):
                t = time.perf_counter()
                fn()
                best = min(best, time.perf_counter() - t)
            timings[cand] = best
    return timings


def _valid(choice: Choice, entry) -> bool:
    return isinstance(entry, dict) and entry.get("choice") in choice.candidates


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Path, data: dict) -> None:
    """Replace ``path`` atomically (a reader sees the old file or the new one, never half)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tuning-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ---- the choices --------------------------------------------------------------------------

@register("linear", ("aten", "onednn"),
          "fp32 linear layers of the image encoder, memory attention and MLPs: torch's default "
          "kernel, or oneDNN's with the activation fused (torch.ops.mkldnn._linear_pointwise)")
def _bench_linear():
    from .modeling.common import linear_act

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


def _memory_attention_inputs(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    n, m = 512, 7 * 4096 + 64  # an eighth of a 1024 frame's queries; seven memory frames, pointers
    q = torch.randn(1, n, 256, generator=g).to(dtype)
    k = torch.randn(1, m, 256, generator=g).to(dtype) * 0.1
    v = torch.randn(1, m, 64, generator=g).to(dtype)
    return q, k, v


@register("memory_attention", ("mm-128", "mm-512", "onednn-128", "sdpa"),
          "fp32 memory cross-attention (256-wide keys, 64-wide values): chunked attention with "
          "torch.mm in chunks of 128 or 512 queries, with oneDNN products, or torch's fused SDPA")
def _bench_memory_attention():
    from .modeling.transformer import memory_attention_kernel

    q, k, v = _memory_attention_inputs()
    return {c: (lambda c=c: memory_attention_kernel(q, k, v, c)) for c in CHOICES["memory_attention"].candidates}


@register("bf16_memory_attention", ("values-first", "values-after", "chunked"),
          "bf16 memory cross-attention: project the values to 256 channels before SDPA, or "
          "attend over the 64-wide values and project after, with SDPA or in chunks of bf16 "
          "matrix products")
def _bench_bf16_memory_attention():
    import torch.nn.functional as F

    q, k, v = _memory_attention_inputs(torch.bfloat16)
    w = torch.randn(256, 64, dtype=torch.bfloat16) * 0.1

    def first():
        return F.scaled_dot_product_attention(q[:, None], k[:, None], F.linear(v, w)[:, None])

    def after():
        return F.linear(F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None]), w)

    def chunked():
        from .modeling.hiera import bf16_chunked_attention

        return F.linear(bf16_chunked_attention(q[:, None], k[:, None], v[:, None]), w)
    return {"values-first": first, "values-after": after, "chunked": chunked}


@register("bf16_global_attention", ("sdpa", "chunked"),
          "bf16 global attention of the image encoder (4096 tokens at 1024): torch's fused SDPA, or "
          "bf16 matrix products in chunks of 512 queries")
def _bench_bf16_global_attention():
    import torch.nn.functional as F

    from .modeling.hiera import bf16_chunked_attention

    g = torch.Generator().manual_seed(0)
    # as the encoder holds them: [B, N, nH, d] viewed as [B, nH, N, d]; half a frame's queries
    q, k, v = (torch.randn(1, n, 4, 96, generator=g).to(torch.bfloat16).transpose(1, 2) for n in (2048, 4096, 4096))
    return {"sdpa": lambda: F.scaled_dot_product_attention(q, k, v), "chunked": lambda: bf16_chunked_attention(q, k, v)}


@register("prompts_per_pass", ("2", "1", "4"),
          "prompts decoded per pass of the mask decoder on a CPU (each carries its own copy of the "
          "image tokens through the two-way transformer)")
def _bench_prompts_per_pass():
    from .modeling.mask_decoder import MaskDecoder

    torch.manual_seed(0)
    dec = MaskDecoder(256)
    image, pe = torch.randn(1, 256, 64, 64), torch.randn(1, 256, 64, 64)
    sparse, dense = torch.randn(4, 2, 256), torch.randn(1, 256, 64, 64).expand(4, -1, -1, -1)
    high = [torch.randn(1, 32, 256, 256), torch.randn(1, 64, 128, 128)]

    def run(n):
        return lambda: dec(image, pe, sparse, dense, True, True, high, per_pass=int(n))
    return {c: run(c) for c in CHOICES["prompts_per_pass"].candidates}
