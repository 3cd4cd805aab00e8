"""Live sources: frames that arrive one by one, cannot be sought in and may never end.

``open_stream(source)`` gives a :class:`LiveSource`; iterating it yields HxWx3 uint8 RGB
arrays, all at the first frame's size (a frame of another size is scaled to it). Opening reads
the first frame, so ``width``, ``height`` and a bad source are known at once. Sources:

* a camera: ``/dev/video0`` (Linux, v4l2) or ``camera=N`` (``/dev/videoN`` on Linux,
  AVFoundation device N on macOS, DirectShow ``video=NAME`` on Windows);
* a network stream FFmpeg opens: ``rtsp://`` (over TCP), ``rtmp://``, ``http(s)://``,
  ``udp://``, ``tcp://``, ``srt://``; ``timeout`` bounds the connection and every read, and
  ``reconnect=N`` reopens a stream that broke or stalled up to N times;
* ``"-"``: standard input (any container FFmpeg reads from a pipe: MPEG-TS, Matroska, ...),
  or a binary file object;
* a file in any container FFmpeg reads (judged by opening it, not by its extension);
* a folder being filled with numbered JPEG/PNG frames (``FolderSource``): new frames are
  taken in number order as they appear; the stream ends ``idle_timeout`` seconds after the
  last new one;
* frames already in memory (a list of arrays, an NxHxWx3 array, any iterable of frames).

``FrameFeed`` reads a source on a thread of its own into a small queue. A real-time feed drops
the oldest waiting frames when the consumer falls behind (latency stays bounded; dropped
frames are listed); otherwise the reader waits for the consumer and nothing is dropped.

A stream that breaks (a decoding error, a reset connection) or stalls (no frame for
``timeout`` seconds) raises :class:`StreamError`; its ``stalled`` tells which.
"""

from __future__ import annotations

import bisect
import os
import re
import sys
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np

from .video_io import frame_size

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp")
DEFAULT_TIMEOUT_S = 10.0
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


class StreamError(RuntimeError):
    """A live source broke or stalled; ``stalled`` is True for a stall (no frame in time)."""

    def __init__(self, message: str, stalled: bool = False):
        super().__init__(message)
        self.stalled = stalled


class IndexRanges:
    """A set of frame numbers kept as sorted inclusive ranges (``[[1, 3], [7, 7]]`` for 1, 2,
    3, 7), for frames dropped or skipped over a stream of any length: ``len()`` counts every
    number added; at most ``limit`` ranges are listed (the first ones; ``complete`` says
    whether all are), so what is held stays bounded however scattered the numbers. ``append``
    is thread-safe (a reader thread adds, the consumer reads)."""

    def __init__(self, limit: int | None = 1000):
        self.limit = limit
        self.count = 0
        self._ranges: list[list[int]] = []
        self._complete = True
        self._lock = threading.Lock()

    def append(self, i: int) -> None:
        i = int(i)
        with self._lock:
            self.count += 1
            r = self._ranges
            k = bisect.bisect_right(r, [i, float("inf")])  # first range starting after i
            if k and r[k - 1][1] >= i - 1:  # joins (or lies in) the range before
                r[k - 1][1] = max(r[k - 1][1], i)
                if k < len(r) and r[k][0] <= r[k - 1][1] + 1:  # and closes the gap to the next
                    r[k - 1][1] = r.pop(k)[1]
            elif k < len(r) and r[k][0] == i + 1:
                r[k][0] = i
            elif self.limit is None or len(r) < self.limit:
                r.insert(k, [i, i])
            else:
                self._complete = False

    def __len__(self) -> int:
        return self.count

    def __contains__(self, i) -> bool:
        with self._lock:
            k = bisect.bisect_right(self._ranges, [i, float("inf")])
            return bool(k) and self._ranges[k - 1][1] >= i

    @property
    def complete(self) -> bool:
        """Whether every number added is in ``ranges()`` (False once ``limit`` was reached)."""
        return self._complete

    def ranges(self) -> list[list[int]]:
        """A copy of the listed ranges, ``[[first, last], ...]`` in order."""
        with self._lock:
            return [list(r) for r in self._ranges]

    def __iter__(self):
        return (i for a, b in self.ranges() for i in range(a, b + 1))

    def __repr__(self):
        return f"IndexRanges({self.ranges()}, count={self.count})"


