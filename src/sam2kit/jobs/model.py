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
    backend: str = "torch"  # torch, openvino (the image encoder on OpenVINO), onnx (the export in ``onnx``)
    onnx: Path | None = None  # a folder written by ``sam2kit export``: run it on ONNX Runtime


ONNX_BACKEND = "onnx"


def uses_onnx(spec: ModelSpec) -> bool:
    """Whether ``spec`` runs an exported model on ONNX Runtime (``--backend onnx`` or ``--onnx DIR``)."""
    return spec.backend == ONNX_BACKEND or spec.onnx is not None


def model_source(model: str | None, sam21: bool) -> str:
    """The hub id, model name or checkpoint path that ``--model``/``--sam2.1`` name
    (``sam2kit.model_id``); a InputError for an unknown name."""
    try:
        return sam2kit.model_id(model, sam21)
    except ValueError as e:
        raise InputError(one_line(e)) from None


def check_model_options(args: ModelSpec) -> str:
    """Validate --model, --checkpoint and --device before any slow work; returns the source
    (for an ONNX export: its folder)."""
    if uses_onnx(args):
        return str(check_onnx_options(args))
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


def check_onnx_options(args: ModelSpec) -> Path:
    """The export folder of an ONNX run, checked (it holds a manifest; no option that only the
    PyTorch model has is given); an InputError naming the fix."""
    if args.onnx is None:
        raise InputError("--backend onnx runs a model exported with `sam2kit export --model ID -o DIR`: "
                         "give that folder with --onnx DIR")
    folder = args.onnx.expanduser()
    if not (folder / "manifest.json").is_file():
        what = "does not exist" if not folder.exists() else "holds no manifest.json"
        raise InputError(f"--onnx {str(args.onnx)!r} {what}: give the folder written by "
                         "`sam2kit export --model ID -o DIR`")
    given = [name for name, on in (("--model", args.model is not None), ("--sam2.1", args.sam21),
                                   ("--checkpoint", args.checkpoint is not None),
                                   ("--revision", args.revision is not None),
                                   ("--precision bf16", args.precision != "fp32"), ("--compile", args.compile),
                                   ("--int8", args.int8), ("--backend " + args.backend,
                                                           args.backend not in ("torch", ONNX_BACKEND)))
             if on]
    if given:
        raise InputError(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to an ONNX "
                         f"export (its model, weights and fp32 graphs were fixed by `sam2kit export`): "
                         "leave them out, or run the PyTorch model without --onnx")
    onnx_providers(args.device)
    return folder


def onnx_providers(device: str) -> list[str]:
    """ONNX Runtime's execution providers for ``--device``: cpu and auto take the CPU provider
    (the export's default), cuda the CUDA provider where this onnxruntime has it."""
    try:
        import onnxruntime
    except ImportError:
        raise InputError("--onnx needs ONNX Runtime: pip install 'sam2kit[onnx]'") from None
    if device in ("auto", "cpu"):
        return ["CPUExecutionProvider"]
    if device == "cuda" or device.startswith("cuda:"):
        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            raise InputError(f"--device {device}: this onnxruntime has no CUDA provider (it has "
                             f"{', '.join(onnxruntime.get_available_providers())}); install "
                             "onnxruntime-gpu, or use --device cpu")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise InputError(f"--device {device!r} is not one an ONNX export runs on: use cpu, auto or cuda")


def load_onnx(args: ModelSpec, console: Console, image_size: int | None):
    """The ONNX export named by ``args.onnx`` (``sam2kit.onnx.OnnxSAM2``), and a dict describing
    it for results.json."""
    from sam2kit.onnx.model import OnnxModelError, OnnxSAM2

    folder = check_onnx_options(args)
    providers = onnx_providers(args.device)
    t0 = time.perf_counter()
    try:
        model = OnnxSAM2(folder, providers)
    except (OnnxModelError, ValueError, OSError) as e:
        raise InputError(one_line(e)) from None
    if image_size is not None and image_size != model.image_size:
        raise InputError(f"--resolution {image_size}: the export in {folder} was made at "
                         f"{model.image_size} px; leave --resolution out, or export again with "
                         f"--resolution {image_size}")
    load_s = time.perf_counter() - t0
    m = model.manifest["model"]
    console.note(f"model {m['name']} at {model.image_size} px from the ONNX export in {folder} on "
                 f"ONNX Runtime ({', '.join(providers)})")
    info = {"model": str(folder.resolve()), "model_config": m["name"], "hub_id": m.get("id"),
            "checkpoint": None, "revision": None, "device": "cuda" if "CUDAExecutionProvider" in providers
            else "cpu", "resolution": model.image_size, "precision": "fp32", "compile": False,
            "int8": False, "backend": ONNX_BACKEND, "onnx": {"folder": str(folder.resolve()),
                                                             "providers": providers,
                                                             "opset": model.manifest.get("opset"),
                                                             "sam2kit_version": model.manifest.get("sam2kit_version")},
            "load_model_s": round(load_s, 4)}
    return model, info


def image_predictor(model):
    """The image predictor for a loaded model: ``SAM2ImagePredictor``, or ``OnnxImagePredictor``
    for an ONNX export (``load_onnx``)."""
    from sam2kit.onnx.model import OnnxSAM2

    if isinstance(model, OnnxSAM2):
        from sam2kit.onnx.image import OnnxImagePredictor

        return OnnxImagePredictor(model)
    from sam2kit import SAM2ImagePredictor

    return SAM2ImagePredictor(model)


def video_predictor(model):
    """The video predictor for a loaded model: ``SAM2VideoPredictor``, or ``OnnxVideoPredictor``
    for an ONNX export (``load_onnx``)."""
    from sam2kit.onnx.model import OnnxSAM2

    if isinstance(model, OnnxSAM2):
        from sam2kit.onnx.video import OnnxVideoPredictor

        return OnnxVideoPredictor(model)
    from sam2kit import SAM2VideoPredictor

    return SAM2VideoPredictor(model)


def load_model(args: ModelSpec, console: Console, image_size: int | None):
    """The SAM 2 model named by the options (an ONNX export with ``--onnx``), and a dict
    describing it for results.json."""
    if uses_onnx(args):
        return load_onnx(args, console, image_size)
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
