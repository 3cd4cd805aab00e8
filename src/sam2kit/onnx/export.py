"""Export a SAM 2 model to ONNX: one file per module and a manifest (needs PyTorch and ``onnx``).

``export_onnx(model, out_dir)`` writes into ``out_dir`` (refused when it exists and is not empty,
unless ``overwrite``; written in a temporary folder beside it, then renamed, so a failed export
leaves nothing half-written):

- ``image_encoder.onnx``, ``prompt_decoder.onnx``, ``memory_attention.onnx``,
  ``memory_encoder.onnx`` (``sam2kit.onnx.graphs`` documents each one's inputs and outputs);
- ``manifest.json``: model, SAM 2.0/2.1 flags, resolution, preprocessing, tracking constants,
  every file's inputs and outputs (names, shapes with named dynamic axes, dtypes), opset, the
  sam2kit version, SHA-256 of each file, and the max abs error of each graph against the eager
  model measured at export.

The model is exported in fp32 with the TorchScript exporter (``torch.onnx.export(...,
dynamo=False)``) from the eager modules; the kernel choices of ``sam2kit.kernels.tuning`` are not used
(traced with the plain PyTorch operators).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from sam2kit import __version__
from sam2kit.modeling.sam2 import NO_OBJ_SCORE, PIXEL_MEAN, PIXEL_STD, SAM2Model
from sam2kit.onnx.graphs import ImageEncoderGraph, MemoryAttentionGraph, MemoryEncoderGraph, PromptDecoderGraph

OPSET = 17
FORMAT_VERSION = 1


class ExportError(RuntimeError):
    """A module that cannot be exported; the message names the operator and the reason."""


def _specs(model: SAM2Model) -> dict:
    """name -> (graph class, example inputs, input names, output names, dynamic axes)."""
    cfg = model.config
    s, c, mem = cfg.image_size, cfg.d_model, cfg.mem_dim
    h = s // cfg.backbone_stride
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g)

    feats = dict(image_embed=rand(1, c, h, h), high_res_feats_0=rand(1, c // 8, 4 * h, 4 * h),
                 high_res_feats_1=rand(1, c // 4, 2 * h, 2 * h))
    return {
        "image_encoder": (ImageEncoderGraph, dict(image=rand(1, 3, s, s)),
                          ["image_embed", "high_res_feats_0", "high_res_feats_1", "vision_features",
                           "vision_pos"], {}),
        "prompt_decoder": (PromptDecoderGraph, dict(
            **feats, point_coords=torch.rand(2, 3, 2, generator=g) * s,
            point_labels=torch.tensor([[1, 0, -1], [2, 3, 1]], dtype=torch.int32),
            mask_input=rand(2, 1, 4 * h, 4 * h), has_mask_input=torch.ones(1)),
            ["masks", "iou_predictions", "single_mask", "single_iou", "obj_ptr", "object_score_logits"],
            {"point_coords": {0: "B", 1: "N"}, "point_labels": {0: "B", 1: "N"}, "mask_input": {0: "B"},
             "masks": {0: "B"}, "iou_predictions": {0: "B"}, "single_mask": {0: "B"},
             "single_iou": {0: "B"}, "obj_ptr": {0: "B"}, "object_score_logits": {0: "B"}}),
        "memory_attention": (MemoryAttentionGraph, dict(
            vision_features=rand(1, c, h, h), vision_pos=rand(1, c, h, h), memory=rand(3, mem, h, h),
            memory_pos=rand(1, mem, h, h), memory_slots=torch.tensor([0, 5, 6]),
            obj_ptrs=rand(2, c), obj_ptr_offsets=torch.tensor([0.0, 1.0 / 15])),
            ["pix_feat"],
            {"memory": {0: "M"}, "memory_slots": {0: "M"}, "obj_ptrs": {0: "P"}, "obj_ptr_offsets": {0: "P"}}),
        "memory_encoder": (MemoryEncoderGraph, dict(
            vision_features=rand(1, c, h, h), masks=rand(2, 1, s, s) * 10,
            object_score_logits=torch.tensor([[1.0], [-1.0]]), binarize=torch.tensor(False)),
            ["maskmem_features", "maskmem_pos"],
            {"masks": {0: "B"}, "object_score_logits": {0: "B"}, "maskmem_features": {0: "B"},
             "maskmem_pos": {0: "B"}}),
    }


def _io_table(names: list[str], tensors, axes: dict) -> list[dict]:
    rows = []
    for name, t in zip(names, tensors):
        shape = [axes.get(name, {}).get(i, int(d)) for i, d in enumerate(t.shape)]
        rows.append({"name": name, "shape": shape, "dtype": str(t.dtype).replace("torch.", "")})
    return rows


def _export_one(name: str, model: SAM2Model, spec, path: Path) -> dict:
    import onnx

    cls, inputs, out_names, axes = spec
    graph = cls(model).eval()
    args = tuple(inputs.values())
    with torch.no_grad():
        expected = graph(*args)
    expected = expected if isinstance(expected, tuple) else (expected,)
    try:
        # traced with gradients on (parameters frozen) so that the plain PyTorch operators run,
        # not the kernels sam2kit's fp32 CPU inference picks (sam2kit.kernels.tuning)
        with torch.enable_grad(), warnings.catch_warnings():
            # the tracer's notes on Python values it records as constants (shapes fixed at export,
            # dynamic axes named) and on advanced indexing with negative indices (the graphs
            # index with memory slots 0..num_maskmem-1 only): each graph's error against the
            # eager model is measured below instead
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message="Exporting aten::index operator")
            torch.onnx.export(graph, args, str(path), input_names=list(inputs), output_names=out_names,
                              dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True,
                              dynamo=False)
    except Exception as e:  # name the operator when the exporter does
        raise ExportError(f"{name}: the TorchScript ONNX exporter failed ({type(e).__name__}: {e}); "
                          "an operator named above has no ONNX symbolic at opset "
                          f"{OPSET}") from e
    graph_file = onnx.load(str(path))
    if share_constants(graph_file.graph):
        onnx.save(graph_file, str(path))
    onnx.checker.check_model(str(path), full_check=True)
    # an input the module does not read is not in the graph (SAM 2.0's memory attention adds no
    # temporal encoding to object pointers, so it has no obj_ptr_offsets): list what the graph takes
    kept = {i.name for i in onnx.load(str(path), load_external_data=False).graph.input}
    names = [n for n in inputs if n in kept]
    return {"file": path.name, "inputs": _io_table(names, [inputs[n] for n in names], axes),
            "outputs": _io_table(out_names, expected, axes)}


def share_constants(graph) -> int:
    """Keep one Constant node per distinct value in ``graph`` (an onnx GraphProto), in place: the
    TorchScript exporter writes a table once per use (memory attention's RoPE cos/sin tables,
    one copy per attention layer and per use: most of the file at 1024 px). The kept nodes move
    to the front (a Constant has no inputs, so every use still comes after it) and the uses of
    the dropped ones read the kept ones. Returns the number of nodes dropped."""
    outputs = {o.name for o in graph.output}
    kept: dict[tuple, str] = {}
    rename: dict[str, str] = {}
    front, rest = [], []
    for node in graph.node:
        value = node.attribute[0].t if node.op_type == "Constant" and len(node.attribute) == 1 \
            and node.attribute[0].name == "value" else None
        if value is None or node.output[0] in outputs:
            rest.append(node)
            continue
        unnamed = type(value)()
        unnamed.CopyFrom(value)
        unnamed.name = ""
        key = (hashlib.sha256(unnamed.SerializeToString()).digest(),)
        if key in kept:
            rename[node.output[0]] = kept[key]
        else:
            kept[key] = node.output[0]
            front.append(node)
    if not rename:
        return 0
    _rename_inputs(rest, rename)
    del graph.node[:]
    graph.node.extend(front + rest)
    return len(rename)


def _rename_inputs(nodes, rename: dict[str, str]) -> None:
    """Point the inputs of ``nodes`` (and of their subgraphs, which may read outer names) at
    ``rename``'s targets."""
    import onnx

    for node in nodes:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _rename_inputs(attr.g.node, rename)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    _rename_inputs(g.node, rename)