class LiveSource:
    """Frames of a live source. ``name`` (for messages), ``kind`` (camera, network, pipe,
    file, folder, frames), ``live`` (a camera or network stream: frames come at the sender's
    pace whether read or not, so a real-time feed is the default), ``fps`` (None if unknown),
    ``width``/``height`` (of the first frame), ``reconnects`` (how many times it reopened).
    Iterate once; ``close()`` (or ``with``) releases it."""

    kind = "frames"
    live = False
    fps: float | None = None
    reconnects = 0

    def __init__(self, name: str):
        self.name = name
        self.width = self.height = None
        self._closed = False

    def __iter__(self):
        raise NotImplementedError

    def close(self) -> None:
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _fit(self, arr: np.ndarray) -> np.ndarray:
        """Frames keep the first frame's size (a camera that changes mode, a new stream)."""
        if self.width is None:
            self.height, self.width = arr.shape[:2]
        elif arr.shape[:2] != (self.height, self.width):
            from PIL import Image
            arr = np.asarray(Image.fromarray(arr).resize((self.width, self.height), Image.BILINEAR))
        return arr

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r}, {self.kind}, {self.width}x{self.height})"


def check_frame(frame, what: str = "frame") -> np.ndarray:
    """An HxWx3 uint8 RGB array from an array or a PIL image; a clear ValueError otherwise."""
    frame_size(frame, what)
    return frame if isinstance(frame, np.ndarray) else np.asarray(frame.convert("RGB"))


class IterSource(LiveSource):
    """Frames from any iterable (a list, an NxHxWx3 array, a generator)."""

    def __init__(self, frames, name: str = "frames"):
        super().__init__(name)
        self._it = iter(frames)
        try:
            first = next(self._it)
        except StopIteration:
            raise ValueError("no frames: the sequence is empty") from None
        self._first = self._fit(check_frame(first, "frame 0"))

    def __iter__(self):
        yield self._first
        self._first = None
        for i, f in enumerate(self._it, 1):
            if self._closed:
                return
            yield self._fit(check_frame(f, f"frame {i}"))


class AVSource(LiveSource):
    """A camera, network stream, pipe or file read with PyAV, decoded as it arrives."""

    def __init__(self, target, kind: str, name: str, format: str | None = None,
                 options: dict | None = None, timeout: float | None = DEFAULT_TIMEOUT_S, reconnect: int = 0):
        super().__init__(name)
        try:
            import av
        except ImportError:
            raise ImportError("PyAV is needed to read video streams: pip install av "
                              "(or pip install 'sam2kit[video]')") from None
        self._av, self.kind = av, kind
        self.live = kind in ("camera", "network")
        self._target, self._format, self._options = target, format, dict(options or {})
        self.timeout, self.reconnect = timeout, reconnect
        self._container = None
        self._frames = None
        self._last = time.monotonic()
        try:
            self._open()
            self._first = next(self._frames, None)
        except (av.error.FFmpegError, OSError, StreamError) as e:
            self.close()
            raise ValueError(f"cannot read a video from {name}: {_why(e)}; {self._hint()}") from None
        except BaseException:
            self.close()
            raise
        if self._first is None:
            self.close()
            raise ValueError(f"{name} ended before its first frame; {self._hint()}")

    def _hint(self) -> str:
        return {"network": "check the address and that the sender is running (and reachable)",
                "camera": "check that the camera is connected and not in use by another program",
                "pipe": "pipe a video container FFmpeg reads from a stream (MPEG-TS, Matroska, "
                        "raw H.264; not an mp4 whose index is at its end)",
                }.get(self.kind, "is it a complete video FFmpeg can read?")

    def _open(self) -> None:
        av = self._av
        timeout = None if self.timeout is None else (self.timeout, self.timeout)
        self._container = av.open(self._target, format=self._format, options=self._options, timeout=timeout)
        if not self._container.streams.video:
            raise StreamError(f"{self.name} has no video stream (audio only?)")
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO" if self.kind in ("file",) else "SLICE"  # frame threads add latency
        rate = stream.average_rate or stream.guessed_rate
        if self.fps is None and rate:
            self.fps = float(rate)
        self._frames = self._decode(stream)

    def _decode(self, stream):
        for frame in self._container.decode(stream):
            self._last = time.monotonic()
            arr = frame.to_ndarray(format="rgb24")
            yield self._fit(np.array(arr, order="C"))  # own a compact copy; PyAV's buffer is freed

    def __iter__(self):
        av = self._av
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        while not self._closed:
            try:
                for arr in self._frames:
                    yield arr
                    if self._closed:
                        return
                return  # the stream ended
            except (av.error.FFmpegError, OSError) as e:
                if self._closed:
                    return
                # ExitError: PyAV's timeout interrupted a read that waited too long
                stalled = self.timeout is not None and (isinstance(e, av.error.ExitError) or
                                                        time.monotonic() - self._last >= 0.9 * self.timeout)
                what = (f"{self.name} stalled: no frame for {self.timeout:g} s" if stalled
                        else f"{self.name} broke: {_why(e)}")
                if self.reconnects >= self.reconnect:
                    raise StreamError(what, stalled) from None
                self.reconnects += 1
                self._close_container()
                try:
                    self._open()
                except (av.error.FFmpegError, OSError, StreamError) as e2:
                    raise StreamError(f"{what}; reconnecting ({self.reconnects} of {self.reconnect}) "
                                      f"failed: {_why(e2)}", stalled) from None

    def _close_container(self) -> None:
        self._frames = None
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - a broken stream may fail to close; it is gone anyway
                pass
            self._container = None

    def close(self) -> None:
        super().close()
        self._close_container()


