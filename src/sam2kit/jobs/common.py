"""What every job shares: messages and progress bars (``Console``), the bundled samples, and the
output folder (``StagedOutput``: written beside the target, moved into place only when complete)."""

from __future__ import annotations

import contextlib
import importlib.resources
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from tqdm import tqdm

from sam2kit.errors import InputError


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or e.__class__.__name__


def sample(name: str) -> Path:
    """A bundled sample file (``sample_photo.png``, ``sample_video.mp4``)."""
    return Path(str(importlib.resources.files("sam2kit") / "assets" / name))


class Console:
    """Notes and progress bars go to stderr (none with ``quiet``); results go to stdout."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet

    def note(self, message: str) -> None:
        if not self.quiet:
            print(message, file=sys.stderr, flush=True)

    def progress(self, iterable=None, total=None, desc=None, unit="it"):
        return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr,
                    disable=self.quiet, dynamic_ncols=True, leave=True)

    @contextlib.contextmanager
    def hub_progress(self):
        """huggingface_hub's download bar and its warnings (retries ...), off with ``quiet``."""
        from huggingface_hub.utils import (are_progress_bars_disabled, disable_progress_bars,
                                           enable_progress_bars)

        turn_off = self.quiet and not are_progress_bars_disabled()
        hub_log = logging.getLogger("huggingface_hub")
        level = hub_log.level
        if turn_off:
            disable_progress_bars()
        if self.quiet:
            hub_log.setLevel(logging.ERROR)
        try:
            yield
        finally:
            hub_log.setLevel(level)
            if turn_off:
                enable_progress_bars()


def check_output_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"output {str(out)!r} exists and is not a folder; choose a folder with -o")
    if out.is_dir() and not overwrite and any(out.iterdir()):
        raise InputError(f"output folder {str(out)!r} is not empty; pass --overwrite to replace earlier "
                       "outputs there, or choose another folder with -o")


class StagedOutput:
    """Outputs are written into a fresh folder beside ``final`` (``DIR.partial-PID-XXXX``) and
    moved into ``final`` only once complete; on any failure the partial folder is removed, so a
    failed run leaves nothing behind. Moving in replaces same-named entries of an earlier run
    (folders as a whole); ``stale`` (a regex) names further files of earlier runs to remove.

    A run killed outright (SIGKILL, a crash, power) cannot remove its partial folder: the folder
    holds its owner's lock (``video.spill.claim``) while the run lives, and the next run for the
    same ``final`` removes the partial folders whose lock is free (their owner is dead); those of
    a run still going are left alone."""

    def __init__(self, final: Path, overwrite: bool, stale: str | None = None):
        self.final = Path(os.path.abspath(final.expanduser()))
        self.overwrite, self.stale = overwrite, stale
        self.path: Path | None = None
        self._made: list[Path] = []  # parent folders this run created

    def __enter__(self) -> Path:
        from sam2kit.video.spill import claim, remove_stale_spill_folders

        check_output_dir(self.final, self.overwrite)
        missing = [p for p in [self.final.parent, *self.final.parent.parents] if not p.exists()]
        try:
            for p in reversed(missing):
                p.mkdir()
                self._made.append(p)
            self.removed_stale = remove_stale_spill_folders(self.final.parent, f"{self.final.name}.partial-",
                                                            unlocked_grace_s=None)
            self.path = Path(tempfile.mkdtemp(prefix=f"{self.final.name}.partial-{os.getpid()}-",
                                              dir=self.final.parent))
            os.chmod(self.path, 0o777 & ~_umask())
            self._owner = claim(self.path)
        except OSError as e:
            self._remove_made()
            raise InputError(f"cannot create output folder {str(self.final)!r}: {e.strerror or e}; "
                           "choose a writable place with -o") from None
        return self.path

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self._commit()
                return
            except OSError as e:
                self._abort()
                raise InputError(f"cannot move the outputs into {str(self.final)!r}: "
                               f"{e.strerror or e}") from None
        self._abort()

    def _unclaim(self) -> None:
        if getattr(self, "_owner", None) is not None:
            from sam2kit.video.spill import LOCK_NAME

            (self.path / LOCK_NAME).unlink(missing_ok=True)  # (not an output: never moved in)
            os.close(self._owner)
            self._owner = None

    def _commit(self) -> None:
        """Swap the outputs in: the earlier run's entries that this run replaces move aside,
        the new ones move in (renames, no copying); if any step fails, every step is undone,
        so ``final`` holds either the earlier outputs or the new ones, never a mix."""
        self._unclaim()
        if not self.final.exists():
            os.rename(self.path, self.final)
            return
        check_output_dir(self.final, self.overwrite)  # it may have changed meanwhile
        names = sorted(p.name for p in self.path.iterdir())
        trash = Path(tempfile.mkdtemp(prefix=f"{self.final.name}.replaced-", dir=self.final.parent))
        moved_out, moved_in = [], []
        try:
            for old in list(self.final.iterdir()):
                if old.name in names or (self.stale and re.fullmatch(self.stale, old.name)):
                    os.rename(old, trash / old.name)
                    moved_out.append(old.name)
            for name in names:
                os.rename(self.path / name, self.final / name)
                moved_in.append(name)
        except OSError:
            for name in reversed(moved_in):  # undo: the new entries back, the old ones in place
                with contextlib.suppress(OSError):
                    os.rename(self.final / name, self.path / name)
            for name in reversed(moved_out):
                with contextlib.suppress(OSError):
                    os.rename(trash / name, self.final / name)
            shutil.rmtree(trash, ignore_errors=True)
            raise
        self.path.rmdir()
        shutil.rmtree(trash, ignore_errors=True)

    def _abort(self) -> None:
        if self.path is not None:
            self._unclaim()
            shutil.rmtree(self.path, ignore_errors=True)
        self._remove_made()

    def _remove_made(self) -> None:
        for p in reversed(self._made):
            with contextlib.suppress(OSError):
                p.rmdir()
        self._made.clear()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_export_formats(job, out: Path, results: dict) -> None:
    """The export formats a job asks for (``job.formats``, ``sam2kit.formats.write``), written
    into its output folder beside results.json; an InputError if a format cannot be written."""
    if not getattr(job, "formats", ()):
        return
    from sam2kit.formats.write import write_formats

    try:
        write_formats(out, list(job.formats), results, job.polygon_tolerance)
    except ImportError as e:
        raise InputError(one_line(e)) from None
