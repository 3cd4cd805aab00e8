"""A folder being filled with numbered JPEG/PNG frames, taken in number order as they appear."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import numpy as np

from sam2kit.errors import StreamError
from sam2kit.video.sources.base import DEFAULT_TIMEOUT_S, IndexRanges, LiveSource, _why

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def _frame_number(p: Path) -> int | None:
    m = re.search(r"(\d+)$", p.stem)
    return int(m.group(1)) if m else None


class FolderSource(LiveSource):
    """Numbered JPEG/PNG frames of a folder that is still being filled, taken in number order
    as they appear. A frame is taken once a higher-numbered one exists or its size and time
    have not changed for ``settle`` seconds (so a frame being written is not read half-way).
    A frame that appears numbered at or below one already taken is late: it is skipped, and
    its number goes to ``late`` (an :class:`IndexRanges`: ``len(source.late)`` of them). The
    stream ends when no new frame has come for ``idle_timeout`` seconds."""

    kind = "folder"

    def __init__(self, folder: Path, idle_timeout: float = DEFAULT_TIMEOUT_S, poll: float = 0.05,
                 settle: float = 0.2):
        super().__init__(str(folder))
        if not folder.is_dir():
            raise ValueError(f"{folder} is not a folder; --follow watches a folder being filled with "
                             "numbered JPEG/PNG frames")
        self.folder, self.idle_timeout, self.poll, self.settle = folder, idle_timeout, poll, settle
        self._last_number = None
        self._seen: dict[str, tuple] = {}  # name -> (size, mtime, first time seen so)
        self._listed: set[str] = set()  # names at or below _last_number in the last listing
        self.late = IndexRanges()
        self._it = self._frames()
        self._first = next(self._it, None)
        if self._first is None:
            raise ValueError(f"no numbered JPEG/PNG frame appeared in {folder} within "
                             f"{idle_timeout:g} s; start the writer first, or wait longer (--idle-timeout)")

    def _ready(self) -> list[tuple[int, Path]]:
        files = []
        with os.scandir(self.folder) as it:
            for e in it:
                p = Path(e.path)
                if e.name.startswith(".") or p.suffix.lower() not in IMAGE_EXTENSIONS:
                    continue
                n = _frame_number(p)
                if n is not None:
                    files.append((n, p))
        files.sort()
        if self._last_number is not None:
            self._note_late([(n, p) for n, p in files if n <= self._last_number])
            files = [(n, p) for n, p in files if n > self._last_number]
        now, ready = time.monotonic(), []
        self._seen = {p.name: self._seen[p.name] for _, p in files if p.name in self._seen}
        for k, (n, p) in enumerate(files):
            later = k + 1 < len(files)
            try:
                st = p.stat()
            except OSError:
                continue
            key = (st.st_size, st.st_mtime_ns)
            old = self._seen.get(p.name)
            if old is None or old[:2] != key:
                self._seen[p.name] = (*key, now)
                old = self._seen[p.name]
            if later or (st.st_size > 0 and now - old[2] >= self.settle):
                ready.append((n, p))
            else:
                break  # frames are taken in order: wait for this one
        return ready

    def _note_late(self, below: list[tuple[int, Path]]) -> None:
        """Frames at or below the last one taken that are neither taken nor late in an
        earlier listing have just appeared: late. (What this holds is the names of the
        folder's frames already passed, as the listing itself holds every name.)"""
        for n, p in below:
            if p.name not in self._listed:
                self.late.append(n)
        self._listed = {p.name for _, p in below}

    def _frames(self):
        from PIL import Image

        idle_since = time.monotonic()
        while not self._closed:
            ready = self._ready()
            for n, p in ready:
                try:
                    with Image.open(p) as im:
                        arr = np.asarray(im.convert("RGB"))
                except (OSError, SyntaxError, ValueError) as e:
                    raise StreamError(f"cannot read frame {p}: {_why(e)}; the file is damaged or "
                                      "not a JPEG/PNG image") from None
                self._last_number = n
                self._listed.add(p.name)
                yield self._fit(arr)
                idle_since = time.monotonic()  # time spent waiting for the consumer is not idle
            if not ready:
                if time.monotonic() - idle_since > self.idle_timeout:
                    return
                time.sleep(self.poll)

    def __iter__(self):
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        yield from self._it


# ---- opening a source ---------------------------------------------------------------------
