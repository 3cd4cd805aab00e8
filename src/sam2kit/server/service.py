"""The engine behind the routes: one model shared by every picture and video session, model
work on the bounded executor (``executor.py``), pictures (``pictures.py``) and video sessions
(``videos.py``) in bounded stores, one work folder for everything on disk. The routes only
parse, call this, and present."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from sam2kit.video.spill import DiskBudget
from sam2kit.server.executor import ModelExecutor
from sam2kit.server.pictures import Pictures
from sam2kit.server.settings import ServeSettings
from sam2kit.server.store import close_entry
from sam2kit.server.videos import Videos


class Service:
    def __init__(self, model, settings: ServeSettings, model_name: str):
        self.model, self.settings, self.model_name = model, settings, model_name
        self.executor = ModelExecutor(settings.workers, settings.queue)
        self.disk = DiskBudget(settings.spill_limit_bytes)  # shared by every session's spill folder
        if settings.work_dir is not None:
            Path(settings.work_dir).mkdir(parents=True, exist_ok=True)
        self.work_dir = Path(tempfile.mkdtemp(prefix="sam2kit-serve-", dir=settings.work_dir))
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
