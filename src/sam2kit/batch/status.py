"""``sam2kit batch --status OUT``: a batch's progress, read from its ledger without running
anything (while a run goes on, too: the ledger's write-ahead log lets readers in)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from sam2kit.batch.ledger import Ledger
from sam2kit.batch.storage import LEDGER, open_output


def batch_status(url: str, state_dir: str | None = None, failures: int = 20) -> dict:
    """Counts by state, attempts, timings and the first ``failures`` failed items of the batch
    whose output is ``url``; a FileNotFoundError if it has no ledger."""
    output = open_output(url, state_dir)
    path, tmp = output.ledger_path, None
    if not path.exists() and output.remote and output.fs.exists(f"{output.path}/{LEDGER}"):
        fd, tmp = tempfile.mkstemp(suffix=".sqlite")
        os.close(fd)
        output.fs.get_file(f"{output.path}/{LEDGER}", tmp)
        path = Path(tmp)
    if not path.exists():
        raise FileNotFoundError(f"{output.url} has no batch ledger ({LEDGER}); give the -o folder "
                                "of a `sam2kit batch` run")
    ledger = Ledger(path, readonly=True)
    try:
        meta, counts, summary = ledger.meta(), ledger.counts(), ledger.summary()
        failed = ledger.failures(failures)
    finally:
        ledger.close()
        if tmp:
            os.remove(tmp)
    span = (summary["last_finished"] or 0) - (summary["first_started"] or 0)
    return {"output": output.url, "ledger": str(output.ledger_path), "task": meta.get("task"),
            "settings": meta.get("settings"), "sam2kit_version": meta.get("sam2kit_version"),
            "running_now": _locked(output), **counts, **summary,
            "items_per_second": round(counts["done"] / span, 4) if counts["done"] and span > 0 else None,
            "failures": failed}


def _locked(output) -> bool:
    """Whether a driver holds the output's lock (a run is going on)."""
    import fcntl

    lock = output.state / "lock"
    if not lock.exists():
        return False
    with open(lock) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False
