"""Fetching a task's picture or video by URL into the work folder, within the named limits.

URLs a Label Studio task holds: ``http(s)://...`` (fetched as given), and Label Studio's own
relative ones (``/data/upload/...``, ``/data/local-files/?d=...``, ``/storage-data/...``,
``/tasks/<id>/resolve/?fileuri=...``), fetched from ``--label-studio-url`` (or LABEL_STUDIO_URL)
with its API key, as the official backends do (label_studio_sdk ``get_local_path``): a legacy
token goes as ``Authorization: Token KEY``; a personal access token (a JWT refresh token, the
default kind in Label Studio 1.2x) is first exchanged for an access token at
``/api/token/refresh/`` and sent as ``Authorization: Bearer ACCESS``. The key is only ever sent to
Label Studio's own address.

Limits: ``--fetch-max-mb`` (refused from Content-Length before reading, else cut off when the
count passes it), ``--fetch-timeout`` for the whole fetch, redirects followed (at most 5).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import secrets
import time
from pathlib import Path
from urllib.parse import urljoin, urlparse

from sam2kit.server.media import BadInput

LS_RELATIVE = ("/data/", "/storage-data/", "/tasks/", "data/", "upload/", "/upload/")


class Fetcher:
    """Downloads task files; one per server (it keeps the exchanged access token)."""

    def __init__(self, settings, work_dir: Path):
        self.settings, self.work_dir = settings, work_dir
        self.ls_url = (settings.label_studio_url or os.environ.get("LABEL_STUDIO_URL")
                       or os.environ.get("LABEL_STUDIO_HOST") or "").rstrip("/") or None
        self.api_key = (settings.label_studio_api_key or os.environ.get("LABEL_STUDIO_API_KEY")
                        or os.environ.get("LABEL_STUDIO_ACCESS_TOKEN") or None)
        self._access: tuple[str, float] | None = None  # (access token, expiry on time.time())

    def resolve(self, url: str) -> tuple[str, bool]:
        """(absolute URL, whether it is Label Studio's own and gets the API key)."""
        if not isinstance(url, str) or not url:
            raise BadInput(422, "the task has no file URL in the field the label config names")
        if url.startswith(("http://", "https://")):
            own = self.ls_url is not None and urlparse(url).netloc == urlparse(self.ls_url).netloc
            return url, own
        if url.startswith(LS_RELATIVE):
            if url.startswith(("upload/", "/upload/")):  # (as the SDK fixes old upload URLs)
                url = "/data/" + url.lstrip("/")
            if self.ls_url is None:
                raise BadInput(422, f"the task's file {url[:120]!r} is on the Label Studio server, but sam2kit "
                                    "does not know its address: start sam2kit serve with LABEL_STUDIO_URL="
                                    "http://HOST:PORT and LABEL_STUDIO_API_KEY=TOKEN in the environment (or "
                                    "--label-studio-url / --label-studio-api-key)")
            return urljoin(self.ls_url + "/", url.lstrip("/")), True
        scheme = url.split(":", 1)[0] if ":" in url[:10] else "a path"
        raise BadInput(422, f"cannot fetch the task's file {url[:120]!r} ({scheme}): sam2kit fetches http(s) URLs "
                            "and Label Studio's own /data/... URLs; connect cloud storage in Label Studio so that "
                            "tasks carry URLs it resolves")

    async def fetch(self, url: str, what: str = "picture") -> tuple[Path, str]:
        """Download ``url`` into the work folder -> (path, sha256 hex); BadInput on any failure."""
        target, own = self.resolve(url)
        try:
            import httpx
        except ImportError:  # pragma: no cover - depends on the install
            raise BadInput(501, "fetching task files needs httpx: pip install 'sam2kit[serve]'") from None
        limit = int(self.settings.fetch_max_mb * 1e6)
        path = self.work_dir / f"fetch-{secrets.token_hex(8)}"
        try:
            async with asyncio.timeout(self.settings.fetch_timeout):
                async with httpx.AsyncClient(follow_redirects=True, max_redirects=5,
                                             timeout=self.settings.fetch_timeout) as client:
                    headers = await self._headers(client) if own else {}
                    digest = await _download(client, target, headers, path, limit, what)
        except TimeoutError:
            path.unlink(missing_ok=True)
            raise BadInput(504, f"fetching the task's {what} took more than {self.settings.fetch_timeout:g} s "
                                "(--fetch-timeout); check that the URL answers, or raise the limit") from None
        except httpx.HTTPError as e:
            path.unlink(missing_ok=True)
            raise BadInput(502, f"cannot fetch the task's {what} from {_short(target)}: {type(e).__name__}: "
                                f"{' '.join(str(e).split()) or 'no answer'}") from None
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path, digest

    async def _headers(self, client) -> dict:
        if not self.api_key:
            return {}
        if not _is_jwt(self.api_key):
            return {"Authorization": f"Token {self.api_key}"}
        if self._access is None or self._access[1] < time.time() + 30:
            r = await client.post(urljoin(self.ls_url + "/", "api/token/refresh/"), json={"refresh": self.api_key})
            if r.status_code != 200 or "access" not in r.json():
                raise BadInput(502, f"Label Studio refused the personal access token (LABEL_STUDIO_API_KEY) at "
                                    f"/api/token/refresh/ ({r.status_code}); copy a fresh one from Account & "
                                    "Settings > Personal Access Token")
            access = r.json()["access"]
            self._access = (access, _jwt_expiry(access))
        return {"Authorization": f"Bearer {self._access[0]}"}


async def _download(client, url: str, headers: dict, path: Path, limit: int, what: str) -> str:
    digest, size = hashlib.sha256(), 0
    async with client.stream("GET", url, headers=headers) as r:
        if r.status_code in (401, 403):
            raise BadInput(502, f"{_short(url)} refused sam2kit ({r.status_code}) fetching the task's {what}: "
                                "give sam2kit serve Label Studio's API key (LABEL_STUDIO_API_KEY) and address "
                                "(LABEL_STUDIO_URL)")
        if r.status_code != 200:
            raise BadInput(502, f"fetching the task's {what} from {_short(url)} got HTTP {r.status_code}; check "
                                "that the task's URL is right")
        length = r.headers.get("content-length")
        if length and length.isdigit() and int(length) > limit:
            raise BadInput(413, f"the task's {what} is {int(length) / 1e6:.1f} MB, over this server's limit of "
                                f"{limit / 1e6:g} MB (--fetch-max-mb)")
        with open(path, "wb") as f:
            async for chunk in r.aiter_bytes(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise BadInput(413, f"the task's {what} is larger than this server's limit of {limit / 1e6:g} "
                                        "MB (--fetch-max-mb)")
                digest.update(chunk)
                f.write(chunk)
    if size == 0:
        raise BadInput(502, f"the task's {what} at {_short(url)} is empty")
    return digest.hexdigest()


def _short(url: str) -> str:
    p = urlparse(url)
    return f"{p.scheme}://{p.netloc}{p.path[:80]}"


def _jwt_parts(token: str):
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None


def _is_jwt(token: str) -> bool:
    return isinstance(_jwt_parts(token), dict)


def _jwt_expiry(token: str) -> float:
    claims = _jwt_parts(token) or {}
    return float(claims.get("exp", time.time() + 240))
