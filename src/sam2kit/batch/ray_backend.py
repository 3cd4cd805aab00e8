"""Items on Ray (``pip install 'sam2kit[ray]'``): a pool of actors, each holding one loaded
model (``--workers`` actors with ``--threads-per-worker`` CPUs and ``--gpus-per-worker`` GPUs
each); items go to them as actor tasks of ``--items-per-task`` items (default 1), two tasks in
flight per actor so that an actor never waits for the driver. Each task costs the driver
about half a millisecond of CPU (``benchmarks/batch.py``): past ~1,000 items/s, give several
items per task. Actors write the item's outputs themselves (a shared file system, or an object
store); results come back to the driver, which alone writes the ledger, so resuming works as
with local workers. An actor that dies (a crash, a lost node, ``ray.kill``) fails the task it
was making (the driver retries its items) and is replaced; the tasks queued behind it on that
actor had not started and go to the other actors without counting as an attempt. With
``item_timeout``, a task that runs longer than that (times its items) has its actor killed and
replaced and its items fail as timed out (Ray cannot interrupt a running actor task otherwise).

``--ray local`` starts a Ray runtime on this machine (127.0.0.1, no dashboard) for the batch
and stops it at the end; ``--ray ADDRESS`` joins a running cluster (``auto``, ``HOST:PORT`` or
``ray://HOST:10001``). A runtime already started in this process (e.g. by a notebook or a
test) is used as it is and left running.
"""

from __future__ import annotations

import itertools
import os
import time

from sam2kit.batch.pool import InitError
from sam2kit.batch.worker import BatchSpec, ItemResult, ItemRunner, WorkItem
from sam2kit.errors import InputError
from sam2kit.jobs.common import one_line

IN_FLIGHT_PER_ACTOR = 2
LOCAL_OBJECT_STORE_BYTES = 256 * 2**20  # results are small: no need for Ray's 30% of memory


def import_ray():
    try:
        import ray
    except ImportError:
        raise InitError("--ray needs Ray: pip install 'sam2kit[ray]'") from None
    return ray


def start_local(num_cpus: int, num_gpus: int | None = None):
    """A Ray runtime on this machine only (127.0.0.1, no dashboard, quiet)."""
    ray = import_ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
             object_store_memory=LOCAL_OBJECT_STORE_BYTES, log_to_driver=False,
             configure_logging=False, _node_ip_address="127.0.0.1")
    return ray


class RayWorker:
    """The actor: one model, one item at a time (Ray queues the second one in flight)."""

    def __init__(self, spec: BatchSpec, name: str):
        self.runner, self.init_error = None, None
        try:
            self.runner = ItemRunner(spec, name)
        except InputError as e:
            self.init_error = str(e)
        except Exception as e:  # noqa: BLE001 - reported to the driver, which stops the batch
            self.init_error = f"{e.__class__.__name__}: {one_line(e)}"

    def ready(self) -> tuple[str, str]:
        return ("init_error", self.init_error) if self.runner is None else ("ready", self.runner.name)

    def run(self, works: list[WorkItem]) -> list[ItemResult]:
        return [self.runner.run(w) for w in works]


