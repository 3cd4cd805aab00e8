"""The spill folder of a video session: results far from the frame being tracked, on disk.

One folder per session, made when the first result is spilled, named ``sam2kit-spill-*``
inside the folder the caller chose (default: the system's temporary folder). The session holds
an exclusive lock (``flock``) on a file in it for as long as it lives; the operating system
drops the lock when the process dies, however it dies. Opening a spill folder therefore first
removes the folders beside it whose lock can be taken: those of dead processes (a crash, a
SIGKILL). The folder is removed when the session closes or is garbage-collected
(``weakref.finalize``). An optional disk budget bounds it: going past it raises
``SpillLimitError`` before anything is written.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import weakref
from pathlib import Path

import torch

try:
    import fcntl
except ImportError:  # Windows: no stale-folder detection; folders still go at close
    fcntl = None

PREFIX = "sam2kit-spill-"
LOCK_NAME = ".owner.lock"
# a folder without its lock file is stale only when older than this (it may be being made)
UNLOCKED_GRACE_S = 60.0


class SpillLimitError(RuntimeError):
    """A video session's spill folder would grow past its disk budget."""


def _lock(path: Path, blocking: bool = False):
    """An open file descriptor holding an exclusive lock on ``path``, or None if another open
    file (another live process, or another session here) holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except OSError:
        os.close(fd)
        return None
    return fd


def remove_stale_spill_folders(parent: str | Path | None = None) -> list[Path]:
    """Remove the spill folders in ``parent`` (default: the temporary folder) whose owner is
    gone. Returns the folders removed. A no-op where file locks are not available."""
    if fcntl is None:
        return []
    parent = Path(parent or tempfile.gettempdir())
    removed = []
    try:
        candidates = [p for p in parent.iterdir() if p.name.startswith(PREFIX) and p.is_dir()]
    except OSError:
        return []
    for folder in candidates:
        lock = folder / LOCK_NAME
        try:
            if not lock.exists():
                if time.time() - folder.stat().st_mtime < UNLOCKED_GRACE_S:
                    continue
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
                continue
            fd = _lock(lock)
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if fd is None:  # its session is alive
            continue
        try:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        finally:
            os.close(fd)
    return removed


def _release(root: Path, fd: int | None) -> None:
    shutil.rmtree(root, ignore_errors=True)
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


class SpillStore:
    """Files of one session's spilled results: ``save(name, tensors)`` -> path, ``load(path)``,
    ``remove(path)``; ``nbytes`` on disk now; ``close()`` removes the folder.

    parent: where the folder goes (None: the temporary folder); limit_bytes: the disk budget
    (None: no limit)."""

    def __init__(self, parent: str | Path | None = None, limit_bytes: int | None = None):
        if limit_bytes is not None and limit_bytes < 0:
            raise ValueError(f"spill_limit_bytes must be at least 0 (or None for no limit), got {limit_bytes}")
        self.parent = Path(parent) if parent is not None else None
        self.limit_bytes = limit_bytes
        self.root: Path | None = None
        self.nbytes = 0
        self._sizes: dict[Path, int] = {}
        self._finalizer = None

    def _open(self) -> Path:
        parent = self.parent or Path(tempfile.gettempdir())
        try:
            parent.mkdir(parents=True, exist_ok=True)
            remove_stale_spill_folders(parent)
            root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=parent))
        except OSError as e:
            raise OSError(f"cannot make a spill folder in {str(parent)!r}: {e.strerror or e}; choose a "
                          "writable folder with spill_dir=") from None
        fd = _lock(root / LOCK_NAME) if fcntl is not None else None
        self.root = root
        self._finalizer = weakref.finalize(self, _release, root, fd)
        return root

    def save(self, name: str, tensors: dict[str, torch.Tensor]) -> Path:
        """Write ``tensors`` (moved to the CPU) as one file; SpillLimitError, with nothing
        kept, when the folder would grow past its budget."""
        root = self.root or self._open()
        path, tmp = root / name, root / f".{name}.tmp"
        torch.save({k: v.cpu() for k, v in tensors.items()}, tmp)
        size = tmp.stat().st_size
        if self.limit_bytes is not None and self.nbytes + size > self.limit_bytes:
            tmp.unlink(missing_ok=True)
            raise SpillLimitError(
                f"the video session's spill folder would grow past its disk budget of "
                f"{_human(self.limit_bytes)} (spill_limit_bytes={self.limit_bytes}; "
                f"{_human(self.nbytes)} in use, {_human(size)} more asked for: one frame of one "
                "object at this resolution). Raise the budget, track fewer frames "
                "(max_frame_num_to_track) or objects, or close sessions you no longer need")
        os.replace(tmp, path)
        self._sizes[path] = size
        self.nbytes += size
        return path

    def load(self, path: Path, device: torch.device) -> dict[str, torch.Tensor]:
        return torch.load(path, map_location=device, weights_only=True)

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self.nbytes -= self._sizes.pop(path, 0)

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
        self._sizes.clear()
        self.nbytes = 0
        self.root = None
        self._finalizer = None


def _human(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"
