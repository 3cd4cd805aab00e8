"""J&F evaluation speed: sam2kit's against vos-benchmark's (pip vos-benchmark, the DAVIS-numbers
evaluator that SA-V's sav_evaluator.py is copied from), on the same data, in one run.

The data is made once (and kept in --data): a DAVIS-val-sized set, 30 sequences of 70 frames
with 3 objects each at 854x480, palette PNGs of the ground truth (wobbly blobs drifting across
the frame) and of a prediction (the ground truth shifted, grown or shrunk, with a frame
dropped here and there). Every object is present on every frame, so both evaluators define
the same scores; the run checks that their global J and F agree (to 1e-6) before timing.

    python benchmarks/evaluate.py                    # 2 processes each, as on a 2-core machine
    python benchmarks/evaluate.py --jobs 4 --json out/eval_bench.json

Each evaluator runs in a fresh process (`sam2kit evaluate` as a user runs it, and
vos_benchmark.benchmark through its own entry); the wall time includes start-up and reading
every PNG; CPU seconds are those of the evaluator's process and its workers (user + system).
Target (issue 17): sam2kit under 20 s on 2 cores, and faster than vos-benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

H, W, SEQS, FRAMES, OBJECTS = 480, 854, 30, 70, 3


def cpu_name() -> str:
    from sam2kit.kernels.tuning import cpu_model  # the one CPU naming (model, family/model/stepping)

    return cpu_model()

def blob_labels(rng, t: int, params) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    lab = np.zeros((H, W), np.uint8)
    for k, (cy, cx, ry, rx, vy, vx, phase) in enumerate(params, 1):
        y, x = cy + vy * t, cx + vx * t
        ang = np.arctan2(yy - y, xx - x)
        wobble = 1 + 0.12 * np.sin(5 * ang + phase + 0.1 * t) + 0.05 * np.sin(11 * ang - phase)
        lab[((yy - y) / ry) ** 2 + ((xx - x) / rx) ** 2 <= wobble ** 2] = k
    return lab


def make_data(root: Path) -> None:
    from PIL import Image

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from sam2kit.vos.datasets import davis_palette

    pal = davis_palette()
    rng = np.random.default_rng(0)
    names = [f"seq{i:02d}" for i in range(SEQS)]
    for name in names:
        params = [(rng.uniform(120, 360), rng.uniform(150, 700), rng.uniform(40, 110), rng.uniform(50, 140),
                   rng.uniform(-0.8, 0.8), rng.uniform(-2, 2), rng.uniform(0, 6)) for _ in range(OBJECTS)]
        shift = rng.integers(-6, 7, size=2)
        for folder in ("gt/Annotations/480p", "pred"):
            (root / folder / name).mkdir(parents=True, exist_ok=True)
        for t in range(FRAMES):
            gt = blob_labels(rng, t, params)
            pred = np.roll(gt, tuple(int(s) for s in shift + rng.integers(-2, 3, size=2)), axis=(0, 1))
            if rng.random() < 0.05:
                pred[:] = 0  # a dropped frame
            for folder, lab in (("gt/Annotations/480p", gt), ("pred", pred)):
                img = Image.frombytes("P", (W, H), lab.tobytes())
                img.putpalette(pal)
                img.save(root / folder / name / f"{t:05d}.png")
    (root / "gt/ImageSets/2017").mkdir(parents=True, exist_ok=True)
    (root / "gt/ImageSets/2017/val.txt").write_text("".join(f"{n}\n" for n in names))
    (root / "ready").write_text("ok\n")


VOS_BENCHMARK = """
import sys, json, time
from vos_benchmark.benchmark import benchmark
t = time.perf_counter()
jf, j, f, _ = benchmark([sys.argv[1]], [sys.argv[2]], True, int(sys.argv[3]), verbose=False)
print(json.dumps({"J&F": float(jf[0]), "J": float(j[0]), "F": float(f[0]), "inner_s": time.perf_counter() - t}))
"""


def timed(cmd: list[str]) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the process and its workers, stdout)."""
    r0, t = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall, r1 = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"{cmd[0]} failed:\n{proc.stderr[-2000:]}")
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("/tmp/sam2kit-eval-bench"), help="data folder (made once)")
    ap.add_argument("--jobs", type=int, default=2, help="processes for each evaluator (default 2)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    if not (args.data / "ready").exists():
        print(f"making the data in {args.data} (once) ...", file=sys.stderr)
        make_data(args.data)
    gt, pred = args.data / "gt", args.data / "pred"
    out = args.data / "ours"
    load = os.getloadavg()[0]
    ours_s, ours_cpu, text = timed([sys.executable, "-m", "sam2kit", "evaluate", "--gt", str(gt), "--pred", str(pred),
                          "-o", str(out), "--overwrite", "--jobs", str(args.jobs), "--json", "-q"])
    ours = json.loads(text)
    theirs_s, theirs_cpu, text = timed([sys.executable, "-c", VOS_BENCHMARK, str(gt / "Annotations/480p"), str(pred),
                            str(args.jobs)])
    theirs = json.loads(text)
    dj = abs(100 * ours["global"]["J-Mean"] - theirs["J"])
    df = abs(100 * ours["global"]["F-Mean"] - theirs["F"])
    result = {"cpu": cpu_name(), "jobs": args.jobs, "sequences": SEQS, "frames": FRAMES, "objects": OBJECTS,
              "size": f"{W}x{H}", "load_average_before": round(load, 2),
              "sam2kit_s": round(ours_s, 2), "vos_benchmark_s": round(theirs_s, 2),
              "sam2kit_cpu_s": round(ours_cpu, 2), "vos_benchmark_cpu_s": round(theirs_cpu, 2),
              "speedup": round(theirs_s / ours_s, 2), "sam2kit_J&F": ours["global"]["J&F-Mean"],
              "vos_benchmark_J&F": theirs["J&F"] / 100, "abs_diff_J": dj / 100, "abs_diff_F": df / 100}
    print(f"CPU: {result['cpu']} ({args.jobs} processes each; load average {load:.1f} before the run: "
          "other work on a shared machine slows the wall time, not the CPU time)")
    print(f"{'evaluator':<16}{'wall s':>8}{'CPU s':>8}{'J&F-Mean':>10}")
    print(f"{'sam2kit':<16}{ours_s:>8.2f}{ours_cpu:>8.2f}{ours['global']['J&F-Mean']:>10.6f}")
    print(f"{'vos-benchmark':<16}{theirs_s:>8.2f}{theirs_cpu:>8.2f}{theirs['J&F'] / 100:>10.6f}")
    print(f"sam2kit is {result['speedup']:.2f}x faster; |dJ| {dj / 100:.1e}, |dF| {df / 100:.1e}")
    if max(dj, df) / 100 > 1e-6:
        raise SystemExit("the two evaluators disagree: investigate before trusting the timing")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
