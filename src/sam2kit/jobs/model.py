"""The model a job runs: ``ModelSpec`` (what to load: name or file, device, size, speed modes),
checked before any slow work and loaded once (``load_model``), with a description of it for
results.json."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import sam2kit
from sam2kit import CheckpointError, CheckpointNotFoundError, get_config
from sam2kit.devices import resolve_device
from sam2kit.errors import InputError
from sam2kit.hub import cached_checkpoint
from sam2kit.jobs.common import Console, one_line

DEFAULT_MODEL = "facebook/sam2-hiera-tiny"


@dataclass(frozen=True)
class ModelSpec:
    """Which model to load and how. ``model``: a short name (tiny, small, base-plus, large; with
    ``sam21`` the SAM 2.1 one), a model name, a hub id or a .pt checkpoint path (None: the
    default model); ``checkpoint``: a local file with its weights; ``resolution``: the input
    size (None: the trained 1024); the rest as ``sam2kit.load_model``."""

    model: str | None = None
    sam21: bool = False
    checkpoint: Path | None = None
    revision: str | None = None
    device: str = "auto"
    resolution: int | None = None
    precision: str = "fp32"
    compile: bool = False
    int8: bool = False
    backend: str = "torch"


def model_source(model: str | None, sam21: bool) -> str:
    """The hub id, model name or checkpoint path that ``--model``/``--sam2.1`` name
    (``sam2kit.model_id``); a InputError for an unknown name."""
    try:
        return sam2kit.model_id(model, sam21)
    except ValueError as e:
        raise InputError(one_line(e)) from None


def check_model_options(args: ModelSpec) -> str:
    """Validate --model, --checkpoint and --device before any slow work; returns the source."""
    source = model_source(args.model, args.sam21)
    if args.checkpoint is not None and not args.checkpoint.expanduser().is_file():
        raise InputError(f"checkpoint file {str(args.checkpoint)!r} does not exist; check the path, or "
                       "leave --checkpoint out to download the official weights")
    if args.checkpoint is not None and Path(source).is_file():
        raise InputError("give the checkpoint either as --model FILE or as --checkpoint FILE, not both")
    try:
        resolve_device(args.device)
    except ValueError as e:
        raise InputError(one_line(e)) from None
    return source


def load_model(args: ModelSpec, console: Console, image_size: int | None):
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
        raise InputError(f"{one_line(e)} (on the command line: --checkpoint FILE)") from None
    except (CheckpointError, ValueError, ImportError) as e:
        raise InputError(one_line(e)) from None
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
