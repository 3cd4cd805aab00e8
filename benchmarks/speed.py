"""CPU speed of sam2kit against the reference (sam2==1.1.0), in one run.

Same random tiny weights (sam2-hiera-tiny, official file format), same inputs, same thread
count for both. Each implementation and workload runs in a fresh process (so each peak RSS
is its own); every figure is the median of --runs timed runs after a warm-up.

Workloads:
  image  set_image on a 1024x768 photo; one predict (one click, three candidates); the 3x3
         origin workflow (set_image, then each of nine grid points alone as a foreground
         prompt, keeping the best candidate). The reference runs the nine prompts one at a
         time, as its users do; sam2kit decodes them as one batch (same masks), and its
         one-at-a-time figure is reported too.
  video  one object clicked on frame 0 of a 640x480 clip (JPEG frames), tracked through
         --frames frames; frames/s = frames / (add_new_points_or_box + propagate_in_video).
         Opening the video (init_state) is timed apart.
  auto   automatic masks (SAM2AutomaticMaskGenerator.generate) on the photo, 32x32 grid, the
         reference's default settings unless --auto-settings (random weights: few or no masks
         pass its thresholds, so this times the decoding of the 1024 prompts and filtering);
         --auto-runs timed runs (default 1: minutes each), after a warm-up on a small crop.

    python benchmarks/speed.py                          # reference + sam2kit fp32, all workloads
    python benchmarks/speed.py --modes fp32 bf16 compile int8 512 --json out/speed.json
    python benchmarks/speed.py --profile                # + sam2kit per-module time and GFLOP/s

The reference runs in its own environment (SAM2KIT_REFERENCE_PYTHON, default
~/.cache/sam2kit-reference-env/bin/python; make it with ../shared/tools/make-reference-env).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_REFERENCE_PYTHON = Path.home() / ".cache/sam2kit-reference-env/bin/python"
REFERENCE_YAML = "configs/sam2/sam2_hiera_t.yaml"
MODEL = "sam2-hiera-tiny"
PHOTO_SIZE = (1024, 768)  # width, height
VIDEO_SIZE = (640, 480)
# sam2kit modes: name -> keyword arguments of build_sam2 / from_pretrained
MODES = {
    "fp32": {},
    "bf16": {"precision": "bf16"},
    "compile": {"compile": True},
    "int8": {"quantize": "int8"},
    "512": {"image_size": 512},
    "bf16-512": {"precision": "bf16", "image_size": 512},
    "openvino": {"backend": "openvino"},  # the image encoder on OpenVINO (pip install openvino)
    "openvino-bf16": {"backend": "openvino", "precision": "bf16"},
}


# ---- inputs (made by the parent with sam2kit's environment) -------------------------------

def make_inputs(work: Path, frames: int) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    from sam2kit import get_config
    from sam2kit.build import build_model

    torch.manual_seed(0)
    sd = build_model(get_config(MODEL)).state_dict()
    gen = torch.Generator().manual_seed(1)
    for v in sd.values():
        if v.is_floating_point():
            v.add_(0.02 * torch.randn(v.shape, generator=gen))
    # object present on every frame (as with real weights), so every frame runs the memory path
    sd["sam_mask_decoder.pred_obj_score_head.layers.2.bias"].fill_(8.0)
    ckpt = work / "tiny.pt"
    torch.save({"model": sd}, ckpt)

    photo = work / "photo.png"
    with Image.open(ROOT / "src/sam2kit/assets/sample_photo.png") as im:
        im.convert("RGB").resize(PHOTO_SIZE, Image.LANCZOS).save(photo)

    w, h = VIDEO_SIZE
    rng = np.random.default_rng(0)
    background = (rng.random((h, w, 3)) * 60 + 60).astype(np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    video = work / "frames"
    video.mkdir()
    for i in range(frames):
        img = background.copy()
        cx, cy = w / 2 + 120 * np.cos(i / 15), h / 2 + 80 * np.sin(i / 15)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < 70 ** 2] = (220, 60, 40)
        Image.fromarray(img).save(video / f"{i:05d}.jpg", quality=95)
    return {"checkpoint": str(ckpt), "photo": str(photo), "video": str(video), "frames": frames}


# ---- children ---------------------------------------------------------------------------

def _median_times(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _grid(w: int, h: int, n: int = 3):
    import numpy as np

    xs = (np.arange(n) + 0.5) * w / n
    ys = (np.arange(n) + 0.5) * h / n
    return np.array([(x, y) for y in ys for x in xs], dtype=np.float32)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_image(impl: str, job: dict) -> dict:
    import numpy as np
    from PIL import Image

    photo = np.array(Image.open(job["photo"]).convert("RGB"))
    h, w = photo.shape[:2]
    if impl == "reference":
        from sam2.build_sam import build_sam2
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        pred = SAM2ImagePredictor(build_sam2(REFERENCE_YAML, ckpt_path=job["checkpoint"], device="cpu"))
    else:
        from sam2kit import SAM2ImagePredictor

        pred = SAM2ImagePredictor.from_pretrained(job["checkpoint"], **job["mode"])
    grid = _grid(w, h)
    centre = np.array([[w / 2, h / 2]], dtype=np.float32)

    def one_predict():
        pred.predict(point_coords=centre, point_labels=np.array([1]), multimask_output=True)

    def workflow_one_at_a_time():
        pred.set_image(photo)
        best = []
        for p in grid:
            masks, scores, _ = pred.predict(point_coords=p[None], point_labels=np.array([1]),
                                            multimask_output=True)
            best.append(masks[int(np.argmax(scores))])
        return best

    def workflow_batched():
        pred.set_image(photo)
        masks, scores, _ = pred.predict(point_coords=grid[:, None, :], point_labels=np.ones((9, 1)),
                                        multimask_output=True)
        return [masks[i, int(np.argmax(scores[i]))] for i in range(len(grid))]

    import torch

    with torch.inference_mode():
        workflow_one_at_a_time()  # warm-up
        workflow_batched()
        one_predict()
        res = {
            "set_image_s": _median_times(lambda: pred.set_image(photo), job["runs"]),
            "predict_s": _median_times(one_predict, max(job["runs"], 10)),
        }
        if impl == "reference":
            res["workflow_3x3_s"] = _median_times(workflow_one_at_a_time, job["runs"])
        else:
            # the batched workflow gives the masks of the one-at-a-time one (up to float
            # rounding: a pixel whose logit is within ~1e-6 of the threshold may flip); with
            # int8 dynamic quantisation activation scales depend on the batch, so less so
            a, b = workflow_one_at_a_time(), workflow_batched()
            agree = min(float((x == y).mean()) for x, y in zip(a, b))
            if agree < 0.9999 and "quantize" not in job["mode"]:
                raise SystemExit(f"batched grid prompts gave other masks than one at a time ({agree})")
            res["workflow_3x3_batch_agreement"] = agree
            res["workflow_3x3_s"] = _median_times(workflow_batched, job["runs"])
            res["workflow_3x3_one_at_a_time_s"] = _median_times(workflow_one_at_a_time, job["runs"])
    return res


def _video_predictor(impl: str, job: dict):
    if impl == "reference":
        sys.path.insert(0, str(ROOT / "tests/parity"))
        from ref_patches import patch_for_cpu
        from sam2.build_sam import build_sam2_video_predictor

        pred = build_sam2_video_predictor(REFERENCE_YAML, ckpt_path=job["checkpoint"], device="cpu")
        patch_for_cpu(pred)
        return pred
    from sam2kit import SAM2VideoPredictor

    return SAM2VideoPredictor.from_pretrained(job["checkpoint"], **job["mode"])


def _track(pred, state, w: int, h: int, frames: int) -> int:
    import numpy as np

    pred.reset_state(state)
    pred.add_new_points_or_box(state, 0, 1, points=np.array([[w / 2 + 120, h / 2]], dtype=np.float32),
                               labels=np.array([1], dtype=np.int32))
    n = 0
    for _ in pred.propagate_in_video(state, max_frame_num_to_track=frames - 1):
        n += 1
    return n


def child_video(impl: str, job: dict) -> dict:
    import torch

    with torch.inference_mode():
        pred = _video_predictor(impl, job)
        t = time.perf_counter()
        options = {} if impl == "reference" else {"release_memory_every": 32}  # as the command line
        state = pred.init_state(job["video"], **options)
        init_s = time.perf_counter() - t
        w, h = VIDEO_SIZE
        _track(pred, state, w, h, 4)  # warm-up
        per_run = []
        for _ in range(job["runs"]):
            t = time.perf_counter()
            n = _track(pred, state, w, h, job["frames"])
            per_run.append(n / (time.perf_counter() - t))
    return {"video_fps": statistics.median(per_run), "video_fps_runs": per_run, "init_state_s": init_s}


def child_auto(impl: str, job: dict) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    photo = np.array(Image.open(job["photo"]).convert("RGB"))
    if impl == "reference":
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
        from sam2.build_sam import build_sam2

        gen = SAM2AutomaticMaskGenerator(build_sam2(REFERENCE_YAML, ckpt_path=job["checkpoint"], device="cpu"),
                                         **job["auto"])
    else:
        from sam2kit import SAM2AutomaticMaskGenerator, build_sam2

        gen = SAM2AutomaticMaskGenerator(build_sam2(MODEL, job["checkpoint"], **job["mode"]), **job["auto"])
    with torch.inference_mode():
        gen.generate(photo[:64, :64])  # warm-up (a full image takes minutes)
        found = []
        t = _median_times(lambda: found.append(len(gen.generate(photo))), job["auto_runs"])
    return {"auto_s": t, "auto_masks": found[-1]}


def _count_cpu_attention_flops() -> None:
    """torch's FLOP counter knows the CUDA attention kernels only: teach it the CPU one, and
    oneDNN's linear kernel."""
    import torch
    from torch.utils.flop_counter import register_flop_formula

    @register_flop_formula(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu)
    def _flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        b, h, n, e = query_shape
        return 2 * b * h * n * key_shape[-2] * (e + value_shape[-1])

    @register_flop_formula(torch.ops.mkldnn._linear_pointwise)  # oneDNN linear (sam2kit.kernels.tuning)
    def _linear_flops(x_shape, w_shape, *args, out_shape=None, **kwargs):
        rows = 1
        for d in x_shape[:-1]:
            rows *= d
        return 2 * rows * w_shape[0] * w_shape[1]


