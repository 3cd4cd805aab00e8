"""What every command shares: errors, messages and progress bars, the model options and loading,
and the output folder (written beside the target, moved into place only when complete)."""

from __future__ import annotations

import argparse
import contextlib
import importlib.resources
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

import sam2kit
from sam2kit import CheckpointError, CheckpointNotFoundError, get_config
from sam2kit.devices import resolve_device
from sam2kit.hub import cached_checkpoint
from sam2kit.modes import BACKENDS, PRECISIONS

DEFAULT_MODEL = "facebook/sam2-hiera-tiny"


class CLIError(Exception):
    """A problem with the user's input or environment: one line on stderr, exit status 2."""


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or e.__class__.__name__


def sample(name: str) -> Path:
    """A bundled sample file (``sample_photo.png``, ``sample_video.mp4``)."""
    return Path(str(importlib.resources.files("sam2kit") / "assets" / name))


# ---- messages -----------------------------------------------------------------------------

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


# ---- the model ----------------------------------------------------------------------------

def resolution(text: str) -> int:
    """argparse type of ``--resolution``."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 256 or value % 32:
        raise argparse.ArgumentTypeError(
            f"expected a multiple of 32 of at least 256 (1024 is the trained size; 512 and 768 "
            f"are faster), got {text!r}")
    return value


def add_model_options(p: argparse.ArgumentParser, resolution_help: str | None = None) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", metavar="MODEL", default=None,
                   help="tiny, small, base-plus or large (SAM 2; add --sam2.1 for SAM 2.1), a "
                        "model name (sam2.1-hiera-large), a hub id (facebook/sam2-hiera-small) or "
                        f"the path of a .pt checkpoint (default: {DEFAULT_MODEL})")
    g.add_argument("--sam2.1", dest="sam21", action="store_true",
                   help="with a short --model name (or none): the SAM 2.1 model of that size")
    g.add_argument("--checkpoint", type=Path, metavar="FILE",
                   help="a local checkpoint file with the weights of --model (no download)")
    g.add_argument("--revision", metavar="REV", help="hub revision (branch, tag or commit) to download")
    g.add_argument("--device", default="auto",
                   help="auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps (default: auto)")
    g.add_argument("--resolution", type=resolution, metavar="PIXELS",
                   help=resolution_help or "the model's input size (image_size): a multiple of 32, at "
                        "least 256 (default: 1024, as trained; 512 and 768 are faster)")
    s = p.add_argument_group("speed (opt-in; each trades some accuracy or start-up time, see README)")
    s.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="bf16: compute in bfloat16 (only on CPUs whose flags have amx_bf16 or avx512_bf16; "
                        "2-3x faster, masks within ~1%% IoU of fp32) (default: fp32)")
    s.add_argument("--compile", action="store_true",
                   help="compile the image encoder with torch.compile (needs a C++ compiler; the first "
                        "image takes a minute or more, later ones are faster)")
    s.add_argument("--int8", action="store_true",
                   help="int8 dynamic quantisation of the linear layers (CPU only)")
    s.add_argument("--backend", choices=BACKENDS, default="torch",
                   help="openvino: run the image encoder on OpenVINO (pip install 'sam2kit[openvino]'; "
                        "CPU; with --precision bf16 the fastest encoder on CPUs with native bf16; the "
                        "first run of a model exports it, cached) (default: torch)")


def model_source(model: str | None, sam21: bool) -> str:
    """The hub id, model name or checkpoint path that ``--model``/``--sam2.1`` name
    (``sam2kit.model_id``); a CLIError for an unknown name."""
    try:
        return sam2kit.model_id(model, sam21)
    except ValueError as e:
        raise CLIError(one_line(e)) from None


def check_model_options(args) -> str:
    """Validate --model, --checkpoint and --device before any slow work; returns the source."""
    source = model_source(args.model, args.sam21)
    if args.checkpoint is not None and not args.checkpoint.expanduser().is_file():
        raise CLIError(f"checkpoint file {str(args.checkpoint)!r} does not exist; check the path, or "
                       "leave --checkpoint out to download the official weights")
    if args.checkpoint is not None and Path(source).is_file():
        raise CLIError("give the checkpoint either as --model FILE or as --checkpoint FILE, not both")
    try:
        resolve_device(args.device)
    except ValueError as e:
        raise CLIError(one_line(e)) from None
    return source


def load_model(args, console: Console, image_size: int | None):
    """The SAM 2 model named by the options, and a dict describing it for results.json."""
    source = check_model_options(args)
    checkpoint = args.checkpoint.expanduser() if args.checkpoint else None
    is_file = Path(source).is_file()
    if not is_file and checkpoint is None and args.revision is None and not hub_offline():
        config = get_config(source)
        if cached_checkpoint(config) is None:
            console.note(f"downloading {config.hub_id}/{config.checkpoint_file} from the Hugging Face "
                         "hub into its cache (once) ...")
    t0 = time.perf_counter()
    try:
        with console.hub_progress():
            model = sam2kit.load_model(
                source, device=args.device, image_size=image_size, revision=args.revision,
                checkpoint=checkpoint, precision=args.precision, compile=args.compile,
                quantize="int8" if args.int8 else None, backend=args.backend)
    except CheckpointNotFoundError as e:
        raise CLIError(f"{one_line(e)} (on the command line: --checkpoint FILE)") from None
    except (CheckpointError, ValueError, ImportError) as e:
        raise CLIError(one_line(e)) from None
    load_s = time.perf_counter() - t0
    config = model.config
    if is_file or checkpoint is not None:
        path = Path(checkpoint or source)
    else:
        path = cached_checkpoint(config) if args.revision is None else None
    console.note(f"model {config.name} at {config.image_size} px on {model.device} "
                 f"(loaded in {load_s:.1f} s)")
    info = {"model": source, "model_config": config.name, "hub_id": config.hub_id,
            "checkpoint": str(path.resolve()) if path else None, "revision": args.revision,
            "device": str(model.device), "resolution": config.image_size,
            "precision": args.precision, "compile": args.compile, "int8": args.int8,
            "backend": args.backend, "load_model_s": round(load_s, 4)}
    return model, info


def hub_offline() -> bool:
    """Whether huggingface_hub's offline mode (HF_HUB_OFFLINE) is on."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