class RayBackend:
    """``workers`` actors on the runtime at ``address`` (``local``: start one here).
    ``actor``: the actor class (RayWorker; the benchmark measures Ray's own cost per item
    with one that holds no model)."""

    def __init__(self, spec: BatchSpec, address: str, workers: int, threads: int,
                 gpus_per_worker: float = 0.0, items_per_task: int = 1, actor: type = RayWorker,
                 item_timeout: float | None = None):
        ray = self.ray = import_ray()
        self.started_here = not ray.is_initialized()
        if self.started_here:
            if address == "local":
                start_local(num_cpus=max(os.cpu_count() or 1, workers * threads))
            else:
                os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
                ray.init(address=address, log_to_driver=False, configure_logging=False)
        self.actor_class = ray.remote(num_cpus=threads, num_gpus=gpus_per_worker)(actor)
        self.spec, self.workers, self.made = spec, workers, 0
        self.per_task = items_per_task
        self.slots = workers * IN_FLIGHT_PER_ACTOR * items_per_task
        self.description = (f"Ray ({address}): {workers} actors, {threads} CPU{'s' * (threads > 1)}"
                            f"{f' and {gpus_per_worker:g} GPUs' if gpus_per_worker else ''} each"
                            f"{f', {items_per_task} items a task' if items_per_task > 1 else ''}"
                            f"{f', {item_timeout:g} s an item at most' if item_timeout else ''}")
        self.item_timeout, self.seq = item_timeout, itertools.count()
        self.actors = [self._new_actor() for _ in range(workers)]
        for status, text in ray.get([a.ready.remote() for a in self.actors]):
            if status == "init_error":
                self.close()
                raise InitError(text)
        self.out: dict = {}  # ObjectRef -> (the task's WorkItems, actor, sequence number)
        self.began: dict = {}  # ObjectRef -> time.monotonic() when it became its actor's running task
        self.pending: list[WorkItem] = []  # a task being filled
        self.warming: dict = {}  # id(actor) -> its ready() ref, while a replacement loads its model

    def _new_actor(self):
        self.made += 1
        return self.actor_class.remote(self.spec, f"ray-actor-{self.made - 1}")

    def submit(self, work: WorkItem) -> None:
        self.pending.append(work)
        if len(self.pending) >= self.per_task:
            self._send()

    def _send(self, works: list[WorkItem] | None = None) -> None:
        if works is None:
            works, self.pending = self.pending, []
        load = {id(a): 0 for a in self.actors}
        for _, actor, _ in self.out.values():
            load[id(actor)] = load.get(id(actor), 0) + 1
        actor = min(self.actors, key=lambda a: load[id(a)])
        ref = actor.run.remote(works)
        self.out[ref] = (works, actor, next(self.seq))
        if load[id(actor)] == 0 and id(actor) not in self.warming:
            self.began[ref] = time.monotonic()

    def _warmed(self) -> None:
        """Replacements that have loaded their model: their first task's time starts now."""
        for actor in [a for a in self.actors if id(a) in self.warming]:
            ref = self.warming[id(actor)]
            if self.ray.wait([ref], timeout=0)[0]:
                del self.warming[id(actor)]
                status, text = self.ray.get(ref)
                if status == "init_error":
                    raise InitError(text)
                rest = self._tasks_of(actor)
                if rest:
                    self.began[rest[0]] = time.monotonic()

    def _tasks_of(self, actor) -> list:
        """The refs out on ``actor``, the running one first (an actor runs its tasks in order)."""
        return sorted((r for r, (_, a, _) in self.out.items() if a is actor), key=lambda r: self.out[r][2])

    def _pop(self, ref) -> list[WorkItem]:
        works, actor, _ = self.out.pop(ref)
        self.began.pop(ref, None)
        rest = self._tasks_of(actor)
        if rest and rest[0] not in self.began and id(actor) not in self.warming:  # the next one starts
            self.began[rest[0]] = time.monotonic()
        return works

    def _lost(self, actor) -> None:
        """``actor`` is dead: its queued tasks (never started) go to the others; a new actor."""
        queued = [self._pop(r) for r in self._tasks_of(actor)]
        self._replace(actor)
        for works in queued:
            self._send(works)

    def _deadline(self, ref) -> float:
        return self.began[ref] + self.item_timeout * len(self.out[ref][0])

    def wait(self, timeout: float) -> list[tuple[WorkItem, ItemResult]]:
        if self.pending:  # no more items came: send the part-filled task
            self._send()
        if not self.out:
            return []
        if self.warming:
            self._warmed()
        if self.item_timeout and self.began:
            timeout = max(0.0, min([timeout, *(self._deadline(r) - time.monotonic() for r in self.began)]))
        ready, _ = self.ray.wait(list(self.out), num_returns=1, timeout=timeout)
        if ready:  # and whatever else finished meanwhile
            ready, _ = self.ray.wait(list(self.out), num_returns=len(self.out), timeout=0)
        done = []
        for ref in sorted(ready, key=lambda r: self.out[r][2]):
            if ref not in self.out:  # (requeued: its actor died before it started)
                continue
            actor = self.out[ref][1]
            try:
                results = self.ray.get(ref)
            except self.ray.exceptions.RayActorError as e:
                error = f"the Ray actor died while making this item: {str(e).splitlines()[0]}"
                done += [(w, ItemResult(False, 0.0, "ray", error=error)) for w in self._pop(ref)]
                self._lost(actor)
                continue
            except self.ray.exceptions.RayError as e:
                error = f"Ray: {str(e).splitlines()[0]}"
                done += [(w, ItemResult(False, 0.0, "ray", error=error)) for w in self._pop(ref)]
                continue
            done += zip(self._pop(ref), results)
        if self.item_timeout:
            for ref in [r for r in self.began if r in self.out and time.monotonic() >= self._deadline(r)]:
                actor = self.out[ref][1]
                seconds = time.monotonic() - self.began[ref]
                error = (f"timed out after {self.item_timeout:g} s (--item-timeout): its Ray actor was "
                         "killed and replaced")
                done += [(w, ItemResult(False, seconds, "ray", error=error)) for w in self._pop(ref)]
                self.ray.kill(actor, no_restart=True)
                self._lost(actor)
        return done

    def _replace(self, actor) -> None:
        if actor in self.actors:
            self.warming.pop(id(actor), None)
            new = self.actors[self.actors.index(actor)] = self._new_actor()
            self.warming[id(new)] = new.ready.remote()

    def close(self) -> None:
        for actor in getattr(self, "actors", []):
            try:
                self.ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.out, self.began, self.pending = {}, {}, []
        if self.started_here and self.ray.is_initialized():
            self.ray.shutdown()
