"""The image encoder on OpenVINO: ``backend="openvino"`` (``pip install 'sam2kit[openvino]'``).

On CPUs with native bf16 (AVX-512 BF16, AMX), OpenVINO runs SAM 2's image encoder in bf16
faster than PyTorch's autocast does (docs/speed.md: 0.99 s against 1.26 s for tiny at 1024 on
an AMD EPYC Zen 4 with 2 threads), and the encoder is most of ``set_image`` and half of a video
frame. So the encoder, and only the encoder (the Hiera trunk, the FPN neck and the mask
decoder's two high-resolution projections), can run there; prompts, masks and memory stay in
PyTorch in the model's precision.

- ``precision="fp32"`` compiles with OpenVINO's f32 inference precision: features within about
  1e-6 (relative) of PyTorch's, not bit for bit; ``precision="bf16"`` with its bf16 precision
  hint (offered where PyTorch's bf16 is: CPUs with native bf16 instructions).
- The graph is exported once per model, resolution and software version with ``torch.export``
  and ``openvino.convert_model`` (full-precision weights), kept as OpenVINO IR under
  ``~/.cache/sam2kit/openvino/`` (``$XDG_CACHE_HOME``; ``SAM2KIT_OPENVINO_CACHE`` moves it),
  with OpenVINO's compiled blobs beside it: the first load of a model takes seconds to a minute
  (the export), later loads well under a second for tiny.
- CPU only; not with ``compile`` or ``quantize``. One inference request per call, so the
  shared model stays safe to use from several threads.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

# the code the exported graph is traced from (paths in the sam2kit package): a change to any of
# them makes a new cache entry
_SOURCES = ("modeling/hiera.py", "modeling/image_encoder.py", "modeling/common.py",
            "modeling/position_encoding.py", "modeling/sam2.py", "kernels/linear.py",
            "kernels/attention.py", "modes/openvino.py")


def import_openvino():
    """The ``openvino`` module, or an ImportError that says how to install it."""
    try:
        import openvino
    except ImportError:
        raise ImportError("backend='openvino' needs OpenVINO: pip install 'sam2kit[openvino]' "
                          "(or pip install openvino), or leave the backend at 'torch'") from None
    return openvino


def cache_dir() -> Path:
    if os.environ.get("SAM2KIT_OPENVINO_CACHE"):
        return Path(os.environ["SAM2KIT_OPENVINO_CACHE"])
    from sam2kit.kernels.tuning import cache_home

    return cache_home() / "openvino"


class _Writable:
    def __init__(self, ok: bool, reason: str = ""):
        self.ok, self.reason = ok, reason

    def __bool__(self) -> bool:
        return self.ok


def _writable(root: Path) -> _Writable:
    """Whether files can be made in ``root`` (made if missing): tried, not guessed from
    permissions (root ignores them; a read-only mount does not show in them)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=root)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        return _Writable(False, e.strerror or str(e))
    return _Writable(True)


class _EncoderGraph(nn.Module):
    """What is exported: normalised images [1, 3, S, S] -> (vision features, the two
    high-resolution features), as ``SAM2Model.encode_image`` computes them."""

    def __init__(self, model):
        super().__init__()
        self.image_encoder = model.image_encoder
        self.conv_s0 = model.sam_mask_decoder.conv_s0
        self.conv_s1 = model.sam_mask_decoder.conv_s1

    def forward(self, images):
        feats, _ = self.image_encoder(images)
        return feats[2], self.conv_s0(feats[0]), self.conv_s1(feats[1])


