"""Kernel choices made by measurement on this machine, once, and cached.

The choices register themselves (``register``) in the modules whose kernels they choose between:
``kernels.linear``, ``kernels.attention`` and ``modeling.mask_decoder`` (prompts per decoder pass);
importing ``sam2kit.kernels`` registers the first two, building a model all of them. This module
imports none of them, so that kernels and the model depend on it and never the other way.

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
