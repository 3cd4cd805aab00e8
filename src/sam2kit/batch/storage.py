"""Where a batch reads and writes: local folders (a shared file system for clusters) and object
stores through fsspec (``s3://`` with s3fs: ``pip install 'sam2kit[s3]'``; credentials and
endpoints from the usual environment, e.g. ``AWS_ENDPOINT_URL``).

An item's outputs are made in a staging folder and appear under ``OUT/<key>/`` only when
complete: locally by renaming the staging folder into place (atomic on one file system), in an
object store by uploading every file with ``results.json`` last (its presence marks a complete
item). The ledger (SQLite) must live on a local disk: for a local OUT it is ``OUT/batch.sqlite``;
for an object store it lives in a local state folder and a copy is uploaded to
``OUT/batch.sqlite`` (downloaded again by a driver that starts without one).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import shutil
import tempfile
from pathlib import Path
from sam2kit.errors import StorageError

LEDGER = "batch.sqlite"
STATE = ".batch"  # OUT/.batch: staging folders, the driver's lock


def is_remote(text: str) -> bool:
    """Whether ``text`` is an object-store (or other non-local) URL."""
    return "://" in text and not text.startswith(("file://", "local://"))


def url_to_fs(text: str):
    """(fsspec file system, path) for a local path or URL; a clear error for a missing driver."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(text)
    except ImportError as e:
        scheme = text.split("://", 1)[0]
        hint = "pip install 'sam2kit[s3]'" if scheme in ("s3", "s3a") else f"install the fsspec driver for {scheme}://"
        raise StorageError(f"{text!r} needs {hint} ({e})") from None
    except ValueError as e:  # an unknown protocol
        raise StorageError(f"cannot open {text!r}: {e}") from None


def fetch_input(source: str, scratch: str) -> str:
    """A local path holding ``source``: the path itself, or a copy of a remote file or frame
    folder downloaded into ``scratch``."""
    if not is_remote(source):
        return source
    fs, path = url_to_fs(source)
    path = path.rstrip("/")
    dest = os.path.join(scratch, posixpath.basename(path))
    if fs.isdir(path):
        for f in fs.find(path, withdirs=False):
            local = os.path.join(dest, *posixpath.relpath(f, path).split("/"))
            os.makedirs(os.path.dirname(local), exist_ok=True)
            fs.get_file(f, local)
    else:
        fs.get_file(path, dest)
    return dest


def open_output(url: str, state_dir: str | None = None):
    """The output store for ``url`` (a local folder or an fsspec URL)."""
    return RemoteOutput(url, state_dir) if is_remote(url) else LocalOutput(url)


def default_state_dir(url: str) -> Path:
    """The local folder for an object-store output's ledger: one per output URL."""
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sam2kit" / "batch"
    return base / hashlib.sha256(url.encode()).hexdigest()[:16]


