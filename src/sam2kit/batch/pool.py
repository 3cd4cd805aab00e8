"""Where items run on one machine: in the driver's own process (one worker), or in N worker
processes (started with ``spawn``; each loads the model once and uses ``threads`` torch
threads). A backend takes items with ``submit`` while fewer than ``slots`` are out, and
``wait`` returns finished ones as (WorkItem, ItemResult) pairs; a worker process that dies
fails its item (the driver retries it) and is replaced. With ``item_timeout``, an item that
takes longer is failed as timed out, its worker process killed (SIGKILL: a hang in native code
or in a blocking read ignores anything gentler) and replaced.

Ray actors (``ray_backend.py``) and the benchmark's simulated cluster follow the same
interface, so that the driver's scheduling and ledger code is the same for all of them.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections import deque
from multiprocessing.connection import wait as wait_any

from sam2kit.batch.worker import BatchSpec, ItemResult, ItemRunner, WorkItem, process_main


def exit_text(code: int | None) -> str:
    """A process's end as words: ``exit code 3``, ``killed by SIGSEGV``."""
    import signal

    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class InitError(RuntimeError):
    """A worker could not start (the model cannot be loaded): the whole batch stops."""


class InProcessBackend:
    """One worker, the driver's own process: ``wait`` makes the submitted item."""

    slots = 1
    description = "1 worker (this process)"

    def __init__(self, spec: BatchSpec):
        self.runner = ItemRunner(spec)
        self.queue: deque[WorkItem] = deque()

    def submit(self, work: WorkItem) -> None:
        self.queue.append(work)

    def wait(self, timeout: float) -> list[tuple[WorkItem, ItemResult]]:
        if not self.queue:
            return []
        work = self.queue.popleft()
        return [(work, self.runner.run(work))]

    def close(self) -> None:
        self.queue.clear()


class _Worker:
    def __init__(self, ctx, spec: BatchSpec, name: str):
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=process_main, args=(child, spec, name), name=name, daemon=True)
        self.process.start()
        child.close()
        self.name = name
        self.ready = False
        self.work: WorkItem | None = None
        self.since = 0.0  # time.monotonic() when it was given its item


class ProcessBackend:
    """``n`` worker processes, one item each at a time; ``item_timeout``: seconds an item may
    take (None: no limit)."""

    def __init__(self, spec: BatchSpec, n: int, item_timeout: float | None = None):
        self.spec, self.slots, self.item_timeout = spec, n, item_timeout
        self.description = (f"{n} worker process{'es' * (n > 1)}, {spec.threads or 'default'} threads each"
                            + (f", {item_timeout:g} s an item at most" if item_timeout else ""))
        self.ctx = mp.get_context("spawn")  # no fork: torch and its thread pools do not survive one
        self.workers = [_Worker(self.ctx, spec, f"worker-{k}") for k in range(n)]
        self.queue: deque[WorkItem] = deque()
        self.started = n

    def submit(self, work: WorkItem) -> None:
        self.queue.append(work)
        self._dispatch()

    def _dispatch(self) -> None:
        for w in self.workers:
            if w.ready and w.work is None and self.queue:
                w.work, w.since = self.queue.popleft(), time.monotonic()
                w.conn.send(w.work)

    def wait(self, timeout: float) -> list[tuple[WorkItem, ItemResult]]:
        done: list[tuple[WorkItem, ItemResult]] = []
        watch = {w.conn: w for w in self.workers}
        watch.update({w.process.sentinel: w for w in self.workers})
        if self.item_timeout:  # wake up for the first item that runs out of time
            busy = [w.since + self.item_timeout - time.monotonic() for w in self.workers if w.work]
            timeout = max(0.0, min([timeout, *busy]))
        for ready in wait_any(list(watch), timeout):
            w = watch[ready]
            if ready is w.conn and not w.conn.closed and w.conn.poll():
                self._message(w, done)
            elif ready is w.process.sentinel and not w.process.is_alive():
                self._died(w, done)
        if self.item_timeout:
            for w in list(self.workers):
                if w.work is not None and time.monotonic() - w.since >= self.item_timeout:
                    self._timed_out(w, done)
        self._dispatch()
        return done

    def _timed_out(self, w: _Worker, done: list) -> None:
        """Kill the worker of an item past its time; the item fails as timed out (the
        driver retries it) and a fresh worker takes the slot."""
        w.process.kill()
        w.process.join()
        self._drain(w, done)  # it may have finished at the last moment
        if w.work is not None:
            done.append((w.work, ItemResult(
                False, time.monotonic() - w.since, w.name,
                error=f"timed out after {self.item_timeout:g} s (--item-timeout): its worker process "
                      "was killed and replaced")))
            w.work = None
        self._replace(w)

    def _message(self, w: _Worker, done: list) -> bool:
        """Handle one message of ``w``; False when its pipe is closed (it died)."""
        try:
            msg = w.conn.recv()
        except (EOFError, OSError):
            return False  # the sentinel reports the death
        if msg[0] == "init_error":
            raise InitError(msg[1])
        if msg[0] == "ready":
            w.ready = True
        elif msg[0] == "result" and w.work is not None and msg[1] == w.work.id:
            done.append((w.work, msg[2]))
            w.work = None
        return True

    def _drain(self, w: _Worker, done: list) -> None:
        """The messages a dead worker sent before dying (a result sent just before still counts)."""
        while not w.conn.closed and w.conn.poll() and self._message(w, done):
            pass

    def _died(self, w: _Worker, done: list) -> None:
        if w not in self.workers:  # (replaced already in this round)
            return
        self._drain(w, done)
        if w.work is not None:
            done.append((w.work, ItemResult(
                False, time.monotonic() - w.since, w.name,
                error=f"the worker process died ({exit_text(w.process.exitcode)}) while making this item: "
                      "out of memory, a crash in native code, or killed")))
            w.work = None
        if not w.ready:
            raise InitError(f"worker process {w.name} died while loading the model "
                            f"(exit code {w.process.exitcode})")
        self._replace(w)

    def _replace(self, w: _Worker) -> None:
        w.conn.close()
        k = self.workers.index(w)
        self.started += 1
        self.workers[k] = _Worker(self.ctx, self.spec, f"worker-{self.started - 1}")

    def close(self) -> None:
        for w in self.workers:
            if w.work is not None:  # interrupted mid-item: the ledger has it as not done
                w.process.kill()
            elif w.process.is_alive():
                try:
                    w.conn.send(None)
                except OSError:
                    pass
        for w in self.workers:
            w.process.join(timeout=10)
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            w.conn.close()
        self.queue.clear()
