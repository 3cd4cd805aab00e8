"""The batch driver: compares the items with the ledger, schedules what is left over a backend
(this process, local worker processes or Ray actors), records every state change, and writes
the dataset's COCO file at the end. It alone writes the ledger.

Resuming: a rerun skips items that are done (and, for a local OUT, whose ``results.json`` is
there), redoes the rest, and refuses items done with other settings unless ``overwrite``.
An item's settings hash covers every option that changes its outputs: the task, the model
(name, checkpoint file and size, revision, resolution, precision, int8) and the task's options
with the prompt the item gets. Options that change outputs at most by float rounding are left
out, so that a run may be resumed on other hardware: the device, ``--compile``, the number of
workers and threads.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import sam2kit

from sam2kit.batch.items import Item
from sam2kit.batch.ledger import Ledger
from sam2kit.batch.storage import open_output
from sam2kit.batch.worker import BatchSpec, ItemResult, WorkItem
from sam2kit.jobs.items import JOB_TYPES, Job, job_prompt_texts, job_settings, task_of
from sam2kit.jobs.model import ModelSpec

MODEL_NOT_SETTINGS = {"device", "compile"}  # change outputs at most by float rounding
SNAPSHOT_EVERY_S = 60.0  # an object-store output's ledger copy is refreshed this often


class BatchError(RuntimeError):
    """The batch cannot run as asked (settings changed, someone else's folder, ...)."""


@dataclass(frozen=True)
class BatchConfig:
    """A batch run. ``model``: the model every worker loads; ``job``: the job every item is
    made with, its default prompt among its fields (None: the task's job with its defaults;
    its input is each item's); ``workers``: processes, or actors with ``ray`` (``local``
    or a cluster address); ``threads``: torch threads per worker (None: the cores / workers);
    ``items_per_task``: items in one Ray task; ``retries``: further attempts of a failing item
    in this run; ``item_timeout``: seconds an item may take before its worker is killed and
    replaced and the item fails as timed out (None: no limit; set, items never run in the
    driver's own process, so that a hang or a crash cannot take the driver with it)."""

    task: str
    output: str
    model: ModelSpec = ModelSpec()
    job: Job | None = None
    workers: int = 1
    threads: int | None = None
    ray: str | None = None
    gpus_per_worker: float = 0.0
    items_per_task: int = 1
    retries: int = 1
    overwrite: bool = False
    verify: bool = False
    state_dir: str | None = None
    item_timeout: float | None = None

    def __post_init__(self):
        if self.item_timeout is not None and not self.item_timeout > 0:
            raise ValueError(f"item_timeout must be positive seconds, got {self.item_timeout}")
        if self.task not in JOB_TYPES:
            raise ValueError(f"task must be one of {', '.join(JOB_TYPES)}, got {self.task!r}")
        if self.job is None:
            object.__setattr__(self, "job", JOB_TYPES[self.task]())
        elif task_of(self.job) != self.task:
            raise ValueError(f"a {type(self.job).__name__} is not a job of task {self.task!r}")


# ---- settings -----------------------------------------------------------------------------

def settings_of(model: ModelSpec, job: Job) -> dict:
    """The settings that change outputs: the task, the model's (not its device nor --compile)
    and the job's (not its input); the default prompt separately, as written."""
    import dataclasses

    settings = {"task": task_of(job)}
    for f in dataclasses.fields(model):
        if f.name not in MODEL_NOT_SETTINGS:
            v = getattr(model, f.name)
            settings[f.name] = v if isinstance(v, (int, float, bool, str, type(None))) else str(v)
    settings.update(job_settings(job))
    settings = dict(sorted(settings.items()))
    for k in ("model", "checkpoint"):
        path = Path(str(settings.get(k) or "")).expanduser()
        if path.suffix in (".pt", ".pth") and path.is_file():
            settings[f"{k}_bytes"] = path.stat().st_size
    settings["default_prompt"] = job_prompt_texts(job)
    return settings


def item_hash(settings: dict, item: Item) -> str:
    """The settings hash of an item's outputs: the settings with the prompt it gets."""
    s = {k: v for k, v in settings.items() if k != "default_prompt"}
    s["prompt"] = item.prompts.texts() if item.prompts else settings["default_prompt"]
    return hashlib.sha256(json.dumps(s, sort_keys=True).encode()).hexdigest()[:16]


def _differences(old: dict | None, new: dict) -> str:
    """The settings that differ, as ``name: old -> new``."""
    def show(v):
        return (" ".join(v) or "none") if isinstance(v, list) else str(v)

    old = old or {}
    diffs = [f"{'prompt' if k == 'default_prompt' else k}: {show(old.get(k))} -> {show(new.get(k))}"
             for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return "; ".join(diffs[:6]) or "their own prompts differ"


# ---- the run ------------------------------------------------------------------------------

@dataclass
class Tally:
    done: int = 0
    failed: int = 0
    retried: int = 0
    tries: dict = field(default_factory=dict)


def run_batch(config: BatchConfig, items: list[Item], console, make_backend=None) -> dict:
    """Run (or resume) a batch; returns its report. ``console``: notes and the progress bar
    (``sam2kit.cli.common.Console``); ``make_backend(spec)``: another backend (the benchmark's
    simulated cluster)."""
    t0 = time.time()
    settings = settings_of(config.model, config.job)
    output = open_output(config.output, config.state_dir)
    if output.foreign_content() and not config.overwrite:  # before anything is written there
        raise BatchError(f"output {output.url!r} holds files but no batch ledger; choose an "
                         "empty or new folder with -o, or pass --overwrite to write among them")
    with output.lock() as lease:
        output.download_ledger()
        output.prepare()
        ledger = Ledger(output.ledger_path)
        try:
            t_plan = time.time()
            todo, skipped = plan(ledger, output, config, settings, items)
            t_items = time.time()
            spec = BatchSpec(config.task, config.model, config.job, output.url, _threads(config))
            tally, backend_text = Tally(), "nothing to do"
            if todo:
                backend = make_backend(spec) if make_backend else _backend(config, spec, len(todo))
                backend_text = backend.description
                console.note(f"batch: {len(todo)} items to make ({skipped} done before) on "
                             f"{backend_text}; ledger {output.ledger_path}")
                copier = LedgerCopier(output) if output.remote else None

                def each_round():
                    lease.check()  # another driver took the output over: stop writing
                    if copier:
                        copier.maybe()

                try:
                    schedule(ledger, backend, todo, config.retries, console, tally, each_round,
                             discard=output.discard_staged)
                finally:
                    backend.close()
                    if copier:
                        copier.finish()
            t_coco = time.time()
            if config.task != "video":
                write_coco(ledger, output)
            if output.remote:
                copy_ledger(output)
            failures = ledger.failures()
        finally:
            ledger.close()
    seconds = time.time() - t0
    keys = {it.key for it in items}
    return {"output": output.url, "ledger": str(output.ledger_path), "task": config.task,
            "settings": settings, "items": len(items), "skipped": skipped, "done": tally.done,
            "failed": tally.failed, "retried": tally.retried, "backend": backend_text,
            "seconds": round(seconds, 3),
            "timings_s": {"start": round(t_plan - t0, 3), "plan": round(t_items - t_plan, 3),
                          "items": round(t_coco - t_items, 3), "finish": round(time.time() - t_coco, 3)},
            "items_per_second": round(tally.done / seconds, 4) if tally.done else 0.0,
            "failures": [f for f in failures if f["key"] in keys]}


def _threads(config: BatchConfig) -> int | None:
    if config.threads:
        return config.threads
    if config.workers == 1 and not config.ray and config.item_timeout is None:
        return None  # the driver's own process: torch's default
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // config.workers)


def _backend(config: BatchConfig, spec: BatchSpec, items: int):
    workers = min(config.workers, items)  # no model loads for workers with nothing to do
    if config.ray:
        from sam2kit.batch.ray_backend import RayBackend

        return RayBackend(spec, config.ray, workers, spec.threads or 1, config.gpus_per_worker,
                          config.items_per_task, item_timeout=config.item_timeout)
    from sam2kit.batch.pool import InProcessBackend, ProcessBackend

    if workers == 1 and config.item_timeout is None:
        return InProcessBackend(spec)
    return ProcessBackend(spec, workers, config.item_timeout)


def plan(ledger: Ledger, output, config: BatchConfig, settings: dict, items: list[Item]):
    """(work items to make, number skipped): new and unfinished items, done items whose
    outputs are gone; done items made with other settings are refused (BatchError) or,
    with ``overwrite``, redone."""
    rows = ledger.add(items)
    hashes = {it.key: item_hash(settings, it) for it in items}
    done = [it for it in items if rows[it.key][1] == "done"]
    changed = [it for it in done if rows[it.key][2] != hashes[it.key]]
    if changed and not config.overwrite:
        raise BatchError(
            f"{output.url} holds {len(changed)} item(s) made with other settings "
            f"({_differences(ledger.meta().get('settings'), settings)}), e.g. {changed[0].key!r}; "
            "rerun with the earlier options to resume, choose another -o, or pass --overwrite to "
            "redo them with these settings")
    check = not output.remote or config.verify  # a stat each locally; a request each remotely
    redo = {it.key for it in changed}
    missing = [it for it in done if check and it.key not in redo and not output.complete(it.key)]
    redo |= {it.key for it in missing}
    ledger.redo([rows[key][0] for key in sorted(redo)])
    ledger.set_meta(task=config.task, settings=settings, sam2kit_version=sam2kit.__version__)
    todo = [WorkItem(rows[it.key][0], it.key, it.source, it.prompts, hashes[it.key]) for it in items
            if rows[it.key][1] != "done" or it.key in redo]
    return todo, len(items) - len(todo)


def schedule(ledger: Ledger, backend, todo: list[WorkItem], retries: int, console, tally: Tally,
             each_round=None, discard=None) -> Tally:
    """Give items to the backend while it has free slots; record each start, success and
    failure in the ledger; retry a failed item up to ``retries`` times at the end of the
    queue. One transaction a round: the results that came in and the items given out next.
    Items out when this stops (an interrupt) are left ``running`` in the ledger: the next run
    redoes them. ``each_round()``: called after every round (the ledger's copy); ``discard(id)``:
    removes what a failed attempt left in the staging area (a worker killed mid-item cannot)."""
    queue, out, finished = deque(todo), {}, []
    with console.progress(total=len(todo), desc="items", unit="item") as bar:
        while queue or out or finished:
            given = []
            with ledger.transaction():
                for work, result in finished:
                    if not result.ok and discard is not None:
                        discard(work.id)
                    _record(ledger, work, result, retries, queue, tally)
                while queue and len(out) + len(given) < backend.slots:
                    given.append(queue.popleft())
                    ledger.start(given[-1].id)
            for work, result in finished:
                if result.ok or tally.tries.get(work.id, 0) > retries:
                    bar.update(1)
            if tally.failed:
                bar.set_postfix(failed=tally.failed, refresh=False)
            for work in given:
                backend.submit(work)
                out[work.id] = work
            finished = backend.wait(timeout=1.0) if out else []
            for work, _ in finished:
                out.pop(work.id, None)
            if each_round is not None:
                each_round()
    return tally


def _record(ledger: Ledger, work: WorkItem, result: ItemResult, retries: int, queue: deque,
            tally: Tally) -> None:
    if result.ok:
        ledger.done(work.id, work.settings, result.seconds, result.worker, result.coco)
        tally.done += 1
        return
    tries = tally.tries[work.id] = tally.tries.get(work.id, 0) + 1
    final = tries > retries
    ledger.fail(work.id, result.error or "failed", final, result.seconds, result.worker)
    if final:
        tally.failed += 1
    else:
        tally.retried += 1
        queue.append(work)


# ---- dataset-level outputs ----------------------------------------------------------------

def write_coco(ledger: Ledger, output) -> None:
    """OUT/annotations.json: every done image of the ledger and its masks (COCO: images,
    annotations with compressed-RLE segmentations, one category), streamed in one pass over
    the ledger (annotations into a second temporary file) and moved into place."""
    local = output.state / f"annotations.{os.getpid()}.tmp"
    side = output.state / f"annotations.{os.getpid()}.part"
    info = {"description": "sam2kit batch", "sam2kit_version": sam2kit.__version__,
            "settings": ledger.meta().get("settings"),
            "annotation_ids": "image id * 100000 + k + 1, k the mask's index in its folder",
            "bbox_format": "[x, y, width, height]: x, y the top-left pixel, width = last column - "
                           "first column (as the automatic generator's records)"}
    with open(local, "w", encoding="utf-8") as f, open(side, "w+", encoding="utf-8") as g:
        f.write('{"info": ' + json.dumps(info) + ',\n"categories": [{"id": 1, "name": "object"}],\n"images": [')
        sep = sep_a = "\n"
        for image, annotations in ledger.coco_texts():
            f.write(sep + image)
            sep = ",\n"
            if annotations:
                g.write(sep_a + annotations)
                sep_a = ",\n"
        f.write('],\n"annotations": [')
        g.seek(0)
        shutil.copyfileobj(g, f)
        f.write("]}\n")
    side.unlink()
    output.put(str(local), "annotations.json")


def copy_ledger(output) -> None:
    """Upload a consistent copy of the ledger (SQLite's online backup, through a connection of
    its own) to ``OUT/batch.sqlite`` of an object-store output."""
    tmp = output.state / f"ledger-copy.{os.getpid()}.{threading.get_ident()}.sqlite"
    tmp.unlink(missing_ok=True)
    source = Ledger(output.ledger_path, readonly=True)
    try:
        source.snapshot(tmp)
    finally:
        source.close()
    output.put(str(tmp), "batch.sqlite")


class LedgerCopier:
    """The ledger's copy in an object store, refreshed in the background while the driver
    works: one copy at a time, the next no sooner than SNAPSHOT_EVERY_S, nor than ten times
    the last copy's duration after it (a 1M-item ledger is gigabytes: at most 10% busy)."""

    def __init__(self, output):
        self.output, self.thread, self.error = output, None, None
        self.next_at = time.time() + SNAPSHOT_EVERY_S

    def maybe(self) -> None:
        if (self.thread is None or not self.thread.is_alive()) and time.time() >= self.next_at:
            self.next_at = float("inf")
            self.thread = threading.Thread(target=self._copy, name="ledger-copy", daemon=True)
            self.thread.start()

    def _copy(self) -> None:
        t0 = time.time()
        try:
            copy_ledger(self.output)
        except Exception as e:  # noqa: BLE001 - the next copy (and the one at the end) may work
            self.error = e
        self.next_at = time.time() + max(SNAPSHOT_EVERY_S, 10 * (time.time() - t0))

    def finish(self) -> None:
        if self.thread is not None:
            self.thread.join()
