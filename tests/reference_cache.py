"""The reference implementation's outputs for the parity cases, kept between test runs.

A reference run (a ``tests/parity/ref_*.py`` script in the reference environment) is a pure
function of: the reference itself (package versions and a hash of the ``sam2`` package's
files), the script and the helper modules it imports from ``tests/parity/``, its arguments
(the job: cases, prompts, images, sizes), the contents of its input files (checkpoints, frame
folders, datasets), the thread count it runs with and the CPU. ``ReferenceCache.run`` hashes
all of that into a key; on a hit it copies the stored outputs to where the script would have
written them, without starting the reference; on a miss it runs the script and stores what it
wrote. So a clean checkout computes each output once, and any change to a case, a checkpoint,
an input, a script or the reference computes it again: an entry is only ever found by the key
of exactly what produced it.

Arguments of ``run(script, *args)``, in the script's argv order:
- ``Job(obj, fmt="pt"|"json")``: a job object, written to a file (``torch.save`` or JSON) whose
  path is passed; its contents enter the key (numpy arrays and tensors by dtype, shape, bytes).
- ``In(path)``: an input file or folder; its contents enter the key, not its path. A checkpoint
  written by ``torch.save`` is hashed by its records with the archive's folder name left out
  (torch.save names that folder after the file), so the same weights under another file name hit.
- ``Out(path)``: a file or folder the script writes; stored in the entry, restored on a hit.
- plain str / int / float: as given.
``In`` and ``Out`` may also appear inside a ``Job`` (as dict values or list items): the script
sees their paths.

Where: ``$SAM2KIT_REFERENCE_CACHE`` if set (``off``: a fresh folder per test session, so
nothing is kept), else ``$XDG_CACHE_HOME/sam2kit/reference-outputs`` (``~/.cache/...``).
Entries are ``<root>/<key[:2]>/<key>/`` with ``manifest.json`` (what was hashed, and the sha256
of every stored file) and ``out/<i>``; ``prune()`` (at the start of each test session) deletes
those unused for 30 days. An entry is built in a temporary folder and renamed into
place; a file lock per key makes concurrent sessions compute an entry once. A stored file
whose hash differs from the manifest (a damaged or half-deleted entry) makes the entry a miss:
it is computed again and replaced, never used.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = 1  # bump to orphan every stored entry (a change in what the key covers)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class In:
    """An input file or folder of a reference run: hashed by contents."""
    path: Path


@dataclass(frozen=True)
class Out:
    """A file or folder the reference script writes: stored, and restored on a hit."""
    path: Path


@dataclass(frozen=True)
class Job:
    """A job object the script reads from a file (``fmt`` "pt": torch.save, "json": JSON)."""
    obj: Any
    fmt: str = "pt"


def default_root() -> Path | None:
    """The cache folder (None: ``SAM2KIT_REFERENCE_CACHE=off``, keep nothing between sessions)."""
    env = os.environ.get("SAM2KIT_REFERENCE_CACHE", "").strip()
    if env.lower() == "off":
        return None
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sam2kit" / "reference-outputs"


# ---- hashing ---------------------------------------------------------------------------------

def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _torch_archive_hash(path: Path) -> str | None:
    """sha256 over a torch.save zip's records with the top folder name stripped, else None."""
    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        prefix = names[0].split("/", 1)[0] + "/" if names and "/" in names[0] else None
        if prefix is None or prefix + "data.pkl" not in names or not all(n.startswith(prefix) for n in names):
            return None
        h = hashlib.sha256(b"torch-archive\0")
        for name in sorted(names):
            h.update(name[len(prefix):].encode() + b"\0")
            with z.open(name) as f:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
                h.update(b"\0")
        return h.hexdigest()


_content_memo: dict[tuple, str] = {}


def content_hash(path: Path) -> str:
    """A file's hash (a torch checkpoint's by its records), or a folder's over its relative
    paths and file hashes. Memoised per (path, size, mtime) within the process."""
    path = Path(path)
    st = path.stat()
    memo_key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if not path.is_dir() and memo_key in _content_memo:
        return _content_memo[memo_key]
    if path.is_dir():
        h = hashlib.sha256(b"dir\0")
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames.sort()
            rel = os.path.relpath(dirpath, path)
            h.update(f"d {rel}\0".encode())
            for name in sorted(filenames):
                h.update(f"f {os.path.join(rel, name)} {content_hash(Path(dirpath) / name)}\0".encode())
        return h.hexdigest()
    digest = _torch_archive_hash(path) or _sha256_file(path)
    _content_memo[memo_key] = digest
    return digest


