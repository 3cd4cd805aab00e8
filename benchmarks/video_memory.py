"""Peak memory of video tracking against video length.

Tracks one object through the first N frames of a 640x480 video with sam2-hiera-tiny and
reports the peak resident set size (RSS) of each run, each in a fresh process. The weights
are random with the object-score bias raised so that the object counts as present (as with
real weights), so every frame runs the full memory path.

    python benchmarks/video_memory.py                       # 512: 64/256/1024, 1024: 64/256
    python benchmarks/video_memory.py --runs 512:64 512:256 --json out/memory.json

Pass criterion (issue): at each image size the longest run's peak RSS stays within 25% of
the shortest run's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_video(path: Path, num_frames: int, w: int = 640, h: int = 480, fps: int = 25) -> None:
    """A synthetic clip: a textured background and two moving discs."""
    import av

    rng = np.random.default_rng(0)
    background = (rng.random((h, w, 3)) * 60 + 60).astype(np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "23"}
        for i in range(num_frames):
            img = background.copy()
            for k, colour in enumerate(((220, 60, 40), (40, 200, 90))):
                cx = w / 2 + (150 - 60 * k) * np.cos(2 * np.pi * i / 90 + k)
                cy = h / 2 + (100 - 30 * k) * np.sin(2 * np.pi * i / 90 + k)
                img[(xx - cx) ** 2 + (yy - cy) ** 2 < (60 - 15 * k) ** 2] = colour
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def make_checkpoint(path: Path) -> None:
    import torch

    from sam2kit import get_config
    from sam2kit.build import build_model

    torch.manual_seed(0)
    sd = build_model(get_config("sam2-hiera-tiny")).state_dict()
    sd["sam_mask_decoder.pred_obj_score_head.layers.2.bias"].fill_(8.0)
    torch.save({"model": sd}, path)


def child(video: str, ckpt: str, size: int, frames: int) -> None:
    """One run: prompt frame 0, propagate through ``frames`` frames, print peak RSS as JSON."""
    import torch

    from sam2kit import build_sam2_video_predictor, tune_cpu_allocator
    from sam2kit.devices import RELEASE_EVERY

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    tune_cpu_allocator()  # as the command line runs it
    predictor = build_sam2_video_predictor("sam2-hiera-tiny", checkpoint=ckpt, image_size=size)
    state = predictor.init_state(video, release_memory_every=RELEASE_EVERY)
    h, w = state.video_height, state.video_width
    predictor.add_new_points_or_box(state, 0, 1, points=[[w / 2, h / 2]], labels=[1])
    t0 = time.perf_counter()
    area = []
    rss_at = {}
    for f, _, masks in predictor.propagate_in_video(state, max_frame_num_to_track=frames - 1, progress=False):
        area.append(int((masks > 0).sum()))
        if f + 1 in (64, 256, 1024):
            rss_at[f + 1] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    elapsed = time.perf_counter() - t0
    print(json.dumps({
        "image_size": size, "frames": len(area), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_rss_mb_at": rss_at, "seconds": elapsed, "frames_per_second": len(area) / elapsed,
        "resident_outputs": state.resident_outputs, "nonempty_frames": sum(a > 0 for a in area),
    }))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", default=["512:64", "512:256", "512:1024", "1024:64", "1024:256"],
                    help="SIZE:FRAMES pairs")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        video, ckpt, size, frames = args.child
        child(video, ckpt, int(size), int(frames))
        return
    runs = [tuple(map(int, r.split(":"))) for r in args.runs]
    with tempfile.TemporaryDirectory() as tmp:
        video, ckpt = Path(tmp) / "video.mp4", Path(tmp) / "tiny.pt"
        print(f"making a {max(f for _, f in runs)}-frame 640x480 video ...", file=sys.stderr)
        make_video(video, max(f for _, f in runs))
        make_checkpoint(ckpt)
        results = []
        for size, frames in runs:
            out = subprocess.run([sys.executable, __file__, "--child", str(video), str(ckpt), str(size), str(frames)],
                                 capture_output=True, text=True, check=True)
            res = json.loads(out.stdout.strip().splitlines()[-1])
            results.append(res)
            print(f"size {size:5d}  frames {frames:5d}  peak RSS {res['peak_rss_mb']:8.1f} MB  "
                  f"{res['frames_per_second']:.2f} frames/s  (object present on {res['nonempty_frames']} frames)",
                  flush=True)
    verdicts = {}
    for size in sorted({s for s, _ in runs}):
        rs = sorted((r for r in results if r["image_size"] == size), key=lambda r: r["frames"])
        if len(rs) > 1:
            growth = rs[-1]["peak_rss_mb"] / rs[0]["peak_rss_mb"] - 1
            verdicts[size] = growth
            print(f"size {size}: {rs[0]['frames']} -> {rs[-1]['frames']} frames, peak RSS grows "
                  f"{100 * growth:+.1f}% ({'within' if growth <= 0.25 else 'OVER'} the 25% bound)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"runs": results, "growth": verdicts}, indent=2))


if __name__ == "__main__":
    main()