def graph_key(model) -> str:
    """What the exported graph depends on: the encoder's weights, the configuration and
    resolution, and the versions of sam2kit's modelling code, torch and OpenVINO."""
    import sam2kit

    ov = import_openvino()
    h = hashlib.sha256()
    h.update(f"{model.config.name}|{model.image_size}|{sam2kit.__version__}|{torch.__version__}|"
             f"{ov.__version__}".encode())
    here = Path(__file__).resolve().parent.parent  # the sam2kit package
    for rel in _SOURCES:
        h.update((here / rel).read_bytes())
    for name, t in _EncoderGraph(model).state_dict().items():
        h.update(name.encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return f"{model.config.name}-{model.image_size}-{h.hexdigest()[:16]}"


def export_ir(model, directory: Path) -> Path:
    """``directory/encoder.xml`` (and ``.bin``): the encoder graph of ``model`` as OpenVINO IR,
    exported now unless it is there; written into a temporary folder and renamed into place, so
    a crash or a second process never leaves half a model."""
    xml = directory / "encoder.xml"
    if xml.is_file() and xml.with_suffix(".bin").is_file():
        return xml
    ov = import_openvino()
    from sam2kit.kernels import tuning

    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    try:
        graph = _EncoderGraph(model).eval()
        example = torch.zeros(1, 3, model.image_size, model.image_size, device=model.device)
        # the default kernels (the measured choices are PyTorch kernels; OpenVINO picks its own)
        with tuning.pinned(**{name: c.default for name, c in tuning.CHOICES.items()}), torch.no_grad(), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.export's own deprecations
            exported = torch.export.export(graph, (example,))
            converted = ov.convert_model(exported)
        # weights stay fp32 in the IR (save_model's default would store them as fp16)
        ov.save_model(converted, tmp / "encoder.xml", compress_to_fp16=False)
        try:
            tmp.rename(directory)
        except OSError:  # another process put it there first: use theirs
            if not xml.is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return xml


class OpenVINOEncoder:
    """``SAM2Model.encode_image`` on OpenVINO for ``model`` (see the module doc); set as
    ``model.encoder_backend`` by ``sam2kit.modes.apply_modes``."""

    def __init__(self, model, precision: str = "fp32", threads: int | None = None):
        ov = import_openvino()
        if model.device.type != "cpu":
            raise ValueError(f"backend='openvino' runs on the CPU only, not {model.device}; use device='cpu'")
        self.model_ref = [model]  # not an attribute the model's modules would see
        self.size = model.image_size
        self.precision = precision
        root = cache_dir()
        writable = _writable(root)
        if not writable and not (root / graph_key(model) / "encoder.xml").is_file():
            from sam2kit.errors import InputError

            raise InputError(f"the OpenVINO cache folder {str(root)!r} cannot be written ({writable.reason}); "
                             "set SAM2KIT_OPENVINO_CACHE (or XDG_CACHE_HOME) to a writable folder, or "
                             "use --backend torch")
        self.ir = export_ir(model, root / graph_key(model))
        core = ov.Core()
        if writable:  # (a read-only cache with the model in it: used, compiled anew each time)
            core.set_property({"CACHE_DIR": str(root / "compiled")})
        self.compiled = core.compile_model(str(self.ir), "CPU", {
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads()),
            "PERFORMANCE_HINT": "LATENCY"})

    def __call__(self, images: torch.Tensor):
        from sam2kit.modeling.sam2 import ImageFeatures

        model = self.model_ref[0]
        if tuple(images.shape[1:]) != (3, self.size, self.size):
            raise ValueError(f"the OpenVINO encoder takes [B, 3, {self.size}, {self.size}] images, "
                             f"got {list(images.shape)}")
        outs = []
        for image in images.to(torch.float32).split(1):
            request = self.compiled.create_infer_request()  # one per call: safe across threads
            request.infer([image.contiguous().numpy()])
            outs.append([torch.from_numpy(request.get_output_tensor(i).data.copy()) for i in range(3)])
        vision, s0, s1 = (torch.cat(parts) for parts in zip(*outs))
        pos = model.image_encoder.neck.position_encoding(vision)
        return ImageFeatures(vision_features=vision, high_res=(s0, s1), vision_pos=pos)
