"""What the server keeps between requests, all of it bounded.

``ImageStore``: pictures by content (the same bytes get the same ``image_id``, so a picture
uploaded twice is encoded once), each with its embedding and the logits of its recent masks;
at most ``max_images``, least recently used dropped first. ``VideoStore``: video sessions, at
most ``max_sessions`` (opening one more closes the least recently used idle one) and closed
after ``session_ttl`` idle seconds. A request for something dropped gets 404 saying it expired.
Both live on the event loop's thread; model work on them runs on the executor, one job at a
time per session (its ``lock``).
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sam2kit.image.predictor import ImageEmbedding
from sam2kit.video.session import VideoSession

LOGITS_PER_IMAGE = 64  # low-res logits kept per picture for mask_input
EXPIRED_REMEMBERED = 4096  # ids remembered as expired (to say so instead of "unknown")


class Gone(Exception):
    """An id that is unknown, or that expired; the message says which."""


class Busy(Exception):
    """Every session is in use; nothing can be evicted to make room."""


@dataclass
class ImageEntry:
    image_id: str
    path: Path
    owned: bool  # a copy of ours in the work folder, deleted with the entry
    width: int
    height: int
    embedding: ImageEmbedding | None = None
    ready: asyncio.Future | None = None  # set while the embedding is being computed
    logits: OrderedDict = field(default_factory=OrderedDict)  # logits_id -> [1, h, w] float32

    def keep_logits(self, logits: np.ndarray) -> str:
        key = secrets.token_urlsafe(9)
        self.logits[key] = logits
        while len(self.logits) > LOGITS_PER_IMAGE:
            self.logits.popitem(last=False)
        return key


class _Expiring:
    """Remembers recently dropped ids with the reason, so a late request hears what happened."""

    def __init__(self):
        self._gone: OrderedDict[str, str] = OrderedDict()

    def forget(self, key: str, why: str) -> None:
        self._gone[key] = why
        while len(self._gone) > EXPIRED_REMEMBERED:
            self._gone.popitem(last=False)

    def missing(self, kind: str, key: str) -> Gone:
        why = self._gone.get(key)
        if why is None:
            return Gone(f"no {kind} {key!r} on this server; open it first")
        return Gone(f"{kind} {key!r} expired ({why}); open it again")


class ImageStore(_Expiring):
    def __init__(self, max_images: int):
        super().__init__()
        self.max_images = max_images
        self._entries: OrderedDict[str, ImageEntry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, image_id: str) -> ImageEntry:
        entry = self._entries.get(image_id)
        if entry is None:
            raise self.missing("image", image_id)
        self._entries.move_to_end(image_id)
        return entry

    def find(self, image_id: str) -> ImageEntry | None:
        return self._entries.get(image_id)

    def add(self, entry: ImageEntry) -> None:
        self._entries[entry.image_id] = entry
        while len(self._entries) > self.max_images:
            _, old = self._entries.popitem(last=False)
            self._drop(old, f"more than {self.max_images} pictures were opened since it was last used")

    def remove(self, image_id: str, why: str = "deleted") -> None:
        entry = self._entries.pop(image_id, None)
        if entry is None:
            raise self.missing("image", image_id)
        self._drop(entry, why)

    def _drop(self, entry: ImageEntry, why: str) -> None:
        self.forget(entry.image_id, why)
        if entry.owned:
            entry.path.unlink(missing_ok=True)

    def clear(self) -> None:
        for image_id in list(self._entries):
            self.remove(image_id, "the server stopped")


@dataclass
class VideoEntry:
    session_id: str
    state: VideoSession
    path: Path
    owned: bool
    fps: float | None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    propagating: bool = False
    cancel: threading.Event = field(default_factory=threading.Event)
    last_used: float = field(default_factory=time.monotonic)
    closed: bool = False

    @property
    def busy(self) -> bool:
        return self.propagating or self.lock.locked()

    def touch(self) -> None:
        self.last_used = time.monotonic()


class VideoStore(_Expiring):
    def __init__(self, max_sessions: int, ttl: float):
        super().__init__()
        self.max_sessions, self.ttl = max_sessions, ttl
        self._entries: OrderedDict[str, VideoEntry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, session_id: str) -> VideoEntry:
        entry = self._entries.get(session_id)
        if entry is None:
            raise self.missing("video session", session_id)
        self._entries.move_to_end(session_id)
        entry.touch()
        return entry

    def make_room(self) -> list[VideoEntry]:
        """Take out least recently used idle sessions until one more fits; Busy if none can
        go. Returns those taken out, for the caller to close."""
        out = []
        while len(self._entries) >= self.max_sessions:
            victim = next((e for e in self._entries.values() if not e.busy), None)
            if victim is None:
                raise Busy(f"all {self.max_sessions} video sessions are busy; try again when one is done "
                           "or close one (DELETE /api/videos/{id})")
            out.append(self.take(victim.session_id, f"more than {self.max_sessions} videos were opened "
                                                    "since it was last used"))
        return out

    def add(self, entry: VideoEntry) -> None:
        self._entries[entry.session_id] = entry

    def take(self, session_id: str, why: str) -> VideoEntry:
        """Remove a session from the table (the caller closes it)."""
        entry = self._entries.pop(session_id, None)
        if entry is None:
            raise self.missing("video session", session_id)
        entry.closed = True
        entry.cancel.set()
        self.forget(session_id, why)
        return entry

    def idle(self) -> list[VideoEntry]:
        """Take out the sessions idle for longer than the TTL."""
        now = time.monotonic()
        stale = [e.session_id for e in self._entries.values() if not e.busy and now - e.last_used > self.ttl]
        return [self.take(sid, f"idle for more than {self.ttl:g} s") for sid in stale]

    def all(self) -> list[VideoEntry]:
        return list(self._entries.values())


def close_entry(entry: VideoEntry) -> None:
    """Close a session taken out of the table (frames, results, spill folder, its upload)."""
    entry.state.close()
    if entry.owned:
        entry.path.unlink(missing_ok=True)
