"""Building models and loading official checkpoints (``{"model": state_dict}`` files)."""

from __future__ import annotations

import functools
import zipfile
from pathlib import Path

import torch

from .configs import CONFIGS, SAM2Config, get_config
from .devices import resolve_device, tune_cpu_allocator
from .hub import CheckpointNotFoundError, download_checkpoint, how_to_get
from .modeling.sam2 import SAM2Model
from .modes import apply_modes, check_modes

__all__ = ["build_sam2", "build_sam2_video_predictor", "build_model", "load_checkpoint", "load_state_dict_file",
           "identify_config", "CheckpointError", "CheckpointNotFoundError"]


class CheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be used; the message names the cause."""


def build_model(config: SAM2Config, device="cpu") -> SAM2Model:
    """A model with random weights (for tests and for loading into)."""
    return SAM2Model(config).to(resolve_device(device)).eval()


def build_sam2(name: str, checkpoint: str | Path | None = None, device="cpu",
               image_size: int | None = None, revision: str | None = None, *,
               precision: str = "fp32", compile: bool = False, quantize: str | None = None) -> SAM2Model:
    """Build ``name`` (``sam2-hiera-tiny``, ..., or a hub id such as ``facebook/sam2.1-hiera-large``)
    with its official weights.

    checkpoint: a local ``.pt`` file; None fetches the official file through the hub cache
    (``revision`` picks a hub revision). image_size: the input resolution, None keeps 1024.
    precision ("fp32" or "bf16"), compile, quantize (None or "int8"): opt-in faster modes
    (``sam2kit.modes``).
    """
    check_modes(precision, compile, quantize)
    config = get_config(name, image_size)
    if checkpoint is None:
        checkpoint = download_checkpoint(config, revision)
    return apply_modes(load_checkpoint(config, checkpoint, device), precision, compile, quantize)


def build_sam2_video_predictor(name: str, checkpoint: str | Path | None = None, device="cpu",
                               image_size: int | None = None, revision: str | None = None, *,
                               precision: str = "fp32", compile: bool = False, quantize: str | None = None,
                               **kwargs):
    """A ``SAM2VideoPredictor`` for ``name`` (as ``build_sam2``); other keyword arguments go to
    the predictor (``fill_hole_area``, ``non_overlap_masks``, ...)."""
    from .video_predictor import SAM2VideoPredictor

    model = build_sam2(name, checkpoint, device, image_size, revision, precision=precision,
                       compile=compile, quantize=quantize)
    return SAM2VideoPredictor(model, **kwargs)


def load_pretrained(model_id: str, device="cpu", image_size: int | None = None, revision: str | None = None,
                    checkpoint: str | Path | None = None, precision: str = "fp32", compile: bool = False,
                    quantize: str | None = None) -> SAM2Model:
    """The model behind the predictors' ``from_pretrained``: a hub id, a model name or the path
    of a local checkpoint file (its configuration identified from its contents), in the
    given modes."""
    check_modes(precision, compile, quantize)
    config, path = resolve_model_source(model_id, checkpoint, image_size, revision)
    return apply_modes(load_checkpoint(config, path, device), precision, compile, quantize)


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``model`` state dict of an official checkpoint, loaded safely (weights only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint file {str(path)!r} does not exist")
    try:
        mmap = zipfile.is_zipfile(path)
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # torch raises many kinds for a damaged file
        raise CheckpointError(
            f"cannot read checkpoint {str(path)!r}: {e.__class__.__name__}: "
            f"{(str(e).splitlines() or [''])[0].rstrip('.')}. The file is damaged or not a PyTorch checkpoint (a truncated download?); "
            "delete it and download it again"
        ) from e
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        return obj["model"]
    raise CheckpointError(
        f"{str(path)!r} is not an official SAM 2 checkpoint: expected a dict with a 'model' "
        f"state dict, found {type(obj).__name__}"
        + (f" with keys {sorted(obj)[:6]}" if isinstance(obj, dict) else "")
    )


@functools.lru_cache(maxsize=None)
def _expected_shapes(config: SAM2Config) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of ``config``'s state dict (the image size changes none of them)."""
    with torch.device("meta"):
        model = SAM2Model(config.with_image_size(1024) if config.image_size != 1024 else config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def identify_config(state_dict: dict[str, torch.Tensor]) -> SAM2Config | None:
    """The official config whose keys and shapes the state dict matches exactly, or None."""
    shapes = {k: tuple(v.shape) for k, v in state_dict.items()}
    for config in CONFIGS.values():
        if _expected_shapes(config) == shapes:
            return config
    return None


def _mismatch_message(config: SAM2Config, sd: dict[str, torch.Tensor], expected: dict) -> str | None:
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    wrong_shape = sorted(k for k in set(sd) & set(expected) if tuple(sd[k].shape) != expected[k])
    if not (missing or unexpected or wrong_shape):
        return None
    parts = [f"checkpoint does not fit {config.name}:"]
    if missing:
        parts.append(f"{len(missing)} missing keys ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys ({', '.join(unexpected[:5])}{', ...' if len(unexpected) > 5 else ''})")
    if wrong_shape:
        k = wrong_shape[0]
        parts.append(f"{len(wrong_shape)} keys of another shape (e.g. {k}: {tuple(sd[k].shape)} "
                     f"in the file, {expected[k]} expected)")
    match = identify_config(sd)
    sam21_keys = {"no_obj_embed_spatial", "obj_ptr_tpos_proj.weight"}
    if match is not None:
        cause = f"it is a {match.name} checkpoint: use that model name"
    elif sam21_keys & set(unexpected) and not config.is_sam21:
        cause = "it looks like a SAM 2.1 checkpoint given to a SAM 2.0 config: use the sam2.1-hiera-* name"
    elif sam21_keys & set(missing) and config.is_sam21:
        cause = "it looks like a SAM 2.0 checkpoint given to a SAM 2.1 config: use the sam2-hiera-* name"
    elif wrong_shape or any(k.startswith("image_encoder.trunk.blocks.") for k in missing + unexpected):
        cause = "it is for a different model size (tiny, small, base-plus, large)"
    elif missing and not unexpected:
        cause = "keys are missing: a truncated or partial file; download it again"
    else:
        cause = "it is not an official SAM 2 checkpoint"
    return " ".join(parts) + f". Likely cause: {cause}"


def load_checkpoint(config: SAM2Config, checkpoint: str | Path, device="cpu") -> SAM2Model:
    """Build ``config`` on the meta device and assign the checkpoint's tensors (strict)."""
    device = resolve_device(device)
    sd = load_state_dict_file(checkpoint)
    expected = _expected_shapes(config)
    problem = _mismatch_message(config, sd, expected)
    if problem:
        raise CheckpointError(f"{problem} (file: {checkpoint})")
    sd = {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}
    with torch.device("meta"):
        model = SAM2Model(config)
    model.load_state_dict(sd, strict=True, assign=True)
    model.materialize_constants()
    if device.type == "cpu":
        tune_cpu_allocator()
    return model.to(device).eval()


def resolve_model_source(model: str, checkpoint: str | Path | None = None,
                         image_size: int | None = None,
                         revision: str | None = None) -> tuple[SAM2Config, Path]:
    """Map what a user names (a model name, a hub id, or a checkpoint path) to a config and a
    checkpoint file. A path alone is identified by its keys and shapes."""
    if checkpoint is None and (Path(model).suffix in (".pt", ".pth") or Path(model).is_file()):
        sd = load_state_dict_file(model)
        config = identify_config(sd)
        if config is None:
            raise CheckpointError(
                f"{model!r} matches none of the official SAM 2 / 2.1 configs; name the model "
                "explicitly (e.g. sam2-hiera-tiny) to see which keys differ"
            )
        return config.with_image_size(image_size), Path(model)
    config = get_config(model, image_size)
    if checkpoint is None:
        checkpoint = download_checkpoint(config, revision)
    return config, Path(checkpoint)


__all__ += ["resolve_model_source", "how_to_get"]