def child_profile(job: dict) -> dict:
    """sam2kit only: where a tracked frame's time goes (forward hooks on the model's parts)
    and the FLOPs of each part (torch's FLOP counter on the same frames)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    pred = _video_predictor("sam2kit", job)
    model = pred.model
    parts = {"image encoder": model.image_encoder, "memory attention": model.memory_attention,
             "mask decoder": model.sam_mask_decoder, "prompt encoder": model.sam_prompt_encoder,
             "memory encoder": model.memory_encoder}
    spent = {k: 0.0 for k in parts}
    starts = {}
    for name, mod in parts.items():
        mod.register_forward_pre_hook(lambda m, a, name=name: starts.__setitem__(name, time.perf_counter()))
        mod.register_forward_hook(
            lambda m, a, o, name=name: spent.__setitem__(name, spent[name] + time.perf_counter() - starts[name]))
    w, h = VIDEO_SIZE
    with torch.inference_mode():
        state = pred.init_state(job["video"], release_memory_every=32)
        _track(pred, state, w, h, 4)
        for k in spent:
            spent[k] = 0.0
        t = time.perf_counter()
        n = _track(pred, state, w, h, job["frames"])
        total = time.perf_counter() - t
        timed = dict(spent)  # (the hooks keep adding to ``spent`` in the counting run below)
        _count_cpu_attention_flops()
        with FlopCounterMode(display=False) as fc:
            _track(pred, state, w, h, job["frames"])
    counts = fc.get_flop_counts()
    flops = {}
    for name, mod in parts.items():
        key = next(k for k in counts if k.endswith(type(mod).__name__) or k.endswith(name))
        flops[name] = sum(counts[key].values())
    return {"frames": n, "total_s": total, "seconds": timed, "flops": flops,
            "total_flops": sum(counts["Global"].values())}


def machine_peak(threads: int) -> dict:
    """Measured matmul throughput (4096^3, fp32 and bf16) with this thread count: the better of
    torch's default kernel (a @ b) and oneDNN's (the kernel sam2kit's fp32 layers may use)."""
    import torch

    torch.set_num_threads(threads)
    out = {}
    dnn = torch.ops.mkldnn._linear_pointwise
    for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(4096, 4096, dtype=dt), torch.randn(4096, 4096, dtype=dt)
        for kernel, fn in (("aten", lambda: a @ b), ("onednn", lambda: dnn(a, b, None, "none", [], ""))):
            fn()
            out[f"{name}_{kernel}"] = 2 * 4096 ** 3 / _median_times(fn, 5) / 1e9
        out[name] = max(out[f"{name}_aten"], out[f"{name}_onednn"])
    return out


def child_tuning(impl: str, job: dict) -> dict:
    """sam2kit's kernel choices on this machine (measured now unless cached; sam2kit.kernels.tuning)."""
    from sam2kit import modes
    from sam2kit.kernels import tuning

    return {"machine": tuning.machine_key(), "native_bf16": modes.native_bf16_cpu(),
            "tuning_mode": tuning.mode(), "choices": tuning.decide_all()}


def child_main(spec: str) -> None:
    job = json.loads(Path(spec).read_text())
    import torch

    torch.set_num_threads(job["threads"])
    impl, workload = job["impl"], job["workload"]
    if impl != "reference":  # as the command line and the server run it (docs/speed.md)
        import sam2kit

        sam2kit.tune_cpu_allocator()
    if workload == "profile":
        res = child_profile(job)
    elif workload == "tuning":
        res = child_tuning(impl, job)
    else:
        res = {"image": child_image, "video": child_video, "auto": child_auto}[workload](impl, job)
    res["peak_rss_mb"] = _peak_rss_mb()
    res["torch"] = torch.__version__
    print("RESULT " + json.dumps(res))


# ---- parent -------------------------------------------------------------------------------

def run_child(python: str, job: dict, work: Path) -> dict:
    spec = work / f"job-{job['impl']}-{job.get('mode_name', '')}-{job['workload']}.json"
    spec.write_text(json.dumps(job))
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") if job["impl"] == "sam2kit" else "")
    out = subprocess.run([python, __file__, "--child", str(spec)], capture_output=True, text=True, env=env)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode or not lines:
        raise SystemExit(f"{job['impl']} {job['workload']} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", nargs="+", default=["fp32"], choices=list(MODES), help="sam2kit modes to time")
    ap.add_argument("--workloads", nargs="+", default=["image", "video", "auto"], choices=["image", "video", "auto"])
    ap.add_argument("--runs", type=int, default=3, help="timed runs per figure (median)")
    ap.add_argument("--frames", type=int, default=16, help="video frames to track")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads for both")
    ap.add_argument("--auto-runs", type=int, default=1, help="timed runs of the auto workload (median)")
    ap.add_argument("--auto-all-modes", action="store_true",
                    help="time the auto workload in every mode (default: reference and fp32 only)")
    ap.add_argument("--auto-settings", default="{}",
                    help="JSON of generator settings for the auto workload (default: the reference's defaults)")
    ap.add_argument("--no-reference", action="store_true", help="time sam2kit only")
    ap.add_argument("--profile", action="store_true", help="also profile sam2kit fp32 video per module")
    ap.add_argument("--json", type=Path, help="write every figure here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_main(args.child)
        return

    ref_python = os.environ.get("SAM2KIT_REFERENCE_PYTHON", str(DEFAULT_REFERENCE_PYTHON))
    if not args.no_reference and not Path(ref_python).exists():
        raise SystemExit(f"no reference environment at {ref_python}: make it with "
                         "../shared/tools/make-reference-env DIR and set SAM2KIT_REFERENCE_PYTHON=DIR/bin/python, "
                         "or pass --no-reference")
    impls = ([("reference", None)] if not args.no_reference else []) + [("sam2kit", m) for m in args.modes]
    results: dict = {"threads": args.threads, "runs": args.runs, "frames": args.frames, "timings": {}}
    with tempfile.TemporaryDirectory(prefix="sam2kit-bench-") as tmp:
        work = Path(tmp)
        inputs = make_inputs(work, args.frames)
        results["cpu"] = cpu_name()
        results["load_average_start"] = os.getloadavg()
        results["peak_gflops"] = pk = machine_peak(args.threads)
        print(f"CPU {results['cpu']}; load average {results['load_average_start'][0]:.2f}", flush=True)
        print(f"matmul peak with {args.threads} threads (torch default / oneDNN): fp32 {pk['fp32_aten']:.0f} / "
              f"{pk['fp32_onednn']:.0f} GFLOP/s, bf16 {pk['bf16_aten']:.0f} / {pk['bf16_onednn']:.0f} GFLOP/s",
              flush=True)
        if args.modes:  # sam2kit's kernel choices, made (or read from its cache) before anything is timed
            job = dict(inputs, impl="sam2kit", workload="tuning", runs=1, threads=args.threads, mode={})
            results["tuning"] = run_child(sys.executable, job, work)
        for impl, mode in impls:
            label = impl if mode is None else f"sam2kit {mode}"
            row = results["timings"].setdefault(label, {})
            for workload in args.workloads:
                if workload == "auto" and mode not in (None, "fp32") and not args.auto_all_modes:
                    continue  # minutes per run: the reference and the default path only
                job = dict(inputs, impl=impl, workload=workload, runs=args.runs, auto_runs=args.auto_runs,
                           threads=args.threads,
                           mode=MODES.get(mode, {}), mode_name=mode or "", auto=json.loads(args.auto_settings))
                t = time.perf_counter()
                res = run_child(ref_python if impl == "reference" else sys.executable, job, work)
                row[workload] = res
                print(f"  {label:18s} {workload:6s} done in {time.perf_counter() - t:6.1f} s  "
                      + ", ".join(f"{k} {v:.3f}" for k, v in res.items() if isinstance(v, float)), flush=True)
        if args.profile:
            job = dict(inputs, impl="sam2kit", workload="profile", runs=1, threads=args.threads, mode={})
            results["profile"] = run_child(sys.executable, job, work)
    results["load_average_end"] = os.getloadavg()
    print_table(results)
    if "tuning" in results:
        print_tuning(results["tuning"])
    if args.profile:
        print_profile(results["profile"], results["peak_gflops"]["fp32"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")


ROWS = [  # (label, workload, key, higher is better)
    ("set_image 1024x768 (s)", "image", "set_image_s", False),
    ("predict, one click (s)", "image", "predict_s", False),
    ("3x3 workflow total (s)", "image", "workflow_3x3_s", False),
    ("  3x3 one at a time (s)", "image", "workflow_3x3_one_at_a_time_s", False),
    ("peak RSS, image (MB)", "image", "peak_rss_mb", False),
    ("video 640x480 (frames/s)", "video", "video_fps", True),
    ("init_state (s)", "video", "init_state_s", False),
    ("peak RSS, video (MB)", "video", "peak_rss_mb", False),
    ("auto masks 32x32 (s)", "auto", "auto_s", False),
    ("  masks found", "auto", "auto_masks", None),
    ("peak RSS, auto (MB)", "auto", "peak_rss_mb", False),
]


def print_table(results: dict) -> None:
    timings = results["timings"]
    labels = list(timings)
    ref = timings.get("reference")
    head = f"| {'figure':26s} | " + " | ".join(f"{lb:>16s}" for lb in labels) + " |"
    print()
    print(f"{results.get('cpu', '')}; load average {results['load_average_start'][0]:.2f} at the start, "
          f"{results['load_average_end'][0]:.2f} at the end")
    print(f"threads {results['threads']}, median of {results['runs']} runs, video {results['frames']} frames; "
          "(x N.NN) = speed relative to the reference (>1 is faster / smaller)")
    print(head)
    print("|" + "-" * 28 + "|" + "|".join("-" * 18 for _ in labels) + "|")
    for name, workload, key, higher in ROWS:
        cells, present = [], False
        for lb in labels:
            v = timings[lb].get(workload, {}).get(key)
            if v is None:
                cells.append(f"{'':>16s}")
                continue
            present = True
            r = ref.get(workload, {}).get(key) if ref and lb != "reference" and higher is not None else None
            ratio = f" (x{(v / r if higher else r / v):.2f})" if r else ""
            cells.append(f"{v:>{16 - len(ratio)}.{0 if 'MB' in name or higher is None else 3}f}{ratio}")
        if present:
            print(f"| {name:26s} | " + " | ".join(cells) + " |")


def cpu_name() -> str:
    from sam2kit.kernels.tuning import cpu_model  # the one CPU naming (model, family/model/stepping)

    return cpu_model()


def print_tuning(tun: dict) -> None:
    print(f"\nsam2kit's kernel choices on {tun['machine']} (native bf16: {tun['native_bf16'] or 'no'}; "
          f"SAM2KIT_TUNING={tun['tuning_mode']}), seconds per benchmark call:")
    for name, d in tun["choices"].items():
        times = ", ".join(f"{c} {1e3 * s:.1f} ms" for c, s in sorted(d["timings"].items(), key=lambda kv: kv[1]))
        print(f"  {name:22s} -> {d['choice']:12s} ({d['source']}) {times}")


def print_profile(prof: dict, peak: float) -> None:
    n = prof["frames"]
    print(f"\nsam2kit fp32, where a tracked frame's time goes ({n} frames, {prof['total_s'] / n:.3f} s/frame; "
          f"machine fp32 matmul peak {peak:.0f} GFLOP/s):")
    print(f"| {'part':18s} | {'s/frame':>8s} | {'share':>6s} | {'GFLOP/frame':>11s} | {'GFLOP/s':>8s} | {'of peak':>7s} |")
    print("|" + "|".join("-" * w for w in (20, 10, 8, 13, 10, 9)) + "|")
    for name, s in sorted(prof["seconds"].items(), key=lambda kv: -kv[1]):
        f = prof["flops"][name] / 1e9
        rate = f / s if s else 0.0
        print(f"| {name:18s} | {s / n:8.3f} | {100 * s / prof['total_s']:5.1f}% | {f / n:11.2f} | "
              f"{rate:8.1f} | {100 * rate / peak:6.1f}% |")
    rest = prof["total_s"] - sum(prof["seconds"].values())
    print(f"| {'everything else':18s} | {rest / n:8.3f} | {100 * rest / prof['total_s']:5.1f}% | "
          f"{'':11s} | {'':8s} | {'':7s} |")


if __name__ == "__main__":
    main()