def _max_errors(model: SAM2Model, folder: Path) -> dict:
    """Max abs difference of each graph's outputs from the eager model on its example inputs
    (ONNX Runtime, CPU), per output; None when onnxruntime is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        return {}
    out = {}
    for name, (cls, inputs, out_names, _) in _specs(model).items():
        with torch.no_grad():
            expected = cls(model).eval()(*inputs.values())
        expected = expected if isinstance(expected, tuple) else (expected,)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # errors only: not ONNX Runtime's notes on merged shape information
        sess = ort.InferenceSession(str(folder / f"{name}.onnx"), opts, providers=["CPUExecutionProvider"])
        takes = {i.name for i in sess.get_inputs()}
        got = sess.run(out_names, {k: v.numpy() for k, v in inputs.items() if k in takes})
        out[name] = {n: float(np.abs(g - e.numpy()).max()) for n, g, e in zip(out_names, got, expected)}
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def export_onnx(model: SAM2Model, out_dir: str | Path, overwrite: bool = False,
                model_id: str | None = None) -> dict:
    """Export ``model`` (a SAM2Model in fp32 on the CPU, no compile/quantize/backend) to
    ``out_dir``. Returns the manifest (also written as manifest.json)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise FileExistsError(f"{out_dir} exists and is not empty; choose a new folder or pass "
                              "overwrite=True (--overwrite)")
    if model.precision != "fp32" or model.encoder_backend is not None or model.device.type != "cpu":
        raise ValueError("export needs the fp32 eager model on the CPU (precision='fp32', "
                         "backend='torch', device='cpu')")
    for p in model.parameters():
        p.requires_grad_(False)
    cfg = model.config
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        files, timings = {}, {}
        for name, spec in _specs(model).items():
            t0 = time.perf_counter()
            files[name] = _export_one(name, model, spec, tmp / f"{name}.onnx")
            timings[name] = round(time.perf_counter() - t0, 3)
        for name, entry in files.items():
            path = tmp / entry["file"]
            entry["sha256"] = _sha256(path)
            entry["bytes"] = path.stat().st_size
        manifest = {
            "format": "sam2kit-onnx", "format_version": FORMAT_VERSION, "sam2kit_version": __version__,
            "opset": OPSET, "dtype": "float32", "exporter": f"torch.onnx (TorchScript) {torch.__version__}",
            "model": {"id": model_id or cfg.hub_id, "name": cfg.name, **{
                k: v for k, v in asdict(cfg).items() if not isinstance(v, tuple)}},
            "resolution": cfg.image_size,
            "preprocessing": {"size": cfg.image_size, "mean": list(PIXEL_MEAN), "std": list(PIXEL_STD),
                              "image_resize": "bilinear, antialiased, from [0, 1] floats (as torch)",
                              "video_frame_resize": "Pillow bicubic on uint8, then /255"},
            "tracking": {"no_obj_score": NO_OBJ_SCORE,
                         "mask_downsample_weight": model.mask_downsample.weight.reshape(-1).tolist(),
                         "mask_downsample_bias": float(model.mask_downsample.bias.item()),
                         "no_obj_ptr": model.no_obj_ptr.reshape(-1).tolist()},
            "files": files, "export_seconds": timings,
        }
        manifest["max_abs_error_vs_eager"] = _max_errors(model, tmp)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def export_pretrained(model: str, out_dir: str | Path, checkpoint: str | Path | None = None,
                      resolution: int | None = None, revision: str | None = None,
                      overwrite: bool = False) -> dict:
    """Load ``model`` (a hub id, a model name or a checkpoint file, as ``sam2kit.load_model``)
    in fp32 on the CPU and export it to ``out_dir`` (``export_onnx``): what ``sam2kit export
    --model ID [--checkpoint FILE] [--resolution N] -o DIR`` calls."""
    from sam2kit.build import load_model

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:  # before loading
        raise FileExistsError(f"{out} exists and is not empty; choose a new folder or pass "
                              "overwrite=True (--overwrite)")
    loaded = load_model(model, "cpu", resolution, revision, checkpoint)
    name = None if Path(str(model)).is_file() else str(model)  # a checkpoint file: the config's hub id
    return export_onnx(loaded, out, overwrite=overwrite, model_id=name)