def canonical(obj: Any, outs: list[Out]) -> Any:
    """A JSON-able description of ``obj`` that enters the key: equal descriptions mean equal
    inputs to the script. ``Out`` markers are numbered in the order met (appended to ``outs``)."""
    if isinstance(obj, In):
        return {"in": content_hash(obj.path)}
    if isinstance(obj, Out):
        outs.append(obj)
        return {"out": len(outs) - 1}
    if isinstance(obj, Job):
        return {"job": obj.fmt, "obj": canonical(obj.obj, outs)}
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return {"int": str(obj)}
    if isinstance(obj, float):
        return {"float": repr(obj)}
    if isinstance(obj, np.generic):
        return {"np": obj.dtype.str, "v": repr(obj.item())}
    if isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj)
        return {"ndarray": a.dtype.str, "shape": list(a.shape), "sha256": hashlib.sha256(a.tobytes()).hexdigest()}
    if type(obj).__module__.startswith("torch") and type(obj).__name__ == "Tensor":
        import torch

        t = obj.detach().cpu().contiguous()
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes()
        return {"tensor": str(t.dtype), "shape": list(t.shape), "sha256": hashlib.sha256(data).hexdigest()}
    if isinstance(obj, (list, tuple)):
        return {type(obj).__name__: [canonical(x, outs) for x in obj]}
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise TypeError(f"job dict keys must be str for a stable key: {list(obj)[:5]}")
        return {"dict": {k: canonical(v, outs) for k, v in sorted(obj.items())}}
    if isinstance(obj, Path):
        raise TypeError(f"a path in a reference job must be In(...) or Out(...): {obj}")
    raise TypeError(f"cannot key a reference job holding a {type(obj).__name__}")


def _plain(obj: Any) -> Any:
    """``obj`` as the script reads it: In/Out replaced by their path strings."""
    if isinstance(obj, (In, Out)):
        return str(obj.path)
    if isinstance(obj, list):
        return [_plain(x) for x in obj]
    if isinstance(obj, tuple):
        return tuple(_plain(x) for x in obj)
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj


def script_sources(parity_dir: Path, script: str) -> dict[str, str]:
    """{file name: sha256} of ``script`` and the modules of ``parity_dir`` it imports, transitively."""
    found: dict[str, str] = {}
    todo = [script]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        text = (parity_dir / name).read_bytes()
        found[name] = hashlib.sha256(text).hexdigest()
        for mod in re.findall(rb"^\s*(?:from|import)\s+([A-Za-z_]\w*)", text, re.MULTILINE):
            if (parity_dir / f"{mod.decode()}.py").is_file():
                todo.append(f"{mod.decode()}.py")
    return found


_IDENTITY_CODE = r"""
import hashlib, importlib.metadata as md, importlib.util, json, os, platform, sys
root = importlib.util.find_spec("sam2").submodule_search_locations[0]
h = hashlib.sha256()
for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
    for name in sorted(filenames):
        if name.endswith((".py", ".yaml")):
            p = os.path.join(dirpath, name)
            h.update(os.path.relpath(p, root).encode() + b"\0" + open(p, "rb").read() + b"\0")
versions = {}
for p in ("sam2", "torch", "torchvision", "numpy", "hydra-core", "iopath", "pillow"):
    try:
        versions[p] = md.version(p)
    except md.PackageNotFoundError:
        versions[p] = None
print(json.dumps({"python": platform.python_version(), "versions": versions, "sam2_files": h.hexdigest()}))
"""


