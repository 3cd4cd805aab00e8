"""Where a video run's per-frame files go: ``frames/``, ``overlays/``, ``masks/<obj>/`` and
``masks/palette/``, each file named by its frame number (``00012.jpg``).

A file run (a video or a folder of frames: a known, finite number) keeps one flat folder per
kind. A live run may go on for days (at 25 fps, two million frames a day), so its files are
sharded: ``frames/000/000/00012.jpg``, the first level ``frame // 1000000``, the second
``frame // 1000 % 1000``, so that no folder holds more than 1000 files (or 1000 folders) up to a
billion frames. results.json says which ("layout"); each frame's entry names its file."""

from __future__ import annotations

from pathlib import Path

SHARD = 1000  # files per folder in a sharded layout


class Layout:
    """``sharded``: the live layout (see the module docstring); else flat."""

    def __init__(self, sharded: bool):
        self.sharded = sharded
        self._made: set[tuple[str, int]] = set()  # (kind, shard) folders made, the current shards only

    def folder(self, kind: str, f: int) -> str:
        """The folder of frame ``f``'s file of ``kind`` ("frames", "masks/1", ...), relative."""
        if not self.sharded:
            return kind
        return f"{kind}/{f // (SHARD * SHARD):03d}/{f // SHARD % SHARD:03d}"

    def path(self, kind: str, f: int, ext: str) -> str:
        """Frame ``f``'s file of ``kind``, relative to the run's folder: "frames/00012.jpg"."""
        return f"{self.folder(kind, f)}/{f:05d}.{ext}"

    def make(self, out: Path, kind: str, f: int) -> Path:
        """The folder for frame ``f``'s file of ``kind`` under ``out``, made if it is new."""
        folder = out / self.folder(kind, f)
        if self.sharded:
            key = (kind, f // SHARD)
            if key not in self._made:
                folder.mkdir(parents=True, exist_ok=True)
                self._made = {k for k in self._made if k[0] != kind} | {key}
        return folder

    def as_json(self) -> dict:
        if not self.sharded:
            return {"kind": "flat", "files": "<folder>/<frame:05d>.<ext>"}
        return {"kind": "sharded", "files_per_folder": SHARD,
                "files": f"<folder>/<frame // {SHARD * SHARD}:03d>/<frame // {SHARD} % {SHARD}:03d>/<frame:05d>.<ext>"}
