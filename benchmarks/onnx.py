"""The ONNX export against PyTorch, in one run: set_image time and video frames/s for the
reference (sam2==1.1.0), sam2kit torch fp32 and sam2kit's ONNX runtime (ONNX Runtime, CPU
provider, no PyTorch in its process), the export time, the files' sizes and each one's peak RSS;
and, at that size, how far the ONNX runtime's masks are from sam2kit torch's (and from the
reference's picture masks).

Same random tiny weights (sam2-hiera-tiny, official file format) and inputs as
benchmarks/speed.py (its helpers make them). Each implementation and workload runs in a fresh
process (its peak RSS is its own); figures are medians of --runs timed runs after a warm-up.

    nice python benchmarks/onnx.py --frames 8 --runs 3 --json benchmarks/results/CPU/onnx/onnx-1024.json
    python benchmarks/onnx.py --size 512 --no-reference
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# this file is onnx.py: with its folder on the search path (python puts a script's folder
# first), `import onnx` -- in the exporter, in torch.onnx -- would find this file instead
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]


def _load_speed():
    import importlib.util

    spec = importlib.util.spec_from_file_location("speed", HERE / "speed.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["speed"] = module
    spec.loader.exec_module(module)
    return module


speed = _load_speed()  # inputs, timing helpers, the reference's predictors


def _child_image(impl: str, job: dict) -> dict:
    import numpy as np
    from PIL import Image

    photo = np.array(Image.open(job["photo"]).convert("RGB"))
    if impl == "reference":
        from sam2.build_sam import build_sam2
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        s = job["size"]
        pred = SAM2ImagePredictor(build_sam2(speed.REFERENCE_YAML, ckpt_path=job["checkpoint"], device="cpu",
                                             hydra_overrides_extra=[f"++model.image_size={s}"] if s != 1024 else []))
        pred._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]
    elif impl == "sam2kit":
        from sam2kit import SAM2ImagePredictor

        pred = SAM2ImagePredictor.from_pretrained(job["checkpoint"], image_size=job["size"])
    else:
        from sam2kit.onnx import OnnxImagePredictor

        pred = OnnxImagePredictor(job["onnx"])
    pred.set_image(photo)  # warm-up
    set_image = speed._median_times(lambda: pred.set_image(photo), job["runs"])
    h, w = photo.shape[:2]
    predict = speed._median_times(lambda: pred.predict(np.array([[w / 2, h / 2]]), np.array([1])), job["runs"])
    masks, scores, _ = pred.predict(np.array([[w / 2, h / 2]]), np.array([1]))
    np.savez(job["masks"], masks=np.asarray(masks) > 0, scores=np.asarray(scores))  # for the accuracy check
    return {"set_image_s": set_image, "predict_s": predict}


def _child_video(impl: str, job: dict) -> dict:
    if impl == "onnx":
        from sam2kit.onnx import OnnxVideoPredictor

        pred = OnnxVideoPredictor(job["onnx"])
    elif impl == "reference":
        pred = speed._video_predictor("reference", job)
    else:
        from sam2kit import SAM2VideoPredictor

        pred = SAM2VideoPredictor.from_pretrained(job["checkpoint"], image_size=job["size"])
    state = pred.init_state(job["video"])
    w, h = speed.VIDEO_SIZE
    speed._track(pred, state, w, h, 3)  # warm-up
    fps = []
    for _ in range(job["runs"]):
        t = time.perf_counter()
        n = speed._track(pred, state, w, h, job["frames"])
        fps.append(n / (time.perf_counter() - t))
    _save_video_masks(pred, state, w, h, job)
    return {"video_fps": statistics.median(fps), "video_fps_runs": fps}


def _save_video_masks(pred, state, w: int, h: int, job: dict) -> None:
    """The masks of one more tracking pass (speed._track's prompt), for the accuracy check."""
    import numpy as np

    pred.reset_state(state)
    pred.add_new_points_or_box(state, 0, 1, points=np.array([[w / 2 + 120, h / 2]], dtype=np.float32),
                               labels=np.array([1], dtype=np.int32))
    frames = [np.asarray(m if isinstance(m, np.ndarray) else m.float().numpy()) > 0
              for _, _, m in pred.propagate_in_video(state, max_frame_num_to_track=job["frames"] - 1)]
    np.savez(job["masks"], masks=np.stack(frames))


def accuracy(work: Path, impls: list[str]) -> dict:
    """The ONNX runtime's masks against sam2kit torch's (and the reference's picture masks): the
    share of equal pixels (video: mean and worst frame) and the largest score difference. The
    reference's video masks are not compared: on the CPU it skips hole filling (CUDA only)."""
    import numpy as np

    def load(impl, workload):
        return np.load(work / f"masks-{impl}-{workload}.npz")

    out = {}
    o = load("onnx", "image")
    for impl in [i for i in impls if i != "onnx"]:
        r = load(impl, "image")
        out[f"image_vs_{impl}"] = {"pixels_equal": float((o["masks"] == r["masks"]).mean()),
                                   "max_score_diff": float(np.abs(o["scores"] - r["scores"]).max())}
    ov, tv = load("onnx", "video")["masks"], load("sam2kit", "video")["masks"]
    per_frame = [float((a == b).mean()) for a, b in zip(ov, tv)]
    out["video_vs_sam2kit"] = {"frames": len(per_frame), "pixels_equal_mean": float(np.mean(per_frame)),
                               "pixels_equal_worst_frame": float(np.min(per_frame))}
    return out


def _child_export(job: dict) -> dict:
    from sam2kit import build_sam2
    from sam2kit.onnx import export_onnx

    model = build_sam2("sam2-hiera-tiny", checkpoint=job["checkpoint"], image_size=job["size"])
    t = time.perf_counter()
    manifest = export_onnx(model, job["onnx"])
    return {"export_s": time.perf_counter() - t,
            "file_mb": {k: v["bytes"] / 2**20 for k, v in manifest["files"].items()},
            "max_abs_error_vs_eager": manifest["max_abs_error_vs_eager"]}


def child_main(spec: str) -> None:
    import resource

    job = json.loads(Path(spec).read_text())
    impl, workload = job["impl"], job["workload"]
    if impl != "onnx":
        import torch

        torch.set_num_threads(job["threads"])
    if workload == "export":
        res = _child_export(job)
    else:
        res = {"image": _child_image, "video": _child_video}[workload](impl, job)
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res["torch_imported"] = "torch" in sys.modules and sys.modules["torch"] is not None
    print("RESULT " + json.dumps(res))


def run_child(python: str, job: dict, work: Path) -> dict:
    spec = work / f"job-{job['impl']}-{job['workload']}.json"
    spec.write_text(json.dumps(job))
    env = dict(os.environ, PYTHONPATH=str(speed.ROOT / "src") if job["impl"] != "reference" else "",
               OMP_NUM_THREADS=str(job["threads"]))
    out = subprocess.run([python, __file__, "--child", str(spec)], capture_output=True, text=True, env=env)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode or not lines:
        raise SystemExit(f"{job['impl']} {job['workload']} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1024, help="model input size (1024: the trained size)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per figure (median)")
    ap.add_argument("--frames", type=int, default=8, help="video frames to track")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for every implementation")
    ap.add_argument("--no-reference", action="store_true", help="time sam2kit only")
    ap.add_argument("--json", type=Path, help="write every figure here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_main(args.child)
        return
    ref_python = os.environ.get("SAM2KIT_REFERENCE_PYTHON", str(speed.DEFAULT_REFERENCE_PYTHON))
    if not args.no_reference and not Path(ref_python).exists():
        raise SystemExit(f"no reference environment at {ref_python}: set SAM2KIT_REFERENCE_PYTHON or pass "
                         "--no-reference")
    results: dict = {"size": args.size, "threads": args.threads, "runs": args.runs, "frames": args.frames,
                     "cpu": speed.cpu_name(), "load_average_start": os.getloadavg(), "timings": {}}
    print(f"CPU {results['cpu']}; load average {results['load_average_start'][0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="sam2kit-onnx-bench-") as tmp:
        work = Path(tmp)
        job = dict(speed.make_inputs(work, args.frames + 3), runs=args.runs, frames=args.frames,
                   threads=args.threads, size=args.size, onnx=str(work / "onnx"),
                   mode={"image_size": args.size})
        results["export"] = run_child(sys.executable, dict(job, impl="sam2kit", workload="export"), work)
        print(f"export {results['export']['export_s']:.1f} s, peak RSS {results['export']['peak_rss_mb']:.0f} MB",
              flush=True)
        impls = ([("reference", ref_python)] if not args.no_reference else []) + \
            [("sam2kit", sys.executable), ("onnx", sys.executable)]
        for impl, python in impls:
            for workload in ("image", "video"):
                res = run_child(python, dict(job, impl=impl, workload=workload,
                                             masks=str(work / f"masks-{impl}-{workload}.npz")), work)
                results["timings"].setdefault(impl, {})[workload] = res
                print(impl, workload, json.dumps(res), flush=True)
        results["accuracy"] = accuracy(work, [i for i, _ in impls])
        print("accuracy", json.dumps(results["accuracy"]), flush=True)
    results["load_average_end"] = os.getloadavg()
    print_table(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def print_table(results: dict) -> None:
    print(f"\n{results['cpu']}; size {results['size']}, {results['threads']} threads, median of "
          f"{results['runs']} runs, video {results['frames']} frames; load average "
          f"{results['load_average_start'][0]:.2f} -> {results['load_average_end'][0]:.2f}")
    print(f"{'':12} {'set_image s':>12} {'RSS MB':>8} {'video fps':>10} {'RSS MB':>8} {'torch':>6}")
    for impl, row in results["timings"].items():
        im, vi = row["image"], row["video"]
        print(f"{impl:12} {im['set_image_s']:12.3f} {im['peak_rss_mb']:8.0f} {vi['video_fps']:10.3f} "
              f"{vi['peak_rss_mb']:8.0f} {str(im['torch_imported']):>6}")
    ex = results["export"]
    sizes = ", ".join(f"{k} {v:.1f} MB" for k, v in ex["file_mb"].items())
    print(f"export {ex['export_s']:.1f} s (peak RSS {ex['peak_rss_mb']:.0f} MB): {sizes}")


if __name__ == "__main__":
    main()
