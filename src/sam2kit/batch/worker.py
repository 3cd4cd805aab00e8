"""One worker: loads the model once, then makes items one at a time with the jobs the
single-item commands run (``sam2kit.jobs``: image, auto, video), so that every item's files are
exactly those the command writes. The same ``ItemRunner`` serves the driver's own process (one
worker), local worker processes and Ray actors.

A batch is typed: the model (``ModelSpec``) and a job with the default prompt, sent once; each
item is its input and, optionally, its own prompts (``ItemPrompts``). Outputs are written into a
staging folder and committed (renamed or uploaded) only when complete.
"""

from __future__ import annotations

import json
import os
import socket
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from sam2kit.batch.storage import fetch_input, is_remote, open_output
from sam2kit.errors import InputError
from sam2kit.jobs.common import Console, one_line
from sam2kit.jobs.items import ItemPrompts, Job, for_item, run_job
from sam2kit.jobs.model import ModelSpec, load_model

ANNOTATION_STRIDE = 100_000  # COCO annotation id = image id * stride + k + 1 (k: the mask's index)


@dataclass(frozen=True)
class BatchSpec:
    """What every worker needs, sent once: the task, the model, the job (its settings and the
    default prompt; its input is each item's), the output (path or URL) and the torch threads
    of each worker (None: leave torch's default)."""

    task: str
    model: ModelSpec
    job: Job
    output: str
    threads: int | None = None


@dataclass(frozen=True)
class WorkItem:
    """One item to make: its ledger id (= COCO image id), output key, input, own prompts
    (None: the default prompt) and the settings hash its outputs will carry."""

    id: int
    key: str
    source: str
    prompts: ItemPrompts | None = None
    settings: str = ""


@dataclass(frozen=True)
class ItemResult:
    """How an attempt went: ``ok``, the worker's seconds on it, which worker, the error (one
    line) and, for images, the item's part of the dataset's COCO file (``encode_coco``: made
    and compressed by the worker, so that the driver only stores it)."""

    ok: bool
    seconds: float
    worker: str
    error: str | None = None
    coco: bytes | None = None


class ItemRunner:
    """Loads the model of ``spec`` once; ``run(work)`` makes one item."""

    def __init__(self, spec: BatchSpec, name: str | None = None):
        import torch

        if spec.threads:
            torch.set_num_threads(spec.threads)
        self.spec = spec
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.console = Console(quiet=True)
        self.model, self.model_info = load_model(spec.model, self.console, spec.model.resolution)
        self.output = open_output(spec.output)

    def run(self, work: WorkItem) -> ItemResult:
        t0 = time.perf_counter()
        staged = scratch = None
        try:
            staged = self.output.stage(work.id)
            local = work.source
            if is_remote(work.source):
                scratch = self.output.scratch()
                local = fetch_input(work.source, scratch)
            job = for_item(self.spec.job, local, work.prompts)
            results = run_job(job, self.console, Path(staged), self.model, self.model_info)
            if local != work.source:  # record where the input really is, not the download
                _set_input_path(results, work.source, Path(staged) / "results.json")
            coco = None if self.spec.task == "video" else encode_coco(
                coco_part(self.spec.task, results, Path(staged), work))
            self.output.commit(staged, work.key)
            staged = None
            return ItemResult(True, time.perf_counter() - t0, self.name, coco=coco)
        except InputError as e:
            error = str(e)
        except Exception as e:  # noqa: BLE001 - any failure of one item is that item's
            error = f"{e.__class__.__name__}: {one_line(e)}"
        finally:
            for d in (staged, scratch):
                if d is not None:
                    self.output.discard(d)
        return ItemResult(False, time.perf_counter() - t0, self.name, error=error)


def _set_input_path(results: dict, source: str, path: Path) -> None:
    from sam2kit.outputs import save_json

    if "video" in results:
        results["video"]["path"] = source
    elif "images" in results:
        results["images"][0]["file_name"] = source
    else:
        results["image"]["path"] = source
    save_json(results, path)


def coco_part(task: str, results: dict, out: Path, work: WorkItem) -> dict:
    """The item's COCO image entry and annotations (``image_id`` = the item's ledger id,
    segmentation as COCO compressed RLE, bbox ``[x, y, w, h]`` with w = last column - first
    column as in the automatic generator's records, ``mask_file`` relative to OUT)."""
    import numpy as np
    from PIL import Image

    from sam2kit.image.amg import coco_encode_rle, mask_to_rle

    if task == "auto":
        info = results["images"][0]
        anns = [{**a, "image_id": work.id, "mask_file": f"{work.key}/{a['mask_file']}"}
                for a in results["annotations"]]
    else:
        info = results["image"]
        anns = []
        for e in results["prompts"]:
            with Image.open(out / e["mask_file"]) as im:
                mask = np.asarray(im) > 0
            x0, y0, x1, y1 = e["bbox_xyxy"] or (0, 0, 0, 0)
            anns.append({"image_id": work.id, "category_id": 1, "iscrowd": 0,
                         "segmentation": coco_encode_rle(mask_to_rle(mask)), "area": e["area"],
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "score": e["score"],
                         "points": e["points"], "labels": e["labels"], "box": e["box"],
                         "mask_file": f"{work.key}/{e['mask_file']}"})
    if len(anns) >= ANNOTATION_STRIDE:
        raise ValueError(f"{len(anns)} masks in one image: more than the {ANNOTATION_STRIDE - 1} "
                         "that annotation ids leave room for")
    for k, a in enumerate(anns):
        a["id"] = work.id * ANNOTATION_STRIDE + k + 1
    image = {"id": work.id, "file_name": work.key, "path": work.source,
             "width": info["width"], "height": info["height"]}
    return {"image": image, "annotations": anns}


def encode_coco(part: dict) -> bytes:
    """A COCO part as the ledger stores it: zlib of the image's JSON, a newline, and the
    annotations' JSON joined by ",\n" (annotations.json is then written without parsing)."""
    text = json.dumps(part["image"]) + "\n" + ",\n".join(json.dumps(a) for a in part["annotations"])
    return zlib.compress(text.encode(), 6)


# ---- a local worker process ---------------------------------------------------------------

def process_main(conn, spec: BatchSpec, name: str) -> None:
    """A worker process: load, say ``ready`` (or ``init_error``), then answer each WorkItem
    with ``result``; exit on None or when the driver goes away (it dies with the driver)."""
    import signal

    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    try:
        runner = ItemRunner(spec, name)
    except InputError as e:
        conn.send(("init_error", str(e)))
        return
    except Exception as e:  # noqa: BLE001
        conn.send(("init_error", f"{e.__class__.__name__}: {one_line(e)}"))
        return
    conn.send(("ready", runner.name))
    while True:
        try:
            work = conn.recv()
        except (EOFError, OSError):
            return
        if work is None:
            return
        conn.send(("result", work.id, runner.run(work)))


def _die_with_parent() -> None:
    """Linux: be killed with the driver (even by SIGKILL), so that no orphan goes on writing
    into OUT while a resumed run redoes its item."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):
        pass
