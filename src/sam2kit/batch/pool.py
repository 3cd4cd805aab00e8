"""Where items run on one machine: in the driver's own process (one worker), or in N worker
processes (started with ``spawn``; each loads the model once and uses ``threads`` torch
threads). A backend takes items with ``submit`` while fewer than ``slots`` are out, and
``wait`` returns finished ones as (WorkItem, ItemResult) pairs; a worker process that dies
fails its item (the driver retries it) and is replaced.

Ray actors (``ray_backend.py``) and the benchmark's simulated cluster follow the same
interface, so that the driver's scheduling and ledger code is the same for all of them.
"""

from __future__ import annotations

import multiprocessing as mp
from collections import deque
from multiprocessing.connection import wait as wait_any

from sam2kit.batch.worker import BatchSpec, ItemResult, ItemRunner, WorkItem, process_main


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


class ProcessBackend:
    """``n`` worker processes, one item each at a time."""

    def __init__(self, spec: BatchSpec, n: int):
        self.spec, self.slots = spec, n
        self.description = f"{n} worker processes, {spec.threads or 'default'} threads each"
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
                w.work = self.queue.popleft()
                w.conn.send(w.work)

    def wait(self, timeout: float) -> list[tuple[WorkItem, ItemResult]]:
        done: list[tuple[WorkItem, ItemResult]] = []
        watch = {w.conn: w for w in self.workers}
        watch.update({w.process.sentinel: w for w in self.workers})
        for ready in wait_any(list(watch), timeout):
            w = watch[ready]
            if ready is w.conn and not w.conn.closed and w.conn.poll():
                self._message(w, done)
            elif ready is w.process.sentinel and not w.process.is_alive():
                self._died(w, done)
        self._dispatch()
        return done

    def _message(self, w: _Worker, done: list) -> None:
        try:
            msg = w.conn.recv()
        except (EOFError, OSError):
            return  # the sentinel reports the death
        if msg[0] == "init_error":
            raise InitError(msg[1])
        if msg[0] == "ready":
            w.ready = True
        elif msg[0] == "result" and w.work is not None and msg[1] == w.work.id:
            done.append((w.work, msg[2]))
            w.work = None

    def _died(self, w: _Worker, done: list) -> None:
        while w.conn.poll():  # a result sent just before dying still counts
            self._message(w, done)
        if w.work is not None:
            done.append((w.work, ItemResult(
                False, 0.0, w.name, error=f"the worker process died (exit code {w.process.exitcode}) "
                "while making this item: out of memory, or a crash in native code")))
            w.work = None
        if not w.ready:
            raise InitError(f"worker process {w.name} died while loading the model "
                            f"(exit code {w.process.exitcode})")
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
