"""A folder being filled with numbered JPEG/PNG frames, taken in number order as they appear."""

from __future__ import annotations

import heapq
import os
import re
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np

from sam2kit.errors import StreamError
from sam2kit.video.sources.base import DEFAULT_TIMEOUT_S, IndexRanges, LiveSource, _why

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def _frame_number(name: str) -> int | None:
    """The frame number of a JPEG/PNG file name (its last digits), None for other files."""
    stem, ext = os.path.splitext(name)
    if name.startswith(".") or ext.lower() not in IMAGE_EXTENSIONS:
        return None
    m = re.search(r"(\d+)$", stem)
    return int(m.group(1)) if m else None


FOLLOW_MODES = ("auto", "notify", "poll")
BATCH = 64  # (notify) frames made ready at a time
RECENT_NAMES = 256  # names of the last frames taken: events that come after a frame was taken


class FolderSource(LiveSource):
    """Numbered JPEG/PNG frames of a folder that is still being filled, taken in number order
    as they appear. A frame is taken once a higher-numbered one exists or its size and time
    have not changed for ``settle`` seconds (so a frame being written is not read half-way).
    A frame that appears numbered at or below one already taken is late: it is skipped, and
    its number goes to ``late`` (an :class:`IndexRanges`: ``len(source.late)`` of them). The
    stream ends when no new frame has come for ``idle_timeout`` seconds.

    ``follow``: how new frames are seen. ``"notify"``: the OS tells (watchdog: inotify on
    Linux, FSEvents, ReadDirectoryChangesW); the folder is listed once, at the start, so the
    cost of a new frame does not grow with the files already there. ``"poll"``: the folder is
    listed every ``poll`` seconds (every name read each time: for folders on network file
    systems, which send no notifications). ``"auto"``: notify, or poll where watchdog is not
    installed or the OS refuses a watch (``follow_note`` says why). ``follow_mode`` is the one
    used. ``listings`` counts the folder's listings, for a check that the cost stays flat.
    ``start_after``: a frame number; frames numbered at or below it were taken before (a run
    resumed on a folder that keeps its old frames): they are passed over, not counted late."""

    kind = "folder"

    def __init__(self, folder: Path, idle_timeout: float = DEFAULT_TIMEOUT_S, poll: float = 0.05,
                 settle: float = 0.2, follow: str = "auto", start_after: int | None = None):
        super().__init__(str(folder))
        if not folder.is_dir():
            raise ValueError(f"{folder} is not a folder; --follow watches a folder being filled with "
                             "numbered JPEG/PNG frames")
        if follow not in FOLLOW_MODES:
            raise ValueError(f"follow must be one of {', '.join(FOLLOW_MODES)}, got {follow!r}")
        self.folder, self.idle_timeout, self.poll, self.settle = folder, idle_timeout, poll, settle
        self._last_number = start_after
        self._primed = start_after is None  # (poll) whether a listing has named the frames passed over
        self._seen: dict[str, tuple] = {}  # name -> (size, mtime, first time seen so)
        self._listed: set[str] = set()  # (poll) names at or below _last_number in the last listing
        self.late = IndexRanges()
        self.listings = 0
        self.follow_mode, self.follow_note, self._watch = "poll", None, None
        if follow != "poll":
            self._start_watch(follow == "notify")
        self._it = self._frames()
        try:
            self._first = next(self._it, None)
        except BaseException:
            self.close()
            raise
        if self._first is None:
            self.close()
            raise ValueError(f"no numbered JPEG/PNG frame appeared in {folder} within "
                             f"{idle_timeout:g} s; start the writer first, or wait longer (--idle-timeout)")

    def _start_watch(self, required: bool) -> None:
        try:
            self._watch = _Watch(self.folder)
        except (ImportError, OSError) as e:
            why = ("watchdog is not installed (pip install watchdog, or pip install 'sam2kit[video]')"
                   if isinstance(e, ImportError) else f"the OS refused to watch {self.folder}: {_why(e)}")
            if required:
                raise ValueError(f"cannot follow {self.folder} through OS notifications: {why}; "
                                 "or list the folder again and again (--follow-mode poll)") from None
            self.follow_note = f"listing the folder every {self.poll:g} s: {why}"
            return
        self.follow_mode = "notify"
        self._pending: list[tuple[int, str]] = []  # a heap of frames above the last taken
        self._queued: set[str] = set()
        self._recent: deque[str] = deque(maxlen=RECENT_NAMES)
        self._add_names(self._list(), new=False)  # what was there before the watch began

    def _list(self) -> list[str]:
        self.listings += 1
        with os.scandir(self.folder) as it:
            return [e.name for e in it]

    def _add_names(self, names, new: bool) -> None:
        """(notify) Frames among ``names`` enter the queue; a new one at or below the last taken
        is late."""
        for name in names:
            n = _frame_number(name)
            if n is None or name in self._queued:
                continue
            if self._last_number is not None and n <= self._last_number:
                if new and name not in self._recent:
                    self.late.append(n)
                    self._recent.append(name)
                continue
            heapq.heappush(self._pending, (n, name))
            self._queued.add(name)

    def _ready(self) -> list[tuple[int, Path]]:
        if self.follow_mode == "notify":
            created, other = self._watch.take()
            self._add_names(created, new=True)
            self._add_names(other, new=False)
            head = [heapq.heappop(self._pending) for _ in range(min(BATCH + 1, len(self._pending)))]
            for item in head:
                heapq.heappush(self._pending, item)  # (the first ones in order, at a cost of log n each)
            files = [(n, self.folder / name) for n, name in head]
        else:
            numbered = [(n, name) for name in self._list() if (n := _frame_number(name)) is not None]
            if self._last_number is not None:
                self._note_late([(n, name) for n, name in numbered if n <= self._last_number])
                numbered = [(n, name) for n, name in numbered if n > self._last_number]
            files = [(n, self.folder / name) for n, name in sorted(numbered)]
        now, ready = time.monotonic(), []
        self._seen = {p.name: self._seen[p.name] for _, p in files[:2] if p.name in self._seen}
        for k, (n, p) in enumerate(files):
            later = k + 1 < len(files)
            try:
                st = p.stat()
            except OSError:
                self._forget(p.name)  # gone before it was read
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
            if len(ready) >= BATCH and self.follow_mode == "notify":
                break  # a folder full of frames is taken a batch at a time
        return ready

    def _forget(self, name: str) -> None:
        if self.follow_mode == "notify" and name in self._queued:
            self._queued.discard(name)
            self._pending = [(n, m) for n, m in self._pending if m != name]
            heapq.heapify(self._pending)

    def _taken(self, n: int, p: Path) -> None:
        self._last_number = n
        if self.follow_mode == "notify":
            while self._pending and self._pending[0][0] <= n:
                self._queued.discard(heapq.heappop(self._pending)[1])
            self._recent.append(p.name)
        else:
            self._listed.add(p.name)

    def _note_late(self, below: list[tuple[int, str]]) -> None:
        """(poll) Frames at or below the last one taken that are neither taken nor late in an
        earlier listing have just appeared: late. (What this holds is the names of the
        folder's frames already passed, as the listing itself holds every name.)"""
        for n, name in below:
            if name not in self._listed and self._primed:
                self.late.append(n)
        self._primed = True
        self._listed = {name for _, name in below}

    def _frames(self):
        from PIL import Image

        idle_since = time.monotonic()
        while not self._closed:
            ready = self._ready()
            for n, p in ready:
                try:
                    with Image.open(p) as im:
                        arr = np.asarray(im.convert("RGB"))
                except FileNotFoundError:
                    self._forget(p.name)
                    continue
                except (OSError, SyntaxError, ValueError) as e:
                    raise StreamError(f"cannot read frame {p}: {_why(e)}; the file is damaged or "
                                      "not a JPEG/PNG image") from None
                self._taken(n, p)
                yield self._fit(arr)
                idle_since = time.monotonic()  # time spent waiting for the consumer is not idle
            if not ready:
                if time.monotonic() - idle_since > self.idle_timeout:
                    return
                if self.follow_mode == "notify" and not self._pending:
                    self._watch.wait(min(1.0, self.idle_timeout))  # until the OS says something changed
                else:
                    time.sleep(self.poll)

    def __iter__(self):
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        yield from self._it

    def close(self) -> None:
        super().close()
        if self._watch is not None:
            self._watch.stop()


