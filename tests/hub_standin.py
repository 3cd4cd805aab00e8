"""A local stand-in for the Hugging Face hub's file endpoint, for testing real downloads offline.

It answers ``HEAD``/``GET /<org>/<repo>/resolve/<revision>/<file>`` the way the hub does for
``huggingface_hub.hf_hub_download`` (checked against huggingface_hub 2.4's ``file_download.py``:
``get_hf_file_metadata`` needs ``X-Repo-Commit`` and an ``ETag``; the size comes from
``X-Linked-Size`` or ``Content-Length``; errors are told apart by ``X-Error-Code``):

* a plain file: ``200`` with ``ETag`` (the quoted sha256 of the content), ``X-Repo-Commit`` and
  ``Content-Length``; ``GET`` honours a single ``Range: bytes=a-b``.
* an LFS file (``.pt``, ``.safetensors``, ... unless ``lfs=False``): ``302`` to a second server on
  another port (another origin, like the hub's CDN), with ``X-Linked-Etag``/``X-Linked-Size``.
  huggingface_hub does not follow a redirect to another origin on ``HEAD``; it reads the metadata
  from the ``302`` and downloads from ``Location``, as with the real hub.
* ``404`` with ``X-Error-Code``: ``RepoNotFound`` (unknown repo), ``RevisionNotFound`` (known repo,
  unknown revision), ``EntryNotFound`` (known revision, unknown file).

Every request to either server is recorded in ``requests`` as ``(method, path)``. Both servers
listen on 127.0.0.1 only. ``point_huggingface_hub_at`` redirects an already imported
huggingface_hub to a stand-in and to a private cache (its settings are read at import time, so
environment variables alone are not enough).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

__all__ = ["HubStandin", "point_huggingface_hub_at", "set_offline"]

LFS_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".onnx")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class _Entry:
    source: bytes | Path  # a path must not change after it was added
    size: int
    sha256: str
    lfs: bool

    def chunks(self, start: int, end: int):
        """The bytes [start, end) in pieces."""
        if isinstance(self.source, bytes):
            for i in range(start, end, _CHUNK):
                yield self.source[i:min(i + _CHUNK, end)]
            return
        with open(self.source, "rb") as f:
            f.seek(start)
            left = end - start
            while left > 0:
                piece = f.read(min(_CHUNK, left))
                if not piece:
                    return
                left -= len(piece)
                yield piece


def _sha256(source: bytes | Path) -> tuple[str, int]:
    h = hashlib.sha256()
    if isinstance(source, bytes):
        h.update(source)
        return h.hexdigest(), len(source)
    size = 0
    with open(source, "rb") as f:
        while piece := f.read(_CHUNK):
            h.update(piece)
            size += len(piece)
    return h.hexdigest(), size


def commit_for(repo_id: str, revision: str) -> str:
    """The fixed 40-hex commit the stand-in reports for a revision of a repo."""
    return hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hub-standin/1"

    def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
        pass

    def do_HEAD(self):
        self.server.standin._handle(self, head=True)

    def do_GET(self):
        self.server.standin._handle(self, head=False)

    def _not_allowed(self):
        self.server.standin._record(self.command, self.path)
        self.server.standin._reply(self, 405, {}, b"", head=False)

    do_POST = do_PUT = do_DELETE = do_PATCH = _not_allowed


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, standin: "HubStandin", role: str):
        self.standin = standin
        self.role = role
        super().__init__(("127.0.0.1", 0), _Handler)


class HubStandin:
    """``with HubStandin() as hub: hub.add("org/repo", "file.pt", data)``, then download from
    ``hub.url`` (point huggingface_hub at it with ``point_huggingface_hub_at``)."""

    def __init__(self):
        self._files: dict[tuple[str, str, str], _Entry] = {}
        self._blobs: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []
        self.url = self.cdn_url = ""

    # ---- content ------------------------------------------------------------------------

    def add(self, repo_id: str, filename: str, data: bytes | str | Path, revision: str = "main",
            lfs: bool | None = None) -> str:
        """Serve ``data`` (bytes, or a file's path, read when requested) as ``filename`` of
        ``repo_id`` at ``revision``; lfs None: by the file's suffix. Returns the commit hash."""
        source = data if isinstance(data, bytes) else Path(data)
        if isinstance(source, Path) and not source.is_file():
            raise FileNotFoundError(source)
        sha, size = _sha256(source)
        entry = _Entry(source, size, sha, filename.endswith(LFS_SUFFIXES) if lfs is None else lfs)
        with self._lock:
            self._files[(repo_id, revision, filename)] = entry
            self._blobs[sha] = entry
        return commit_for(repo_id, revision)

    def commit(self, repo_id: str, revision: str = "main") -> str:
        return commit_for(repo_id, revision)

    def _lookup(self, repo_id: str, revision: str, filename: str):
        """(entry or None, error code or None, commit or None)."""
        with self._lock:
            files = dict(self._files)
        keys = list(files)
        if not any(r == repo_id for r, _, _ in keys):
            return None, "RepoNotFound", None
        revisions = {rev for r, rev, _ in keys if r == repo_id}
        by_commit = {commit_for(repo_id, rev): rev for rev in revisions}
        revision = by_commit.get(revision, revision)  # a commit hash names its revision
        if revision not in revisions:
            return None, "RevisionNotFound", None
        commit = commit_for(repo_id, revision)
        entry = files.get((repo_id, revision, filename))
        return entry, (None if entry else "EntryNotFound"), commit

    # ---- HTTP ---------------------------------------------------------------------------

    def _record(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((method, path))

    def _reply(self, h: _Handler, status: int, headers: dict, body: bytes, head: bool,
               entry: _Entry | None = None, span: tuple[int, int] | None = None) -> None:
        length = (span[1] - span[0]) if entry is not None else len(body)
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(length))
        h.send_header("Connection", "close")
        h.end_headers()
        h.close_connection = True
        if head:
            return
        try:
            if entry is not None:
                for piece in entry.chunks(*span):
                    h.wfile.write(piece)
            elif body:
                h.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _error(self, h: _Handler, status: int, code: str, message: str, head: bool,
               commit: str | None = None) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Code": code, "X-Error-Message": message}
        if commit:
            headers["X-Repo-Commit"] = commit
        self._reply(h, status, headers, json.dumps({"error": message}).encode(), head)

    def _serve_content(self, h: _Handler, entry: _Entry, extra: dict, head: bool) -> None:
        headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes",
                   "ETag": f'"{entry.sha256}"', **extra}
        span, status = (0, entry.size), 200
        rng = h.headers.get("Range")
        if rng:
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip())
            if not m or m.groups() == ("", ""):
                return self._error(h, 416, "InvalidRange", f"unsupported Range {rng!r}", head)
            a, b = m.groups()
            if a == "":  # the last b bytes
                start, end = max(entry.size - int(b), 0), entry.size
            else:
                start, end = int(a), (min(int(b) + 1, entry.size) if b else entry.size)
            if start >= entry.size or start >= end:
                headers = {"Content-Range": f"bytes */{entry.size}"}
                return self._reply(h, 416, headers, b"", head)
            span, status = (start, end), 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{entry.size}"
        self._reply(h, status, headers, b"", head, entry=entry, span=span)

    def _handle(self, h: _Handler, head: bool) -> None:
        raw_path = urlsplit(h.path).path
        self._record(h.command, raw_path)
        parts = raw_path.split("/")[1:]
        if h.server.role == "cdn":
            entry = self._blobs.get(parts[1]) if len(parts) == 2 and parts[0] == "lfs" else None
            if entry is None:
                return self._error(h, 404, "NotFound", "no such blob", head)
            return self._serve_content(h, entry, {}, head)
        if "resolve" not in parts or parts.index("resolve") < 1 or len(parts) < parts.index("resolve") + 3:
            return self._error(h, 404, "NotFound", f"not a /<repo>/resolve/<rev>/<file> path: {raw_path}", head)
        i = parts.index("resolve")
        repo_id = "/".join(unquote(p) for p in parts[:i])
        revision = unquote(parts[i + 1])
        filename = unquote("/".join(parts[i + 2:]))
        entry, code, commit = self._lookup(repo_id, revision, filename)
        if code == "RepoNotFound":
            return self._error(h, 404, code, "Repository not found", head)
        if code == "RevisionNotFound":
            return self._error(h, 404, code, "Invalid rev id: " + revision, head)
        if code == "EntryNotFound":
            return self._error(h, 404, code, "Entry not found", head, commit=commit)
        extra = {"X-Repo-Commit": commit}
        if entry.lfs:
            headers = {**extra, "Location": f"{self.cdn_url}/lfs/{entry.sha256}",
                       "ETag": f'"{entry.sha256}"', "X-Linked-Etag": f'"{entry.sha256}"',
                       "X-Linked-Size": str(entry.size)}
            return self._reply(h, 302, headers, b"", head)
        return self._serve_content(h, entry, extra, head)

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self) -> "HubStandin":
        if self._servers:
            return self
        for role in ("hub", "cdn"):
            server = _Server(self, role)
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                      name=f"hub-standin-{role}", daemon=True)
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
        host, port = self._servers[0].server_address[:2]
        self.url = f"http://{host}:{port}"
        host, port = self._servers[1].server_address[:2]
        self.cdn_url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers.clear()
        self._threads.clear()

    def __enter__(self) -> "HubStandin":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def point_huggingface_hub_at(endpoint: str, hf_home: str | Path, monkeypatch) -> Path:
    """Make huggingface_hub (already imported or not) use ``endpoint`` and a cache under
    ``hf_home``, with no token, Xet off and offline mode off. Returns the hub cache folder.

    huggingface_hub reads these settings into ``huggingface_hub.constants`` at import, so both
    the environment (for anything imported later) and the constants are patched."""
    from huggingface_hub import constants

    hf_home = Path(hf_home)
    cache = hf_home / "hub"
    cache.mkdir(parents=True, exist_ok=True)
    endpoint = endpoint.rstrip("/")
    env = {"HF_ENDPOINT": endpoint, "HF_HOME": str(hf_home), "HF_HUB_CACHE": str(cache),
           "HF_XET_CACHE": str(hf_home / "xet"), "HF_HUB_DISABLE_XET": "1",
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
              "HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT"):
        monkeypatch.delenv(k, raising=False)
    values = {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(cache),
        "HUGGINGFACE_HUB_CACHE": str(cache),
        "HF_XET_CACHE": str(hf_home / "xet"),
        "HF_TOKEN_PATH": str(hf_home / "token"),
        "HF_STORED_TOKENS_PATH": str(hf_home / "stored_tokens"),
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_DISABLE_TELEMETRY": True,
    }
    for name, value in values.items():
        if hasattr(constants, name):
            monkeypatch.setattr(constants, name, value)
    return cache


def set_offline(monkeypatch, offline: bool = True) -> None:
    """Turn huggingface_hub's offline mode (HF_HUB_OFFLINE) on or off for one test."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
