"""What every live source shares: the ``LiveSource`` interface (frames one by one, all at the
first frame's size), frames already in memory (``IterSource``), and ``IndexRanges``, a bounded
record of frame numbers."""

from __future__ import annotations

import re

import numpy as np

from sam2kit.video.io import frame_size
from sam2kit.video.sources.health import SourceHealth
from sam2kit.video.sources.ranges import IndexRanges  # noqa: F401 - re-exported

DEFAULT_TIMEOUT_S = 10.0  # a source silent this long has stalled (and the time to connect)
DEFAULT_OPEN_TIMEOUT_S = 10.0  # to connect to a network stream and read its first frame
DEFAULT_RECONNECT_DELAY_S = 1.0  # the wait before the first attempt to reopen; doubled after each failure
RECONNECT_MAX_DELAY_S = 30.0  # ... up to this


class LiveSource:
    """Frames of a live source. ``name`` (for messages), ``kind`` (camera, network, pipe,
    file, folder, frames), ``live`` (a camera or network stream: frames come at the sender's
    pace whether read or not, so a real-time feed is the default), ``fps`` (None if unknown),
    ``width``/``height`` (of the first frame), ``reconnects`` (how many times it reopened),
    ``health`` (a :class:`~sam2kit.video.sources.health.SourceHealth`: damaged, resized and
    lost frames). Iterate once; ``close()`` (or ``with``) releases it."""

    kind = "frames"
    live = False
    fps: float | None = None
    reconnects = 0

    def __init__(self, name: str):

        self.name = name
        self.width = self.height = None
        self.health = SourceHealth()
        self._closed = False

    def __iter__(self):
        raise NotImplementedError

    def close(self) -> None:
        self._closed = True

    def stall_limit(self, timeout: float | None) -> float | None:
        """How long a reader of this source should wait for a frame before calling it stalled,
        given the caller's ``timeout``: a source that times out (and reopens) itself gets the
        time it may take for that, a folder None (it ends on its own idle timeout)."""
        if self.kind == "folder":
            return None
        longest = getattr(self, "longest_silence", None)
        if longest is not None and timeout is not None and getattr(self, "reconnect", 0):
            limit = longest()
            return None if limit is None else max(timeout, limit + 1.0)
        return timeout

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _fit(self, arr: np.ndarray) -> np.ndarray:
        """Frames keep the first frame's size (a camera that changes mode, a new stream): a
        frame of another size is scaled to it and counted (``health.resized_frames``)."""
        if self.width is None:
            self.height, self.width = arr.shape[:2]
        elif arr.shape[:2] != (self.height, self.width):
            self.health.resized(arr.shape[1], arr.shape[0])
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


def _why(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return re.sub(r"^\[Errno -?\d+\] ", "", text)
