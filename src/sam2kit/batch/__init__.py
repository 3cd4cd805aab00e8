"""Batch runs over many images or videos (``sam2kit batch``): resumable, crash-safe, on local
worker processes or Ray actors, with inputs and outputs on disk or in object stores.

    items = discover(["photos/"], "image")            # or read_manifest("items.jsonl", "image")
    report = run_batch(BatchConfig("image", "out/", options=("--grid=3x3",), workers=2),
                       items, Console())
    batch_status("out/")                               # progress, from the ledger alone

Modules: ``items`` (discovery, manifests), ``ledger`` (SQLite), ``storage`` (local folders and
fsspec stores), ``worker`` (one model, items made by the single-item commands' code),
``pool`` (this process, worker processes), ``ray_backend`` (Ray actors), ``runner`` (the
driver: plan, schedule, record), ``status``.
"""

from .items import InputError, Item, discover, read_manifest
from .ledger import Ledger
from .runner import BatchConfig, BatchError, run_batch
from .status import batch_status

__all__ = ["Item", "discover", "read_manifest", "InputError", "Ledger", "BatchConfig", "BatchError",
           "run_batch", "batch_status"]
