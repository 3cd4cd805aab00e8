"""Memory and latency of live tracking over a long synthetic stream.

sam2-hiera-tiny (random weights, the object-score bias raised so the object counts as present
and every frame runs the full memory path), one object, 640x480 frames of two moving discs
pushed one by one into ``predictor.init_stream()``.

    python benchmarks/stream.py memory --frames 10000 --checkpoint-at 1000   # RSS, latency
    python benchmarks/stream.py realtime --seconds 60 --fps 25               # drops, latency

memory: resident set size sampled every 100 frames and the peak RSS after ``--checkpoint-at``
frames and after ``--frames`` (pass criterion: within 5% of each other), the session's held
results and frames, and the per-frame latency of ``push`` (p50/p95). realtime: a source that
produces frames at ``--fps`` whether they are taken or not, read through the real-time feed
(the oldest waiting frames dropped, at most 2 waiting): frames tracked and dropped, and the
end-to-end latency from a frame's arrival to its masks (p50/p95/max).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import numpy as np


def cpu_name() -> str:
    from sam2kit.kernels.tuning import cpu_model  # the one CPU naming (model, family/model/stepping)

    return cpu_model()

def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic_frames(n_cycle: int = 90, w: int = 640, h: int = 480) -> list[np.ndarray]:
    """One 90-frame cycle of two moving discs on a textured background (repeated forever)."""
    rng = np.random.default_rng(0)
    background = (rng.random((h, w, 3)) * 60 + 60).astype(np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    frames = []
    for i in range(n_cycle):
        img = background.copy()
        for k, colour in enumerate(((220, 60, 40), (40, 200, 90))):
            cx = w / 2 + (150 - 60 * k) * np.cos(2 * np.pi * i / n_cycle + k)
            cy = h / 2 + (100 - 30 * k) * np.sin(2 * np.pi * i / n_cycle + k)
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < (60 - 15 * k) ** 2] = colour
        frames.append(img)
    return frames


def predictor(size: int, precision: str = "fp32"):
    """The tiny video predictor, loaded as users load it (build_sam2_video_predictor)."""
    import tempfile

    import torch

    from sam2kit import build_sam2_video_predictor, get_config, tune_cpu_allocator
    from sam2kit.build import build_model

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    tune_cpu_allocator()  # as the command line runs it
    torch.manual_seed(0)
    sd = build_model(get_config("sam2-hiera-tiny")).state_dict()
    sd["sam_mask_decoder.pred_obj_score_head.layers.2.bias"].fill_(8.0)
    with tempfile.TemporaryDirectory() as d:
        torch.save({"model": sd}, f"{d}/tiny.pt")
        return build_sam2_video_predictor("sam2-hiera-tiny", checkpoint=f"{d}/tiny.pt", image_size=size,
                                          precision=precision)


def prompt_point(frames) -> list[float]:
    h, w = frames[0].shape[:2]
    return [w / 2 + 150 * np.cos(0), h / 2]  # the red disc's centre on frame 0


def memory(args) -> dict:
    from sam2kit.devices import RELEASE_EVERY

    frames = synthetic_frames()
    p = predictor(args.size, args.precision)
    rss, lat, held, peak_at = [], [], [], {}
    t_start = time.perf_counter()
    with p.init_stream(release_memory_every=RELEASE_EVERY) as s:
        s.push(frames[0])
        s.add_new_points_or_box(0, 1, points=[prompt_point(frames)], labels=[1])
        for i in range(1, args.frames):
            t0 = time.perf_counter()
            _, masks = s.push(frames[i % len(frames)])
            (masks > 0).any()
            lat.append(time.perf_counter() - t0)
            if (i + 1) % args.every == 0:
                rss.append([i + 1, round(rss_mb(), 1)])
                held.append([i + 1, s.stored_outputs, s.resident_outputs, len(s.frames.kept)])
                print(f"frame {i + 1}: RSS {rss[-1][1]:.0f} MB, peak {peak_rss_mb():.0f} MB, "
                      f"{1 / np.mean(lat[-args.every:]):.2f} frames/s", file=sys.stderr, flush=True)
            if i + 1 == args.checkpoint_at:
                peak_at[args.checkpoint_at] = round(peak_rss_mb(), 1)
        peak_at[args.frames] = round(peak_rss_mb(), 1)
        assert s.spill.root is None
    lat_ms = np.asarray(lat) * 1000
    a, b = peak_at[args.checkpoint_at], peak_at[args.frames]
    return {"mode": "memory", "frames": args.frames, "size": args.size, "precision": args.precision,
            "peak_rss_mb": peak_at,
            "peak_growth_percent": round(100 * (b - a) / a, 2), f"rss_mb_every_{args.every}": rss,
            "held [frame, results, results in memory, frames]": held[:: max(1, len(held) // 20)],
            "push_latency_ms": {"p50": round(float(np.percentile(lat_ms, 50)), 1),
                                "p95": round(float(np.percentile(lat_ms, 95)), 1)},
            "frames_per_second": round(len(lat) / sum(lat), 3),
            "wall_s": round(time.perf_counter() - t_start, 1)}


def realtime(args) -> dict:
    from sam2kit.video.sources import FrameFeed, LiveSource

    frames = synthetic_frames()

    class Camera(LiveSource):
        """Frames at ``fps`` on its own clock, taken or not (a camera)."""
        kind, live = "camera", True

        def __init__(self):
            super().__init__("synthetic camera")
            self.fps, (self.height, self.width) = args.fps, frames[0].shape[:2]

        def __iter__(self):
            t0 = time.monotonic()
            for i in range(int(args.seconds * args.fps)):
                time.sleep(max(0.0, t0 + i / args.fps - time.monotonic()))
                yield frames[i % len(frames)]

    p = predictor(args.size, args.precision)
    feed = FrameFeed(Camera(), realtime=True)
    lat, tracked = [], 0
    with p.init_stream() as s:
        while (item := feed.get()) is not None:
            index, frame, arrived = item
            f = s.add_frame(frame)
            if f == 0:
                s.add_new_points_or_box(0, 1, points=[prompt_point(frames)], labels=[1])
            _, masks = s.track()
            (masks > 0).any()
            lat.append(time.monotonic() - arrived)
            tracked += 1
    feed.close()
    lat = np.asarray(lat)
    return {"mode": "realtime", "precision": args.precision, "fps": args.fps, "seconds": args.seconds, "size": args.size,
            "frames_produced": feed.frames_read, "frames_tracked": tracked, "frames_dropped": len(feed.dropped),
            "latency_s": {"p50": round(float(np.percentile(lat, 50)), 3),
                          "p95": round(float(np.percentile(lat, 95)), 3), "max": round(float(lat.max()), 3)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["memory", "realtime"])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                    help="bf16 where the CPU has native bf16 (twice the frames per hour; the same memory design)")
    ap.add_argument("--frames", type=int, default=10000)
    ap.add_argument("--checkpoint-at", type=int, default=1000)
    ap.add_argument("--every", type=int, default=100, help="sample RSS every N frames")
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--fps", type=float, default=25)
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args()
    result = memory(args) if args.mode == "memory" else realtime(args)
    import torch
    result.update(cpu=cpu_name(), threads=torch.get_num_threads(), torch=torch.__version__)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