# ---- the output folder --------------------------------------------------------------------

def add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", type=Path, required=True, metavar="DIR",
                   help="output folder: created if missing; must be empty unless --overwrite")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty output folder, replacing the outputs of an earlier "
                        "run there (other files are left alone)")


def add_feedback_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bars, notes or summary (errors are still printed)")
    p.add_argument("--json", action="store_true",
                   help="print the results document (results.json) on stdout instead of a summary")


def check_output_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise CLIError(f"output {str(out)!r} exists and is not a folder; choose a folder with -o")
    if out.is_dir() and not overwrite and any(out.iterdir()):
        raise CLIError(f"output folder {str(out)!r} is not empty; pass --overwrite to replace earlier "
                       "outputs there, or choose another folder with -o")


class StagedOutput:
    """Outputs are written into a fresh folder beside ``final`` (``DIR.partial-XXXX``) and moved
    into ``final`` only once complete; on any failure the partial folder is removed, so a failed
    run leaves nothing behind. Moving in replaces same-named entries of an earlier run (folders
    as a whole); ``stale`` (a regex) names further files of earlier runs to remove."""

    def __init__(self, final: Path, overwrite: bool, stale: str | None = None):
        self.final = Path(os.path.abspath(final.expanduser()))
        self.overwrite, self.stale = overwrite, stale
        self.path: Path | None = None
        self._made: list[Path] = []  # parent folders this run created

    def __enter__(self) -> Path:
        check_output_dir(self.final, self.overwrite)
        missing = [p for p in [self.final.parent, *self.final.parent.parents] if not p.exists()]
        try:
            for p in reversed(missing):
                p.mkdir()
                self._made.append(p)
            self.path = Path(tempfile.mkdtemp(prefix=f"{self.final.name}.partial-",
                                              dir=self.final.parent))
            os.chmod(self.path, 0o777 & ~_umask())
        except OSError as e:
            self._remove_made()
            raise CLIError(f"cannot create output folder {str(self.final)!r}: {e.strerror or e}; "
                           "choose a writable place with -o") from None
        return self.path

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self._commit()
                return
            except OSError as e:
                self._abort()
                raise CLIError(f"cannot move the outputs into {str(self.final)!r}: "
                               f"{e.strerror or e}") from None
        self._abort()

    def _commit(self) -> None:
        """Swap the outputs in: the earlier run's entries that this run replaces move aside,
        the new ones move in (renames, no copying); if any step fails, every step is undone,
        so ``final`` holds either the earlier outputs or the new ones, never a mix."""
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
