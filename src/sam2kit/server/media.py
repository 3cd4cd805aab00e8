"""Getting clients' files onto the server's disk safely.

Uploads are read in chunks and copied into the work folder, never held whole in memory;
the request body is cut off past ``--max-upload-mb`` (``BodyLimit``, 413). Paths under the
media root are resolved with symlinks followed and must stay inside it. What a file is, is
judged by opening it (Pillow for pictures, FFmpeg for videos), never by its name.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send


class BadInput(Exception):
    """A client's input that cannot be used: ``status`` and a message naming problem and fix."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class BodyLimit:
    """ASGI middleware: requests whose body is larger than ``limit`` bytes get 413, whether
    they say so in Content-Length (refused before reading) or not (cut off when the count
    passes the limit)."""

    def __init__(self, app: ASGIApp, limit: int, shown: int | None = None):
        self.app, self.limit = app, limit
        self.shown = shown or limit  # the limit as the user set it (``limit`` allows for multipart framing)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._refuse(send, int(length))
        seen, started, refused = 0, False, False

        async def counted():
            # past the limit: answer 413 at once and tell the app the client is gone, so that it
            # stops reading (an exception here would reach the app wrapped by its middleware)
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    refused = True
                    if not started:
                        await self._refuse(send, None)
                    return {"type": "http.disconnect"}
            return message

        async def watched(message):
            nonlocal started
            if refused:  # the 413 went out already
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counted, watched)

    async def _refuse(self, send: Send, length: int | None) -> None:
        mb = self.shown / 1e6
        said = f" ({length / 1e6:.1f} MB)" if length is not None else ""
        body = json.dumps({"error": f"the upload{said} is larger than this server's limit of {mb:g} MB "
                                    "(--max-upload-mb); send a smaller file, or ask for a higher limit"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


async def save_upload(upload, folder: Path, limit: int) -> tuple[Path, str]:
    """Copy an UploadFile into ``folder`` in 1 MB chunks; returns (path, sha256 hex)."""
    path = folder / f"upload-{secrets.token_hex(8)}"
    digest, size = hashlib.sha256(), 0
    try:
        with open(path, "wb") as f:
            while chunk := await upload.read(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise BadInput(413, f"the upload is larger than this server's limit of {limit / 1e6:g} MB "
                                        "(--max-upload-mb); send a smaller file")
                digest.update(chunk)
                f.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if size == 0:
        path.unlink(missing_ok=True)
        raise BadInput(400, "the upload is empty; send the file's contents in the multipart field 'file'")
    return path, digest.hexdigest()


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def under_root(root: Path | None, relative: str) -> Path:
    """``relative`` inside the media root, symlinks followed; BadInput otherwise."""
    if root is None:
        raise BadInput(400, "this server has no media root (start it with --media-root DIR); upload the "
                            "file instead")
    if not relative or "\x00" in relative:
        raise BadInput(400, "path is empty; give a path relative to the media root")
    if os.path.isabs(relative) or relative.startswith(("/", "\\")) or ":" in relative.split("/")[0]:
        raise BadInput(400, f"path {relative!r} is absolute; give it relative to the media root")
    if ".." in Path(relative).parts:
        raise BadInput(400, f"path {relative!r} leads out of the media root ('..'); give a path inside it")
    base = root.resolve()
    target = (base / relative).resolve()
    if target != base and base not in target.parents:
        raise BadInput(400, f"path {relative!r} leads out of the media root (a symbolic link); give a path "
                            "inside it")
    if not target.exists():
        raise BadInput(404, f"no file or folder {relative!r} under the media root")
    return target


def list_media(root: Path, limit: int = 2000) -> list[dict]:
    """Files and frame folders under the media root (relative paths, by name), at most
    ``limit`` entries; hidden entries and links out of the root are left out."""
    from sam2kit.video.io import IMAGE_EXTENSIONS

    base, out = root.resolve(), []
    for folder, dirs, files in os.walk(base):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        here = Path(folder)
        frames = [f for f in files if Path(f).suffix.lower() in IMAGE_EXTENSIONS]
        if len(frames) >= 2 and here != base:
            out.append({"path": str(here.relative_to(base)), "kind": "frames", "frames": len(frames)})
        for name in sorted(files):
            p = here / name
            if name.startswith(".") or base not in p.resolve().parents:
                continue
            out.append({"path": str(p.relative_to(base)), "kind": "file", "bytes": p.stat().st_size})
            if len(out) >= limit:
                return out
    return out
