"""Items on Ray (``pip install 'sam2kit[ray]'``): a pool of actors, each holding one loaded
model (``--workers`` actors with ``--threads-per-worker`` CPUs and ``--gpus-per-worker`` GPUs
each); items go to them as actor tasks of ``--items-per-task`` items (default 1), two tasks in
flight per actor so that an actor never waits for the driver. Each task costs the driver
about half a millisecond of CPU (``benchmarks/batch.py``): past ~1,000 items/s, give several
items per task. Actors write the item's outputs themselves (a shared file system, or an object
store); results come back to the driver, which alone writes the ledger, so resuming works as
with local workers. An actor that dies fails its items (the driver retries them) and is
replaced.

``--ray local`` starts a Ray runtime on this machine (127.0.0.1, no dashboard) for the batch
and stops it at the end; ``--ray ADDRESS`` joins a running cluster (``auto``, ``HOST:PORT`` or
``ray://HOST:10001``). A runtime already started in this process (e.g. by a notebook or a
test) is used as it is and left running.
"""

from __future__ import annotations

import os

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
                 gpus_per_worker: float = 0.0, items_per_task: int = 1, actor: type = RayWorker):
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
                            f"{f', {items_per_task} items a task' if items_per_task > 1 else ''}")
        self.actors = [self._new_actor() for _ in range(workers)]
        for status, text in ray.get([a.ready.remote() for a in self.actors]):
            if status == "init_error":
                self.close()
                raise InitError(text)
        self.out: dict = {}  # ObjectRef -> (the task's WorkItems, actor)
        self.pending: list[WorkItem] = []  # a task being filled

    def _new_actor(self):
        self.made += 1
        return self.actor_class.remote(self.spec, f"ray-actor-{self.made - 1}")

    def submit(self, work: WorkItem) -> None:
        self.pending.append(work)
        if len(self.pending) >= self.per_task:
            self._send()

    def _send(self) -> None:
        works, self.pending = self.pending, []
        load = {id(a): 0 for a in self.actors}
        for _, actor in self.out.values():
            load[id(actor)] = load.get(id(actor), 0) + 1
        actor = min(self.actors, key=lambda a: load[id(a)])
        self.out[actor.run.remote(works)] = (works, actor)

    def wait(self, timeout: float) -> list[tuple[WorkItem, ItemResult]]:
        if self.pending:  # no more items came: send the part-filled task
            self._send()
        if not self.out:
            return []
        ready, _ = self.ray.wait(list(self.out), num_returns=1, timeout=timeout)
        if ready:  # and whatever else finished meanwhile
            ready, _ = self.ray.wait(list(self.out), num_returns=len(self.out), timeout=0)
        done = []
        for ref in ready:
            works, actor = self.out.pop(ref)
            try:
                done += zip(works, self.ray.get(ref))
            except self.ray.exceptions.RayActorError as e:
                error = f"the Ray actor died while making this item: {str(e).splitlines()[0]}"
                done += [(w, ItemResult(False, 0.0, "ray", error=error)) for w in works]
                self._replace(actor)
            except self.ray.exceptions.RayError as e:
                error = f"Ray: {str(e).splitlines()[0]}"
                done += [(w, ItemResult(False, 0.0, "ray", error=error)) for w in works]
        return done

    def _replace(self, actor) -> None:
        if actor in self.actors:
            self.actors[self.actors.index(actor)] = self._new_actor()

    def close(self) -> None:
        for actor in getattr(self, "actors", []):
            try:
                self.ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.out, self.pending = {}, []
        if self.started_here and self.ray.is_initialized():
            self.ray.shutdown()