class _Output:
    remote = False
    url: str
    state: Path

    @property
    def ledger_path(self) -> Path:
        return self.state.parent / LEDGER if not self.remote else self.state / LEDGER

    @contextlib.contextmanager
    def lock(self, host: str | None = None):
        """One driver at a time on this output: an flock on the state folder's lock file (exact
        on one machine; the kernel releases it when the driver dies, even by SIGKILL), and a
        lease file with a heartbeat for drivers on other hosts of a shared file system
        (``lease.py``); yields the lease (``check()`` it between rounds). ``host``: the lease's
        host name (tests play a second machine with it)."""
        import fcntl

        from sam2kit.batch.lease import Lease

        self.state.mkdir(parents=True, exist_ok=True)
        with open(self.state / "lock", "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                raise StorageError(f"another sam2kit batch is writing {self.url} (pid "
                                   f"{f.read().strip() or '?'}); wait for it, or stop it first") from None
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
            lease = Lease(self.state, self.url, host)
            lease.acquire()
            try:
                yield lease
            finally:
                lease.release()

    def discard(self, staged: str) -> None:
        shutil.rmtree(staged, ignore_errors=True)

    def discard_staged(self, item_id: int) -> None:
        """Remove the staging folders of item ``item_id`` (after a failed attempt: a worker
        that was killed mid-item left its folder behind). Remote outputs stage on the worker's
        own disk, out of the driver's reach: nothing to do."""
        if self.remote:
            return
        for d in (self.state / "partial").glob(f"{item_id}-*"):
            shutil.rmtree(d, ignore_errors=True)


class LocalOutput(_Output):
    """A local (or shared-file-system) output folder."""

    def __init__(self, root: str):
        self.root = Path(os.path.abspath(os.path.expanduser(root)))
        self.url = str(self.root)
        self.state = self.root / STATE

    def exists(self) -> bool:
        return self.root.exists()

    def foreign_content(self) -> bool:
        """Whether the folder holds files but no batch ledger (someone else's data)."""
        if self.root.exists() and not self.root.is_dir():
            return True
        return self.root.is_dir() and not self.ledger_path.exists() and any(
            p.name != STATE for p in self.root.iterdir())

    def prepare(self) -> None:
        """Create the folder; remove staging folders that a killed run left behind."""
        for sub in ("partial", "trash"):
            shutil.rmtree(self.state / sub, ignore_errors=True)
            (self.state / sub).mkdir(parents=True, exist_ok=True)

    def stage(self, item_id: int) -> str:
        (self.state / "partial").mkdir(parents=True, exist_ok=True)
        return tempfile.mkdtemp(prefix=f"{item_id}-", dir=self.state / "partial")

    def scratch(self) -> str:
        return self.stage(0)

    def commit(self, staged: str, key: str) -> None:
        """Move a complete item into place, replacing an earlier one as a whole."""
        final = self.root / key
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists() or final.is_symlink():
            (self.state / "trash").mkdir(parents=True, exist_ok=True)
            trash = tempfile.mkdtemp(dir=self.state / "trash")
            os.rename(final, os.path.join(trash, "old"))
            os.rename(staged, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(staged, final)

    def complete(self, key: str) -> bool:
        f = self.root / key / "results.json"
        return f.is_file() and f.stat().st_size > 0

    def put(self, local_file: str, name: str) -> None:
        os.replace(local_file, self.root / name)

    def download_ledger(self) -> None:
        """The ledger of a local output is already local."""


class RemoteOutput(_Output):
    """An object-store output (any fsspec URL): items uploaded with results.json last."""

    remote = True

    def __init__(self, url: str, state_dir: str | None = None):
        self.fs, path = url_to_fs(url)
        self.path = path.rstrip("/")
        self.url = self.fs.unstrip_protocol(self.path)
        self.state = Path(state_dir) if state_dir else default_state_dir(self.url)

    def exists(self) -> bool:
        return self.fs.exists(self.path)

    def foreign_content(self) -> bool:
        if self.ledger_path.exists() or not self.fs.exists(self.path):
            return False
        names = {posixpath.basename(p.rstrip("/")) for p in self.fs.ls(self.path, detail=False)}
        return bool(names) and LEDGER not in names

    def prepare(self) -> None:
        shutil.rmtree(self.state / "partial", ignore_errors=True)
        (self.state / "partial").mkdir(parents=True, exist_ok=True)

    def download_ledger(self) -> None:
        """A driver starting without a local ledger resumes from the copy in the store."""
        remote = f"{self.path}/{LEDGER}"
        if not self.ledger_path.exists() and self.fs.exists(remote):
            self.state.mkdir(parents=True, exist_ok=True)
            tmp = self.ledger_path.with_suffix(".download")
            self.fs.get_file(remote, str(tmp))
            os.replace(tmp, self.ledger_path)

    def stage(self, item_id: int) -> str:
        return tempfile.mkdtemp(prefix=f"sam2kit-batch-{item_id}-")

    def scratch(self) -> str:
        return tempfile.mkdtemp(prefix="sam2kit-batch-in-")

    def commit(self, staged: str, key: str) -> None:
        dest = f"{self.path}/{key}"
        if self.fs.exists(dest):  # an earlier or interrupted upload of this item
            self.fs.rm(dest, recursive=True)
        files = sorted(str(p.relative_to(staged)) for p in Path(staged).rglob("*") if p.is_file())
        files.sort(key=lambda name: name == "results.json")  # the completion mark goes last
        for name in files:
            self.fs.put_file(os.path.join(staged, name), f"{dest}/{Path(name).as_posix()}")
        shutil.rmtree(staged, ignore_errors=True)

    def complete(self, key: str) -> bool:
        return self.fs.exists(f"{self.path}/{key}/results.json")

    def put(self, local_file: str, name: str) -> None:
        self.fs.put_file(local_file, f"{self.path}/{name}")
        os.remove(local_file)