def reference_identity(python: Path) -> dict:
    """What identifies the reference: its package versions and a hash of the sam2 package's files."""
    proc = subprocess.run([str(python), "-c", _IDENTITY_CODE], check=False, capture_output=True,
                          text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"cannot identify the reference environment {python}:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


# ---- the cache -------------------------------------------------------------------------------

class ReferenceCache:
    """Runs reference scripts through a cache of their outputs (see the module doc).

    ``runner(script_path, argv, env)`` runs one script (default: a subprocess in ``python``);
    ``calls`` counts the runs it made, ``hits`` the runs it spared."""

    def __init__(self, root: Path, python: Path, parity_dir: Path,
                 runner: Callable[[Path, list[str], dict], None] | None = None,
                 identity: dict | None = None):
        self.root, self.python, self.parity_dir = Path(root), Path(python), Path(parity_dir)
        self.runner = runner or self._subprocess
        self._identity = identity
        self.calls = self.hits = 0

    @property
    def identity(self) -> dict:
        if self._identity is None:
            self._identity = reference_identity(self.python)
        return self._identity

    def env(self) -> dict:
        return dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))

    def key(self, script: str, args: tuple) -> tuple[str, dict, list[Out]]:
        outs: list[Out] = []
        material = {
            "format": FORMAT, "reference": self.identity,
            "scripts": script_sources(self.parity_dir, script), "script": script,
            "args": [canonical(a, outs) for a in args],
            "threads": self.env()["OMP_NUM_THREADS"], "cpu": cpu_model(),
        }
        text = json.dumps(material, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest(), material, outs

    def run(self, script: str, *args) -> bool:
        """Run ``script`` with ``args`` or restore its outputs; True when the reference ran."""
        key, material, outs = self.key(script, args)
        entry = self.root / key[:2] / key
        entry.parent.mkdir(parents=True, exist_ok=True)
        with _locked(entry.parent / f"{key}.lock"):
            if self._restore(entry, outs):
                self.hits += 1
                with contextlib.suppress(OSError):
                    os.utime(entry / "manifest.json")  # last used: what prune() goes by
                return False
            self._compute(script, args)
            self._store(entry, material, outs)
        return True

    def prune(self, max_age_days: float = 30.0) -> int:
        """Delete entries not used for ``max_age_days`` (cases that changed leave their old
        entries behind); returns how many. Each under its key's lock."""
        removed, cutoff = 0, time.time() - max_age_days * 86400
        for manifest in self.root.glob("*/*/manifest.json"):
            entry = manifest.parent
            with contextlib.suppress(OSError), _locked(entry.parent / f"{entry.name}.lock"):
                if manifest.stat().st_mtime < cutoff:
                    trash = Path(tempfile.mkdtemp(prefix=".trash-", dir=entry.parent))
                    os.rename(entry, trash / "entry")
                    shutil.rmtree(trash, ignore_errors=True)
                    (entry.parent / f"{entry.name}.lock").unlink()
                    removed += 1
        return removed

    # -- internals --

    def _compute(self, script: str, args: tuple) -> None:
        with tempfile.TemporaryDirectory(prefix="sam2kit-ref-job-") as tmp:
            argv = []
            for i, a in enumerate(args):
                if isinstance(a, Job):
                    path = Path(tmp) / f"job{i}.{a.fmt}"
                    if a.fmt == "json":
                        path.write_text(json.dumps(_plain(a.obj)))
                    else:
                        import torch

                        torch.save(_plain(a.obj), path)
                    argv.append(str(path))
                else:
                    argv.append(str(_plain(a)))
            self.calls += 1
            self.runner(self.parity_dir / script, argv, self.env())

    def _subprocess(self, script_path: Path, argv: list[str], env: dict) -> None:
        proc = subprocess.run([str(self.python), str(script_path), *argv], check=False, capture_output=True,
                              text=True, env=env, cwd=str(self.parity_dir.parent))
        if proc.returncode != 0:
            raise RuntimeError(f"reference script {script_path.name} failed:\n{proc.stdout[-3000:]}\n"
                               f"{proc.stderr[-3000:]}")

    def _store(self, entry: Path, material: dict, outs: list[Out]) -> None:
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=entry.parent))
        try:
            files = {}
            for i, out in enumerate(outs):
                if not out.path.exists():
                    raise RuntimeError(f"the reference script wrote nothing at {out.path}")
                dest = tmp / "out" / str(i)
                dest.parent.mkdir(parents=True, exist_ok=True)
                if out.path.is_dir():
                    shutil.copytree(out.path, dest)
                else:
                    shutil.copyfile(out.path, dest)
            for p in sorted((tmp / "out").rglob("*")) if outs else []:
                if p.is_file():
                    files[str(p.relative_to(tmp))] = _sha256_file(p)
            manifest = {"key": material, "files": files, "dirs": [out.path.is_dir() for out in outs],
                        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
            if entry.exists():  # a damaged entry: move it aside, then put the new one in its place
                trash = Path(tempfile.mkdtemp(prefix=".trash-", dir=entry.parent))
                os.rename(entry, trash / "entry")
                shutil.rmtree(trash, ignore_errors=True)
            os.rename(tmp, entry)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _restore(self, entry: Path, outs: list[Out]) -> bool:
        """Copy the entry's outputs to the Out paths, verifying every file as it is copied;
        False (and nothing left behind) if the entry is absent or damaged."""
        written: list[Path] = []
        try:
            manifest = json.loads((entry / "manifest.json").read_text())
            files, dirs = manifest["files"], manifest["dirs"]
            stored = {str(p.relative_to(entry)) for p in (entry / "out").rglob("*") if p.is_file()} if outs else set()
            if len(dirs) != len(outs) or stored != set(files):
                return False
            for i, out in enumerate(outs):
                src = entry / "out" / str(i)
                pairs = ([(p, out.path / p.relative_to(src)) for p in sorted(src.rglob("*")) if p.is_file()]
                         if dirs[i] else [(src, out.path)])
                if dirs[i]:
                    out.path.mkdir(parents=True, exist_ok=True)
                for a, b in pairs:
                    b.parent.mkdir(parents=True, exist_ok=True)
                    written.append(b)
                    if _copy_hashed(a, b) != files[str(a.relative_to(entry))]:
                        raise ValueError(f"damaged cache entry: {a}")
            return True
        except (OSError, ValueError, KeyError, TypeError):
            for p in written:
                with contextlib.suppress(OSError):
                    p.unlink()
            return False


def _copy_hashed(src: Path, dest: Path) -> str:
    """Copy ``src`` to ``dest``; the sha256 of what was written."""
    h = hashlib.sha256()
    with open(src, "rb") as fi, open(dest, "wb") as fo:
        while chunk := fi.read(_CHUNK):
            h.update(chunk)
            fo.write(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def _locked(path: Path):
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