def _frame_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


class _Watch:
    """The names the OS reports as created, moved in or written in ``folder`` (watchdog's
    observer: inotify on Linux), collected until taken."""

    def __init__(self, folder: Path):
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        watch = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event):
                if event.is_directory:
                    return
                path = getattr(event, "dest_path", "") or event.src_path
                if event.event_type in ("created", "moved", "modified", "closed"):
                    watch._note(os.path.basename(os.fsdecode(path)), event.event_type in ("created", "moved"))

        self._cond = threading.Condition()
        self._created: list[str] = []
        self._other: list[str] = []
        self._observer = Observer()
        self._observer.schedule(Handler(), str(folder), recursive=False)
        self._observer.daemon = True
        self._observer.start()

    def _note(self, name: str, created: bool) -> None:
        if not _frame_name(name):
            return
        with self._cond:
            (self._created if created else self._other).append(name)
            self._cond.notify_all()

    def take(self) -> tuple[list[str], list[str]]:
        """(names created or moved in, names otherwise changed) since the last call."""
        with self._cond:
            created, other, self._created, self._other = self._created, self._other, [], []
        return created, other

    def wait(self, timeout: float) -> None:
        with self._cond:
            if not (self._created or self._other):
                self._cond.wait(timeout)

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=2.0)


# ---- opening a source ---------------------------------------------------------------------
