"""The engine behind the routes: one model shared by every picture and video session, model
work on the bounded executor (``executor.py``), pictures (``pictures.py``) and video sessions
(``videos.py``) in bounded stores, one work folder for everything on disk. The routes only
parse, call this, and present."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from sam2kit.video.spill import DiskBudget, claim, remove_stale_spill_folders
from sam2kit.server.executor import ModelExecutor
from sam2kit.server.pictures import Pictures
from sam2kit.server.settings import ServeSettings
from sam2kit.server.store import close_entry
from sam2kit.server.videos import Videos


WORK_PREFIX = "sam2kit-serve-"


class Service:
    def __init__(self, model, settings: ServeSettings, model_name: str):
        self.model, self.settings, self.model_name = model, settings, model_name
        self.executor = ModelExecutor(settings.workers, settings.queue)
        self.disk = DiskBudget(settings.spill_limit_bytes)  # shared by every session's spill folder
        if settings.work_dir is not None:
            Path(settings.work_dir).mkdir(parents=True, exist_ok=True)
        # the work folders of servers that were killed (kill -9, a crash, power): their owner's
        # lock is free; a live server's folder (its lock held) is left alone
        self.removed_stale = remove_stale_spill_folders(settings.work_dir, WORK_PREFIX, unlocked_grace_s=None)
        self.work_dir = Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{os.getpid()}-", dir=settings.work_dir))
        self._owner = claim(self.work_dir)
        self.spill_dir = self.work_dir / "spill"
        self.spill_dir.mkdir()
        self.pictures = Pictures(self)
        self.videos = Videos(self)
        self.started = time.time()

    def shutdown(self) -> None:
        """Stop tracking, let running jobs end, close every session and remove the work folder
        (uploads, spill folders, exports). Calling it again does nothing more."""
        entries = self.videos.close_all()
        self.executor.shutdown()
        for entry in entries:
            close_entry(entry)
        self.pictures.store.clear()
        shutil.rmtree(self.work_dir, ignore_errors=True)
        if self._owner is not None:
            os.close(self._owner)
            self._owner = None
