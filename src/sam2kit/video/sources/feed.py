"""``FrameFeed``: a live source read on a thread of its own into a small queue (real time drops
the oldest waiting frames; otherwise the reader waits)."""

from __future__ import annotations

import threading
import time
from collections import deque

from sam2kit.errors import StreamError
from sam2kit.video.sources.base import IndexRanges, LiveSource, _why


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
