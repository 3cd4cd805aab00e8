"""SAM 2's image encoder in PyTorch (the reference's and sam2kit's), OpenVINO and ONNX Runtime,
side by side on this CPU: the export, the compile, the time per image and the accuracy.

The encoder is most of ``set_image`` and of a video frame; this is where a CPU runtime could
beat PyTorch. Each runtime runs the same graph (sam2-hiera-tiny, the random weights of
``benchmarks/speed.py``, one 1024x1024 image): the Hiera trunk, the FPN neck and the mask
decoder's two high-resolution projections, which is what ``SAM2Model.encode_image`` computes.

- reference: ``sam2==1.1.0``'s ``forward_image`` (+ the two projections), in its own environment.
- sam2kit torch fp32 / bf16: ``encode_image`` (bf16 where the CPU has native bf16).
- sam2kit openvino f32 / bf16: ``backend="openvino"`` — ``torch.export`` + ``openvino.convert_model``,
  compiled with OpenVINO's f32 or bf16 inference precision (``sam2kit.modes.openvino``).
- onnxruntime fp32: ``torch.onnx.export`` (dynamo) of the same module, ONNX Runtime's CPU provider
  (``pip install onnx onnxscript onnxruntime``; left out if missing).

Accuracy: the relative error (L2 norm of the difference over the norm) of the vision features
and the larger of the two high-resolution ones, against sam2kit torch fp32 (which matches the
reference to float precision, tests/test_parity_image.py).

    python benchmarks/openvino_compare.py --json out/openvino.json      # ~5 min, 2 threads
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from speed import DEFAULT_REFERENCE_PYTHON, REFERENCE_YAML, _median_times, make_inputs  # noqa: E402


def _median(fn, runs: int) -> float:
    fn()  # warm-up
    return _median_times(fn, runs)


def _image(size: int = 1024):
    import torch

    g = torch.Generator().manual_seed(0)
    return torch.randn(1, 3, size, size, generator=g)


def reference_child(checkpoint: str, runs: int, threads: int) -> dict:
    """Run under the reference's Python: its encoder's time."""
    import torch
    from sam2.build_sam import build_sam2

    torch.set_num_threads(threads)
    model = build_sam2(REFERENCE_YAML, ckpt_path=checkpoint, device="cpu")
    x = _image()

    def encode():  # forward_image applies the decoder's two high-resolution projections itself
        return model.forward_image(x)["backbone_fpn"]

    with torch.inference_mode():
        return {"encode_s": _median(encode, runs)}


def rel(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="timed runs per runtime (median), after a warm-up")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reference-python", default=str(DEFAULT_REFERENCE_PYTHON))
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--reference-child", nargs=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.reference_child:
        print("RESULT " + json.dumps(reference_child(args.reference_child[0], args.runs, args.threads)))
        return

    import torch

    torch.set_num_threads(args.threads)
    from sam2kit import build_sam2, modes, tune_cpu_allocator
    from sam2kit.kernels import tuning

    tune_cpu_allocator()  # as the command line and benchmarks/speed.py run sam2kit
    from sam2kit.modes.openvino import import_openvino

    ov = import_openvino()
    work = Path(tempfile.mkdtemp(prefix="sam2kit-ov-"))
    inputs = make_inputs(work, frames=1)
    ckpt = inputs["checkpoint"]
    x = _image()
    rows, outputs = {}, {}

    def features(feats):
        return [feats.vision_features.numpy(), feats.high_res[0].numpy(), feats.high_res[1].numpy()]

    # the reference, in its own environment
    if Path(args.reference_python).is_file():
        out = subprocess.run([args.reference_python, __file__, "--reference-child", ckpt, "--runs", str(args.runs),
                              "--threads", str(args.threads)], capture_output=True, text=True,
                             env=dict(os.environ, PYTHONPATH=""))
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        if out.returncode or not lines:
            raise SystemExit(f"the reference failed:\n{out.stderr[-3000:]}")
        rows["reference (torch fp32)"] = json.loads(lines[-1][7:])
    else:
        print(f"no reference environment at {args.reference_python}: its row is left out", file=sys.stderr)

    native_bf16 = modes.native_bf16_cpu()
    precisions = ["fp32"] + (["bf16"] if native_bf16 else [])
    with torch.inference_mode():
        for precision in precisions:
            model = build_sam2("sam2-hiera-tiny", ckpt, precision=precision)
            name = f"sam2kit torch {precision}"
            rows[name] = {"encode_s": _median(lambda: model.encode_image(x), args.runs)}
            outputs[name] = features(model.encode_image(x))
        os.environ["SAM2KIT_OPENVINO_CACHE"] = str(work / "openvino-cache")  # a cold export, timed
        for precision in precisions:
            name = f"sam2kit openvino {'f32' if precision == 'fp32' else 'bf16'}"
            t = time.perf_counter()
            model = build_sam2("sam2-hiera-tiny", ckpt, precision=precision, backend="openvino")
            first = time.perf_counter() - t
            t = time.perf_counter()
            model = build_sam2("sam2-hiera-tiny", ckpt, precision=precision, backend="openvino")
            again = time.perf_counter() - t
            rows[name] = {"encode_s": _median(lambda: model.encode_image(x), args.runs),
                          "first_load_s (export if not cached + compile)": round(first, 2),
                          "later_load_s": round(again, 2)}
            outputs[name] = features(model.encode_image(x))

    try:
        import onnxruntime as ort

        from sam2kit.modes.openvino import _EncoderGraph

        model = build_sam2("sam2-hiera-tiny", ckpt)
        onnx_path = work / "encoder.onnx"
        t = time.perf_counter()
        with tuning.pinned(**{n: c.default for n, c in tuning.CHOICES.items()}), torch.no_grad():
            torch.onnx.export(_EncoderGraph(model).eval(), (x,), str(onnx_path), dynamo=True, external_data=False)
        export_s = time.perf_counter() - t
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        t = time.perf_counter()
        sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        load_s = time.perf_counter() - t
        feed = {sess.get_inputs()[0].name: x.numpy()}
        rows["onnxruntime fp32"] = {"encode_s": _median(lambda: sess.run(None, feed), args.runs),
                                    "first_load_s (export + compile)": round(export_s + load_s, 2)}
        outputs["onnxruntime fp32"] = sess.run(None, feed)
    except ImportError as e:
        print(f"ONNX Runtime row left out ({e}): pip install onnx onnxscript onnxruntime", file=sys.stderr)

    base = outputs["sam2kit torch fp32"]
    ref_s = rows.get("reference (torch fp32)", {}).get("encode_s")
    for name, row in rows.items():
        row["encode_s"] = round(row["encode_s"], 3)
        if ref_s:
            row["speed-up vs reference"] = round(ref_s / row["encode_s"], 2)
        if name in outputs:
            o = outputs[name]
            row["rel. error vision features"] = float(f"{rel(o[0], base[0]):.2e}")
            row["rel. error high-res features"] = float(f"{max(rel(o[1], base[1]), rel(o[2], base[2])):.2e}")
    result = {"cpu": tuning.cpu_model(), "native_bf16": native_bf16, "threads": args.threads,
              "torch": torch.__version__, "openvino": ov.__version__, "runs": args.runs, "rows": rows}
    text = json.dumps(result, indent=1)
    print(text)
    print(f"\nimage encoder, sam2-hiera-tiny at 1024, {result['cpu']}, {args.threads} threads:")
    for name, row in rows.items():
        extra = ", ".join(f"{k} {v}" for k, v in row.items() if k != "encode_s")
        print(f"  {name:26s} {row['encode_s']:.3f} s  {extra}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(text + "\n")
        tmp.replace(args.json)


if __name__ == "__main__":
    main()
