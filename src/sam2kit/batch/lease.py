"""The output's lock across machines: a lease file ``OUT/.batch/lease.json`` naming the driver
that holds it (a random owner id, host name, pid, start time) and a heartbeat that driver
rewrites every ``HEARTBEAT_S`` seconds.

Why a file and not only ``flock``: on one machine the kernel's flock (``storage.py``) is exact
and is released when the driver dies, even by SIGKILL; on a shared file system (NFS, CephFS,
Lustre, SMB mounts) whether a lock taken on one host is seen on another depends on the file
system and its mount options. A lease file needs only what every shared file system gives:
``O_CREAT | O_EXCL`` creation and atomic rename.

The rules: a driver that finds a lease whose heartbeat is younger than ``STALE_S`` refuses to
start and names the holder; a lease whose heartbeat stopped (older than ``STALE_S``), or one
held on this very host by a process that no longer exists, is taken over. A driver that finds,
at a heartbeat, that its lease was taken over (it was paused for longer than ``STALE_S``) stops
instead of writing on (``lost``). The hosts' clocks must agree to well within ``STALE_S`` (NTP).
Two drivers taking over the same stale lease at the same moment: each re-reads the lease after a
short pause and only the one whose id is written there goes on.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from sam2kit.errors import StorageError

LEASE = "lease.json"
HEARTBEAT_S = 10.0  # the holder rewrites its heartbeat this often
STALE_S = 60.0  # a heartbeat older than this: the holder is gone, the lease may be taken over
SETTLE_S = 0.2  # after taking over: pause, then check no other driver took it at the same moment


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (and is no zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class Lease:
    """The lease on ``folder / LEASE`` for output ``url``. ``host``: this driver's host name
    (default: ``socket.gethostname()``; tests give another to play a second machine);
    ``heartbeat_s``, ``stale_s``: default to the module's constants (read at ``acquire``)."""

    def __init__(self, folder: Path, url: str, host: str | None = None, heartbeat_s: float | None = None,
                 stale_s: float | None = None):
        self.path, self.url = Path(folder) / LEASE, url
        self.host = host or socket.gethostname()
        self.heartbeat_s, self.stale_s = heartbeat_s, stale_s
        self.owner = uuid.uuid4().hex
        self.lost: dict | None = None  # the lease that replaced ours, if one did
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- the record ---------------------------------------------------------------------

    def _record(self, started: float) -> dict:
        return {"owner": self.owner, "host": self.host, "pid": os.getpid(), "url": self.url,
                "started": started, "heartbeat": time.time()}

    def read(self) -> dict | None:
        """The lease on disk (None: none; ``{}``: one being written or damaged)."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            held = json.loads(text)
            return held if isinstance(held, dict) else {}
        except ValueError:
            return {}

    def _write(self, record: dict) -> None:
        tmp = self.path.with_name(f"{LEASE}.{self.owner}.tmp")
        with open(tmp, "w") as f:
            json.dump(record, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def stale(self, held: dict) -> bool:
        """Whether ``held`` may be taken over: its heartbeat stopped, or its process is gone."""
        if held.get("host") == self.host and isinstance(held.get("pid"), int) and not pid_alive(held["pid"]):
            return True
        beat = held.get("heartbeat")
        if not isinstance(beat, (int, float)):  # being written, or damaged: judge by the file's age
            try:
                beat = self.path.stat().st_mtime
            except FileNotFoundError:
                return True
        return time.time() - beat > self._stale_s()

    def _stale_s(self) -> float:
        return self.stale_s if self.stale_s is not None else STALE_S

    # ---- taking, keeping, giving back ----------------------------------------------------

    def acquire(self) -> None:
        """Take the lease (StorageError naming the holder if a live driver has it), then keep
        it with a heartbeat thread until ``release``."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        started = time.time()
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                held = self.read()
                if held is None:
                    continue  # given back meanwhile: try again
                if not self.stale(held):
                    raise StorageError(self._held_text(held)) from None
                self._write(self._record(started))  # take the stale lease over
                time.sleep(SETTLE_S)
                if (self.read() or {}).get("owner") != self.owner:
                    continue  # another driver took it at the same moment: judge its lease
            else:
                with os.fdopen(fd, "w") as f:
                    json.dump(self._record(started), f)
                    f.flush()
                    os.fsync(f.fileno())
            break
        else:
            raise StorageError(f"cannot take the lock of {self.url} ({self.path}): other drivers keep "
                               "taking it; stop them first")
        self._started = started
        self._thread = threading.Thread(target=self._beat, name="batch-lease", daemon=True)
        self._thread.start()

    def _held_text(self, held: dict) -> str:
        age = time.time() - held["heartbeat"] if isinstance(held.get("heartbeat"), (int, float)) else None
        when = f"its heartbeat {age:.0f} s ago" if age is not None else "its lease being written"
        return (f"another sam2kit batch is writing {self.url} (host {held.get('host', '?')}, pid "
                f"{held.get('pid', '?')}, {when}; lease {self.path}); wait for it or stop it; a lease "
                f"whose heartbeat stopped is taken over after {self._stale_s():g} s")

    def _beat(self) -> None:
        period = self.heartbeat_s if self.heartbeat_s is not None else HEARTBEAT_S
        while not self._stop.wait(period):
            held = self.read()
            if held is not None and held.get("owner") not in (None, self.owner):
                self.lost = held
                return
            try:
                self._write(self._record(self._started))
            except OSError:  # the file system is away for a moment: the next beat may work
                pass

    def release(self) -> None:
        """Stop the heartbeat; remove the lease if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if (self.read() or {}).get("owner") == self.owner:
            self.path.unlink(missing_ok=True)

    def check(self) -> None:
        """StorageError if another driver took the lease over (this one was paused too long)."""
        if self.lost is not None:
            raise StorageError(
                f"lost the lock of {self.url}: host {self.lost.get('host', '?')} (pid "
                f"{self.lost.get('pid', '?')}) took it over after this driver's heartbeat stopped for "
                f"more than {self._stale_s():g} s; stopping so that two drivers never write one ledger")
