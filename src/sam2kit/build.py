"""Building models and loading official checkpoints (``{"model": state_dict}`` files)."""

from __future__ import annotations

import functools
import inspect
import zipfile
from pathlib import Path

import torch

from sam2kit.configs import CONFIGS, SAM2Config, get_config
from sam2kit.devices import resolve_device
from sam2kit.hub import CheckpointNotFoundError, download_checkpoint, how_to_get
from sam2kit.modeling.sam2 import SAM2Model
from sam2kit.modes import apply_modes, check_modes
from sam2kit.errors import CheckpointError

__all__ = ["build_sam2", "load_model", "resolve_model", "model_id", "build_model", "load_checkpoint",
           "load_state_dict_file", "identify_config", "FromPretrained", "CheckpointError",
           "CheckpointNotFoundError", "SHORT_NAMES"]

# short model names (the command line's --model) -> the size part of the official names
SHORT_NAMES = {"tiny": "tiny", "t": "tiny", "small": "small", "s": "small", "base-plus": "base-plus",
               "base_plus": "base-plus", "b+": "base-plus", "large": "large", "l": "large"}


def build_model(config: SAM2Config, device="cpu") -> SAM2Model:
    """A model with random weights (for tests and for loading into)."""
    return SAM2Model(config).to(resolve_device(device)).eval()


def build_sam2(name: str, checkpoint: str | Path | None = None, device="cpu",
               image_size: int | None = None, revision: str | None = None, *,
               precision: str = "fp32", compile: bool = False, quantize: str | None = None,
               backend: str = "torch") -> SAM2Model:
    """Build ``name`` (``sam2-hiera-tiny``, ..., or a hub id such as ``facebook/sam2.1-hiera-large``)
    with its official weights.

    checkpoint: a local ``.pt`` file; None fetches the official file through the hub cache
    (``revision`` picks a hub revision). image_size: the input resolution, None keeps 1024.
    precision ("fp32" or "bf16"), compile, quantize (None or "int8"), backend ("torch" or
    "openvino", the image encoder's runtime): opt-in faster modes (``sam2kit.modes``).
    """
    check_modes(precision, compile, quantize, backend)
    config = get_config(name, image_size)
    if checkpoint is None:
        checkpoint = download_checkpoint(config, revision)
    return apply_modes(load_checkpoint(config, checkpoint, device), precision, compile, quantize, backend)


def load_model(model: str | Path = "facebook/sam2-hiera-tiny", device="cpu", image_size: int | None = None,
               revision: str | None = None, checkpoint: str | Path | None = None, *,
               precision: str = "fp32", compile: bool = False, quantize: str | None = None,
               backend: str = "torch") -> SAM2Model:
    """The one loading path behind every ``from_pretrained`` and the command line.

    model: a hub id (``facebook/sam2-hiera-tiny``), a model name (``sam2.1-hiera-large``) or
    the path of a local checkpoint file (its model identified from its keys and shapes);
    checkpoint: the weights of ``model`` from a local file instead of the hub; revision: a hub
    revision; image_size: the input resolution (None: 1024); precision ("fp32"/"bf16"),
    compile, quantize (None/"int8"), backend ("torch"/"openvino"): opt-in faster modes
    (``sam2kit.modes``). Loading changes
    nothing in the process (``sam2kit.tune_cpu_allocator`` is for the host to call)."""
    check_modes(precision, compile, quantize, backend)
    config, path = resolve_model(str(model), checkpoint, image_size, revision)
    return apply_modes(load_checkpoint(config, path, device), precision, compile, quantize, backend)


class FromPretrained:
    """``from_pretrained`` for the predictors and the automatic mask generator: the model from
    ``load_model``, every other keyword argument to the class's constructor (an unknown one is
    a TypeError)."""

    @classmethod
    def from_pretrained(cls, model_id: str, device="cpu", image_size: int | None = None,
                        revision: str | None = None, checkpoint: str | Path | None = None, *,
                        precision: str = "fp32", compile: bool = False, quantize: str | None = None,
                        backend: str = "torch",
                        **kwargs):
        """model_id: a hub id (``facebook/sam2-hiera-tiny``), a model name
        (``sam2.1-hiera-large``) or the path of a local checkpoint file; device, image_size,
        revision, checkpoint, precision ("fp32"/"bf16"), compile, quantize (None/"int8"), backend: as
        ``sam2kit.load_model``. Other keyword arguments go to the constructor."""
        params = inspect.signature(cls.__init__).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        unknown = sorted(k for k in kwargs if k not in list(params)[2:]) if not takes_any else []
        if unknown:
            raise TypeError(f"{cls.__name__}.from_pretrained() got unexpected keyword arguments "
                            f"{unknown}; it takes device, image_size, revision, checkpoint, precision, "
                            f"compile, quantize, backend and the constructor's {list(params)[2:]}")
        model = load_model(model_id, device, image_size, revision, checkpoint, precision=precision,
                           compile=compile, quantize=quantize, backend=backend)
        return cls(model, **kwargs)


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
    return model.to(device).eval()


def model_id(name: str | None = None, sam21: bool = False) -> str:
    """What a user names, as ``load_model`` takes it: a short size name (``tiny``, ``small``,
    ``base-plus``/``b+``, ``large``; None is tiny) becomes the hub id of that SAM 2 model, or of
    SAM 2.1 with ``sam21``; a model name, hub id or checkpoint path is checked and returned.
    ValueError names the problem."""
    text = (name or "tiny").strip()
    if text.lower() in SHORT_NAMES:
        return f"facebook/{'sam2.1' if sam21 else 'sam2'}-hiera-{SHORT_NAMES[text.lower()]}"
    path = Path(text).expanduser()
    if path.is_file() or path.suffix in (".pt", ".pth"):
        if not path.is_file():
            raise ValueError(f"checkpoint file {text!r} does not exist; check the path, or name a model "
                             "(tiny, small, base-plus, large) to download it")
        if sam21:
            raise ValueError("SAM 2.1 (--sam2.1) is chosen with a short model name (tiny, small, "
                             "base-plus, large); a checkpoint file's model is identified from its contents")
        return str(path)
    try:
        config = get_config(text)
    except ValueError:
        raise ValueError(f"unknown model {text!r}; use tiny, small, base-plus or large (with --sam2.1 "
                         "for SAM 2.1), a name such as sam2.1-hiera-large, a hub id such as "
                         "facebook/sam2-hiera-tiny, or the path of a .pt checkpoint "
                         "(`sam2kit models` lists them)") from None
    if sam21 and not config.is_sam21:
        raise ValueError(f"SAM 2.1 (--sam2.1) was asked for but {text} is a SAM 2.0 model; use "
                         f"{config.name.replace('sam2-', 'sam2.1-')} or a short name")
    return text


def resolve_model(model: str, checkpoint: str | Path | None = None, image_size: int | None = None,
                  revision: str | None = None) -> tuple[SAM2Config, Path]:
    """Map what a user names (a model name, a hub id, or a checkpoint path) to a config and a
    checkpoint file, downloading through the hub cache when needed. A path alone is
    identified by its keys and shapes."""
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


__all__ += ["how_to_get"]
