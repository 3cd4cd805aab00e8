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
import threading
import time
import weakref
from pathlib import Path

import torch
from sam2kit.errors import SpillLimitError

try:
    import fcntl
except ImportError:  # Windows: no stale-folder detection; folders still go at close
    fcntl = None

PREFIX = "sam2kit-spill-"
LOCK_NAME = ".owner.lock"
# a folder without its lock file is stale only when older than this (it may be being made)
UNLOCKED_GRACE_S = 60.0


class DiskBudget:
    """Bytes that spill folders may hold on disk together: give one to several sessions (a
    server's ``--spill-limit-gb``) for a shared limit, or an int to one for its own."""

    def __init__(self, limit_bytes: int):
        if limit_bytes < 0:
            raise ValueError(f"a disk budget must be at least 0 bytes, got {limit_bytes}")
        self.limit_bytes = int(limit_bytes)
        self.used = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> bool:
        with self._lock:
            if self.used + n > self.limit_bytes:
                return False
            self.used += n
            return True

    def give(self, n: int) -> None:
        with self._lock:
            self.used -= n


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


def claim(folder: Path) -> int | None:
    """Mark ``folder`` as this process's for as long as it lives (an flock on a file in it,
    dropped by the kernel however the process dies); returns the descriptor to keep open, or
    None where file locks are not available."""
    return _lock(Path(folder) / LOCK_NAME) if fcntl is not None else None


def remove_stale_spill_folders(parent: str | Path | None = None, prefix: str = PREFIX,
                               unlocked_grace_s: float | None = UNLOCKED_GRACE_S) -> list[Path]:
    """Remove the folders named ``prefix*`` in ``parent`` (default: the temporary folder; the
    default prefix: spill folders) whose owner is gone: their lock (``claim``) can be taken.
    A folder without a lock file is removed once older than ``unlocked_grace_s`` (None: never).
    Returns the folders removed. A no-op where file locks are not available."""
    if fcntl is None:
        return []
    parent = Path(parent or tempfile.gettempdir())
    removed = []
    try:
        candidates = [p for p in parent.iterdir() if p.name.startswith(prefix) and p.is_dir()]
    except OSError:
        return []
    for folder in candidates:
        lock = folder / LOCK_NAME
        try:
            if not lock.exists():
                if unlocked_grace_s is None or time.time() - folder.stat().st_mtime < unlocked_grace_s:
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


def _release(root: Path, fd: int | None, budget: "DiskBudget | None", usage: list[int]) -> None:
    shutil.rmtree(root, ignore_errors=True)
    if budget is not None:
        budget.give(usage[0])
    usage[0] = 0
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


class SpillStore:
    """Files of one session's spilled results: ``save(name, tensors)`` -> path, ``load(path)``,
    ``remove(path)``; ``nbytes`` on disk now; ``close()`` removes the folder.

    parent: where the folder goes (None: the temporary folder); limit: the disk budget, in
    bytes for this store alone or a ``DiskBudget`` shared with others (None: no limit)."""

    def __init__(self, parent: str | Path | None = None, limit: int | DiskBudget | None = None):
        if limit is not None and not isinstance(limit, DiskBudget):
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                raise ValueError(f"spill_limit_bytes must be a number of bytes >= 0, a DiskBudget or None, "
                                 f"got {limit!r}")
            limit = DiskBudget(limit)
        self.parent = Path(parent) if parent is not None else None
        self.budget = limit
        self.root: Path | None = None
        self._usage = [0]  # bytes on disk (a list: the finalizer shares it)
        self._sizes: dict[Path, int] = {}
        self._finalizer = None

    @property
    def nbytes(self) -> int:
        return self._usage[0]

    @property
    def limit_bytes(self) -> int | None:
        return None if self.budget is None else self.budget.limit_bytes

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
        self._finalizer = weakref.finalize(self, _release, root, fd, self.budget, self._usage)
        return root

    def save(self, name: str, tensors: dict[str, torch.Tensor]) -> Path:
        """Write ``tensors`` (moved to the CPU) as one file; SpillLimitError, with nothing
        kept, when the folder would grow past its budget."""
        root = self.root or self._open()
        path, tmp = root / name, root / f".{name}.tmp"
        torch.save({k: v.cpu() for k, v in tensors.items()}, tmp)
        size = tmp.stat().st_size
        if self.budget is not None and not self.budget.take(size):
            tmp.unlink(missing_ok=True)
            shared = "" if self.budget.used == self.nbytes else \
                f" shared with other sessions ({_human(self.budget.used)} in use in all)"
            raise SpillLimitError(
                f"the video session's spill folder would grow past its disk budget of "
                f"{_human(self.budget.limit_bytes)}{shared} (spill_limit_bytes={self.budget.limit_bytes}; "
                f"{_human(self.nbytes)} in use, {_human(size)} more asked for: one frame of one "
                "object at this resolution). Raise the budget, track fewer frames "
                "(max_frame_num_to_track) or objects, or close sessions you no longer need")
        os.replace(tmp, path)
        self._sizes[path] = size
        self._usage[0] += size
        return path

    def load(self, path: Path, device: torch.device) -> dict[str, torch.Tensor]:
        return torch.load(path, map_location=device, weights_only=True)

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        size = self._sizes.pop(path, 0)
        self._usage[0] -= size
        if self.budget is not None:
            self.budget.give(size)

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # removes the folder, gives its bytes back to the budget
        self._sizes.clear()
        self.root = None
        self._finalizer = None


def _human(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"
