"""Batch runs over many images or videos (``sam2kit batch``): resumable, crash-safe, on local
worker processes or Ray actors, with inputs and outputs on disk or in object stores.

    items = discover(["photos/"], "image")            # or read_manifest("items.jsonl", "image")
    job = ImageJob(grid=(3, 3))                       # sam2kit.jobs: the typed job
    report = run_batch(BatchConfig("image", "out/", ModelSpec(resolution=512), job, workers=2),
                       items, Console())
    batch_status("out/")                               # progress, from the ledger alone

Modules: ``items`` (discovery, manifests), ``ledger`` (SQLite), ``storage`` (local folders and
fsspec stores), ``worker`` (one model, items made by the single-item commands' jobs, ``sam2kit.jobs``),
``pool`` (this process, worker processes), ``ray_backend`` (Ray actors), ``runner`` (the
driver: plan, schedule, record), ``status``.
"""

from sam2kit.batch.items import InputError, Item, discover, read_manifest
from sam2kit.batch.ledger import Ledger
from sam2kit.batch.runner import BatchConfig, BatchError, run_batch
from sam2kit.batch.status import batch_status

__all__ = ["Item", "discover", "read_manifest", "InputError", "Ledger", "BatchConfig", "BatchError",
           "run_batch", "batch_status"]
