"""Device selection: ``cpu`` by default, ``cuda`` and ``mps`` where present, ``auto`` picks."""

from __future__ import annotations

import ctypes
import os
import sys

import torch


def resolve_device(device: str | torch.device | None = "cpu") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or a torch.device into a
    torch.device that exists on this machine; a clear ValueError otherwise."""
    if device is None:
        device = "cpu"
    if isinstance(device, torch.device):
        name = device.type
    else:
        name = str(device).strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device if isinstance(device, torch.device) else name)
    except RuntimeError as e:
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or mps") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but this PyTorch sees no CUDA GPU; "
                         "use --device cpu (or auto)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA GPU(s)")
    if dev.type == "mps" and not _mps_available():
        raise ValueError(f"device {device!r} was asked for but MPS is not available here; use cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {device!r}; use auto, cpu, cuda or mps")
    return dev


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


_allocator_tuned = False


def _glibc_function(name: str):
    """``name`` from glibc (``mallopt``, ``malloc_trim``), or None on other C libraries."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL("libc.so.6"), name)
    except (OSError, AttributeError):  # not glibc
        return None


def tune_cpu_allocator() -> bool:
    """Let glibc keep large freed buffers for reuse instead of returning them to the system.

    By default glibc serves every allocation above 32 MB with a fresh mmap and unmaps it on
    free, so each forward pass pays page faults and zeroing for its large activations (13%
    of the tiny image encoder's time at 1024 here). Turning that off (mallopt M_MMAP_MAX=0,
    and a 2 GB trim threshold) makes the heap reuse them; the process keeps its peak memory
    instead of giving it back between frames. Process-wide, once; glibc only (a no-op
    elsewhere); ``SAM2KIT_MALLOC_TUNING=0`` turns it off. Returns whether it was applied.

    It changes the allocator of the whole process, so sam2kit never calls it on its own:
    loading a model leaves the host process alone. The command line and ``sam2kit serve``
    call it (their process is theirs); call it yourself in a process of your own.
    """
    global _allocator_tuned
    if _allocator_tuned or os.environ.get("SAM2KIT_MALLOC_TUNING", "1") == "0":
        return _allocator_tuned
    mallopt = _glibc_function("mallopt")
    if mallopt is None:
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    _allocator_tuned = bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))
    return _allocator_tuned


_malloc_trim = None  # glibc's malloc_trim once looked up; False where there is none
# frames of video propagation between two release_free_memory() calls where the command line
# and the server ask for it (a session's ``release_memory_every``; the library's default is never)
RELEASE_EVERY = 32


def release_free_memory() -> bool:
    """Hand the heap's free pages back to the system (glibc ``malloc_trim``).

    A long video frees and reallocates the same activations thousands of times; the holes
    this leaves in the heap are free but stay resident, and the process's RSS creeps up
    (tiny at 512: +140 MB over 256 frames, none of it live). A video session with
    ``release_memory_every=N`` calls this every N tracked frames and at close (the command
    line and the server use ``RELEASE_EVERY``); the next frame faults its pages in again (a few
    tens of ms). It trims the heap of the whole process, so the library never calls it unless
    asked. glibc only, a no-op elsewhere. Returns whether memory was handed back.
    """
    global _malloc_trim
    if _malloc_trim is None:
        _malloc_trim = _glibc_function("malloc_trim") or False
    return bool(_malloc_trim and _malloc_trim(0))