def _why(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return re.sub(r"^\[Errno -?\d+\] ", "", text)


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

def camera_target(camera) -> tuple[str, str | None]:
    """(what to open, input format) for camera number or name ``camera`` on this platform."""
    text = str(camera)
    if sys.platform.startswith("linux"):
        return (f"/dev/video{text}" if text.isdigit() else text), "v4l2"
    if sys.platform == "darwin":
        return (f"{text}:none" if text.isdigit() else text), "avfoundation"
    if sys.platform.startswith("win"):
        if text.isdigit():
            raise ValueError("on Windows give the camera's name: --camera \"video=Integrated Camera\" "
                             "(`ffmpeg -list_devices true -f dshow -i dummy` lists them)")
        return (text if text.startswith("video=") else f"video={text}"), "dshow"
    raise ValueError(f"cameras are not supported on {sys.platform}; pipe the camera's video into `-`")


def classify(source) -> str:
    """camera, network, pipe, folder, file or frames: what ``open_stream`` would open."""
    if isinstance(source, LiveSource):
        return source.kind
    if isinstance(source, (str, Path)):
        text = str(source)
        if text == "-":
            return "pipe"
        scheme = text.split("://", 1)[0].lower() if "://" in text else None
        if scheme in NETWORK_SCHEMES:
            return "network"
        if re.fullmatch(r"/dev/video\d+", text):
            return "camera"
        return "folder" if Path(text).expanduser().is_dir() else "file"
    if hasattr(source, "read"):
        return "pipe"
    return "frames"


def open_stream(source=None, *, camera=None, timeout: float | None = DEFAULT_TIMEOUT_S, reconnect: int = 0,
                idle_timeout: float = DEFAULT_TIMEOUT_S, options: dict | None = None) -> LiveSource:
    """A :class:`LiveSource` for ``source`` (see the module docstring) or for ``camera`` (a
    number or a device name). ``timeout``: seconds to connect and to wait for each read of a
    camera, network stream, pipe or file (None: forever); ``reconnect``: how many times a
    network stream that breaks or stalls is reopened; ``idle_timeout``: how long a folder may
    go without a new frame before its stream ends; ``options``: FFmpeg options for PyAV
    (``{"video_size": "1280x720"}`` for a camera, ...). Raises ValueError (with the fix) for a
    source that cannot be opened, FileNotFoundError for a missing path."""
    if camera is not None:
        if source is not None:
            raise ValueError("give either a source or a camera, not both")
        target, fmt = camera_target(camera)
        return _camera(target, fmt, timeout, options)
    if isinstance(source, LiveSource):
        return source
    kind = classify(source)
    opts = dict(options or {})
    if kind in ("pipe", "network"):
        opts.setdefault("analyzeduration", "500000")  # µs of stream read before the first frame (FFmpeg: 5 s)
    if kind == "pipe":
        target = "pipe:0" if isinstance(source, (str, Path)) else source
        return AVSource(target, "pipe", "standard input" if target == "pipe:0" else "a file object",
                        options=opts, timeout=timeout)
    if kind == "network":
        url = str(source)
        if url.lower().startswith("rtsp"):
            opts.setdefault("rtsp_transport", "tcp")
        return AVSource(url, "network", url, options=opts, timeout=timeout, reconnect=reconnect)
    if kind == "camera":
        return _camera(str(source), "v4l2", timeout, options)
    if kind in ("folder", "file"):
        path = Path(str(source)).expanduser()
        if kind == "folder":
            return FolderSource(path, idle_timeout)
        if not path.exists():
            raise FileNotFoundError(f"no such video file, folder or device: {path}")
        return AVSource(str(path), "file", str(path), options=opts, timeout=timeout)
    if isinstance(source, np.ndarray) and source.ndim != 4:
        raise ValueError(f"an array of frames must have shape NxHxWx3, got {tuple(source.shape)}")
    try:
        return IterSource(source)
    except TypeError:
        raise TypeError(f"cannot read frames from a {type(source).__name__}: pass a URL, '-', a "
                        "camera, a video file, a folder, or an iterable of HxWx3 uint8 frames") from None


def _camera(target: str, fmt: str | None, timeout, options) -> AVSource:
    if fmt == "v4l2" and not os.path.exists(target):
        found = sorted(str(p) for p in Path("/dev").glob("video*"))
        listed = ", ".join(found) if found else "none here"
        raise ValueError(f"camera {target} does not exist (cameras: {listed}); plug one in, or give "
                         "one that exists (`v4l2-ctl --list-devices` names them)")
    return AVSource(target, "camera", f"camera {target}", format=fmt, options=options, timeout=timeout)


# ---- a reader thread and its queue --------------------------------------------------------

class FrameFeed:
    """Reads ``source`` on a thread into a queue of at most ``max_waiting`` frames.

    ``realtime``: when the queue is full the oldest waiting frame is dropped (its index goes
    to ``dropped``: a list, or an :class:`IndexRanges` for a stream of any length, whose
    numbers are then kept as a bounded set of ranges), so a frame is never older than
    ``max_waiting`` frames when taken; else
    the reader waits for room (nothing is dropped). ``get()`` returns ``(index, frame,
    arrival time)`` (index: the frame's number in the source, from 0; time:
    ``time.monotonic()`` when it was read), None when the source ended, and raises
    StreamError when it broke, or stalled: nothing came for ``stall_timeout`` seconds."""

    def __init__(self, source: LiveSource, realtime: bool, max_waiting: int | None = None,
                 stall_timeout: float | None = None, dropped: list | IndexRanges | None = None):
        self.source, self.realtime = source, realtime
        self.max_waiting = max_waiting or (2 if realtime else 4)
        self.stall_timeout = stall_timeout
        self.dropped = [] if dropped is None else dropped
        self.frames_read = 0
        self._q: deque = deque()
        self._cond = threading.Condition()
        self._done = False
        self._error: BaseException | None = None
        self._stop = False
        self._thread = threading.Thread(target=self._read, name="sam2kit-stream-reader", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for i, frame in enumerate(self.source):
                now = time.monotonic()
                with self._cond:
                    while not self.realtime and len(self._q) >= self.max_waiting and not self._stop:
                        self._cond.wait(0.1)
                    if self._stop:
                        return
                    if self.realtime and len(self._q) >= self.max_waiting:
                        self.dropped.append(self._q.popleft()[0])
                    self._q.append((i, frame, now))
                    self.frames_read = i + 1
                    self._cond.notify_all()
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            self._error = e
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def get(self, stop: threading.Event | None = None):
        """The next frame (see the class docstring); None also when ``stop`` is set."""
        started = time.monotonic()
        with self._cond:
            while True:
                if self._q:
                    item = self._q.popleft()
                    self._cond.notify_all()
                    return item
                if self._done:
                    if self._error is not None:
                        err, self._error = self._error, None
                        if isinstance(err, StreamError):
                            raise err
                        raise StreamError(f"{self.source.name} broke: {_why(err)}") from None
                    return None
                if stop is not None and stop.is_set():
                    return None
                waited = time.monotonic() - started
                if self.stall_timeout is not None and waited >= self.stall_timeout:
                    raise StreamError(f"{self.source.name} stalled: no frame for "
                                      f"{self.stall_timeout:g} s", stalled=True)
                self._cond.wait(0.05)

    def close(self) -> None:
        """Stop reading and release the source (a reader blocked in a read is left to end on
        its own: it is a daemon thread)."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=1.0)
        if not self._thread.is_alive():
            self.source.close()
