"""Model work off the event loop: two lanes of threads and a bounded queue.

``await executor.run(fn, *args, lane=...)`` runs ``fn`` on a thread of its lane:

- ``interactive`` (one thread): what a person is waiting for now (a click on a picture or a
  video frame, opening a picture);
- ``bulk`` (``workers - 1`` threads, at least one): long work that streams or can wait
  (tracking a video frame by frame, segmenting everything, exports).

Bulk threads run at the lowest CPU priority (``nice`` 19, Linux; the worker threads their
matrix products start inherit it), so a click computed while a video is being tracked gets the
cores, and tracking takes whatever the clicks leave; alone, each lane runs at full speed.

At most ``workers + queue`` jobs are accepted at once, both lanes together; one more raises
``Busy`` at once (the server answers 503 with ``Retry-After``), so a burst of requests costs a
refusal, not memory. A job whose caller went away (a closed connection) still finishes; the
cancelled caller waits for it before it unwinds, so whatever it holds (a session's lock) is
held until the job is done.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

LANES = ("interactive", "bulk")
BULK_NICE = 19


class Busy(Exception):
    """No room for another model job; ``retry_after`` seconds is a fair wait."""

    def __init__(self, retry_after: int):
        super().__init__(f"the server is busy ({retry_after} s)")
        self.retry_after = retry_after


def _lower_priority() -> None:
    """Give the calling thread (and the threads it starts later) the lowest CPU priority."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BULK_NICE)
    except (AttributeError, OSError):  # not Linux, or not allowed: no priorities, still correct
        pass


class ModelExecutor:
    def __init__(self, workers: int, queue: int):
        self.workers, self.capacity = workers, workers + queue
        self._pools = {
            "interactive": ThreadPoolExecutor(1, thread_name_prefix="sam2kit-interactive"),
            "bulk": ThreadPoolExecutor(max(1, workers - 1), thread_name_prefix="sam2kit-bulk",
                                       initializer=_lower_priority),
        }
        self._lock = threading.Lock()
        self._outstanding = 0
        self._mean_s = 0.5  # running mean of job durations, for Retry-After
        self.completed = 0
        self.refused = 0

    @property
    def outstanding(self) -> int:
        return self._outstanding

    def _take(self) -> None:
        with self._lock:
            if self._outstanding >= self.capacity:
                self.refused += 1
                waves = math.ceil((self._outstanding + 1) / self.workers)
                raise Busy(max(1, math.ceil(waves * self._mean_s)))
            self._outstanding += 1

    def _give(self, seconds: float) -> None:
        with self._lock:
            self._outstanding -= 1
            self.completed += 1
            self._mean_s = 0.9 * self._mean_s + 0.1 * seconds

    def _timed(self, fn, args):
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self._give(time.perf_counter() - t0)

    async def run(self, fn, *args, lane: str = "interactive"):
        """``fn(*args)`` on a thread of ``lane``; Busy when the queue is full."""
        pool = self._pools[lane]
        self._take()
        try:
            future = pool.submit(self._timed, fn, args)
        except RuntimeError:  # shutting down
            self._give(0.0)
            raise Busy(5) from None
        job = asyncio.wrap_future(future)
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            # the caller went away: the job still runs to its end; wait for it before unwinding
            await asyncio.wait([job])
            raise

    def shutdown(self) -> None:
        for pool in self._pools.values():
            pool.shutdown(wait=True, cancel_futures=True)
