"""Load on ``sam2kit serve``, from clients on this machine (loopback only, bounded in count and time).

Phases, against one server (tiny, random weights with objects present, 1024 by default):
  1. clicks: N clients click on pictures whose embeddings are cached (closed loop, a short think
     time), while one more client tracks a video again and again; click-to-mask latency p50/p95
     (the full HTTP round trip, RLE decoded), requests/s, errors by status. Compared with one
     ``predict`` in this process on the same picture (the in-process time, measured first).
  2. overfill: many clients at once with no think time, past workers + queue: only 503s (with
     Retry-After) are allowed as errors.
  3. soak: for S seconds, sessions opened, prompted, tracked a little and closed, pictures
     uploaded and deleted, while the server's RSS is sampled: it must stay flat.

    python benchmarks/serve_load.py --json out/serve_load.json            # ~8 min with the soak
    python benchmarks/serve_load.py --soak 30 --clicks 20 --resolution 512  # a quick look
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from serve_helpers import Server, cpu_name, moving_frames, random_checkpoint, write_mp4  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values, q):
    return float(np.percentile(values, q)) if values else float("nan")


def pictures(n: int, size: tuple[int, int]) -> list[bytes]:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import synthetic_image

    out = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(synthetic_image(size[1], size[0], i)).save(buf, format="JPEG", quality=92)
        out.append(buf.getvalue())
    return out


def in_process_predict(ckpt: Path, resolution: int, picture: bytes, runs: int = 30) -> dict:
    """Median seconds of one single-click ``predict`` with the embedding set and its three masks
    encoded as RLE (what a click costs without HTTP), in this process with the server's thread
    count: in the main thread and in a worker thread (as the server runs it); ``best`` is the
    lower of the two, the baseline the server is compared with."""
    import torch

    from sam2kit import SAM2ImagePredictor, tune_cpu_allocator
    from sam2kit.image.amg import coco_encode_rle, mask_to_rle

    tune_cpu_allocator()
    pred = SAM2ImagePredictor.from_pretrained(str(ckpt), image_size=resolution)
    image = np.array(Image.open(io.BytesIO(picture)).convert("RGB"))
    pred.set_image(image)
    h, w = image.shape[:2]

    def clicks(out: list):
        rng = np.random.default_rng(0)
        with torch.inference_mode():
            for i in range(runs + 3):
                p = np.array([[rng.uniform(0, w), rng.uniform(0, h)]], dtype=np.float32)
                t = time.perf_counter()
                masks, _, _ = pred.predict(p, np.array([1]))
                for m in masks:
                    coco_encode_rle(mask_to_rle(m))
                if i >= 3:
                    out.append(time.perf_counter() - t)
    main, thread = [], []
    clicks(main)
    worker = threading.Thread(target=clicks, args=(thread,))
    worker.start()
    worker.join()
    medians = {"main_thread": statistics.median(main), "worker_thread": statistics.median(thread)}
    return {**medians, "best": min(medians.values())}


class Clicker(threading.Thread):
    def __init__(self, url, image_ids, sizes, until, think, seed):
        super().__init__(daemon=True)
        self.url, self.image_ids, self.sizes, self.until, self.think = url, image_ids, sizes, until, think
        self.rng = np.random.default_rng(seed)
        self.latencies, self.statuses = [], {}

    def run(self):
        from sam2kit.image.amg import rle_to_mask

        with httpx.Client(base_url=self.url, timeout=120) as c:
            while time.monotonic() < self.until:
                k = int(self.rng.integers(len(self.image_ids)))
                w, h = self.sizes[k]
                body = {"points": [[float(self.rng.uniform(0, w)), float(self.rng.uniform(0, h))]], "labels": [1]}
                t = time.perf_counter()
                r = c.post(f"/api/images/{self.image_ids[k]}/predict", json=body)
                if r.status_code == 200:
                    for m in r.json()["masks"]:
                        rle_to_mask(m["rle"])
                    self.latencies.append(time.perf_counter() - t)
                self.statuses[r.status_code] = self.statuses.get(r.status_code, 0) + 1
                if r.status_code == 503:
                    time.sleep(min(float(r.headers.get("retry-after", 1)), 2.0))
                elif self.think:
                    time.sleep(self.rng.uniform(0, 2 * self.think))


class Tracker(threading.Thread):
    """Tracks a video again and again until ``until`` (one client propagating)."""

    def __init__(self, url, video: Path, until):
        super().__init__(daemon=True)
        self.url, self.video, self.until = url, video, until
        self.frames, self.statuses = 0, {}

    def run(self):
        with httpx.Client(base_url=self.url, timeout=600) as c:
            sid = c.post("/api/videos", files={"file": ("v.mp4", self.video.read_bytes(), "video/mp4")}).json()["session_id"]
            c.post(f"/api/videos/{sid}/prompts", json={"frame": 0, "object": 1, "points": [[60, 48]], "labels": [1]})
            while time.monotonic() < self.until:
                with c.stream("POST", f"/api/videos/{sid}/propagate", json={}) as r:
                    self.statuses[r.status_code] = self.statuses.get(r.status_code, 0) + 1
                    for line in r.iter_lines():
                        if time.monotonic() > self.until:
                            break  # (closing the stream cancels the tracking)
                        if line and '"frame"' in line:
                            self.frames += 1
            c.delete(f"/api/videos/{sid}")


def clicks_phase(url, image_ids, sizes, clients, seconds, think, video=None):
    until = time.monotonic() + seconds
    workers = [Clicker(url, image_ids, sizes, until, think, seed) for seed in range(clients)]
    tracker = Tracker(url, video, until) if video is not None else None
    t0 = time.monotonic()
    for w in workers + ([tracker] if tracker else []):
        w.start()
    for w in workers + ([tracker] if tracker else []):
        w.join(seconds + 600)
    elapsed = time.monotonic() - t0
    lat = [x for w in workers for x in w.latencies]
    statuses: dict = {}
    for w in workers:
        for k, v in w.statuses.items():
            statuses[k] = statuses.get(k, 0) + v
    return {"clients": clients, "seconds": round(elapsed, 1), "requests": sum(statuses.values()),
            "requests_per_s": round(sum(statuses.values()) / elapsed, 2), "statuses": statuses,
            "p50_ms": round(1000 * pct(lat, 50), 1), "p95_ms": round(1000 * pct(lat, 95), 1),
            "video_frames_tracked": tracker.frames if tracker else None,
            "video_statuses": tracker.statuses if tracker else None}


def soak(url, pid, seconds, video: Path, pics: list[bytes]):
    samples = []
    stop = time.monotonic() + seconds
    opened = 0
    with httpx.Client(base_url=url, timeout=600) as c:
        while time.monotonic() < stop:
            r = c.post("/api/videos", files={"file": ("v.mp4", video.read_bytes(), "video/mp4")})
            sid = r.json()["session_id"]
            c.post(f"/api/videos/{sid}/prompts", json={"frame": 0, "object": 1, "points": [[60, 48]], "labels": [1]})
            with c.stream("POST", f"/api/videos/{sid}/propagate", json={"max_frames": 6}) as s:
                for _ in s.iter_lines():
                    pass
            c.delete(f"/api/videos/{sid}")
            pic = pics[opened % len(pics)]
            iid = c.post("/api/images", files={"file": ("p.jpg", pic, "image/jpeg")}).json()["image_id"]
            c.post(f"/api/images/{iid}/predict", json={"box": [10, 10, 200, 200]})
            c.delete(f"/api/images/{iid}")
            opened += 1
            samples.append((round(time.monotonic() - (stop - seconds), 1), round(rss_mb(pid), 1)))
    rss = [s[1] for s in samples]
    half = len(rss) // 2 or 1
    if len(rss) < 2:
        rss = rss * 2  # (too short a soak for two halves)
    return {"seconds": seconds, "sessions_opened_and_closed": opened, "rss_mb_first": rss[0],
            "rss_mb_last": rss[-1], "rss_mb_max": max(rss),
            "rss_mb_mean_first_half": round(statistics.mean(rss[:half]), 1),
            "rss_mb_mean_second_half": round(statistics.mean(rss[half:]), 1), "samples": samples}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolution", type=int, default=1024)
    ap.add_argument("--clients", type=int, default=4, help="clicking clients in phase 1 (default 4)")
    ap.add_argument("--clicks", type=float, default=60, help="seconds of phase 1 (default 60)")
    ap.add_argument("--think", type=float, default=0.25, help="mean think time between clicks, s (default 0.25)")
    ap.add_argument("--overfill", type=int, default=40, help="clients at once in phase 2 (default 40)")
    ap.add_argument("--soak", type=float, default=300, help="seconds of the soak (default 300)")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    threads = os.environ.get("OMP_NUM_THREADS", str(os.cpu_count()))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = random_checkpoint(tmp / "tiny.pt")
        video = write_mp4(tmp / "clip.mp4", moving_frames(24))
        pics = pictures(4, (1024, 768))
        base = in_process_predict(ckpt, args.resolution, pics[0])
        baseline = base["best"]
        print(f"in-process predict: main thread {base['main_thread'] * 1000:.1f} ms, worker thread "
              f"{base['worker_thread'] * 1000:.1f} ms", flush=True)
        srv = Server(ckpt, "--queue", "16", resolution=args.resolution, timeout=600)
        try:
            pid = srv.proc.pid
            with httpx.Client(base_url=srv.url, timeout=600) as c:
                ids = [c.post("/api/images", files={"file": (f"{i}.jpg", p, "image/jpeg")}).json()["image_id"]
                       for i, p in enumerate(pics)]
            sizes = [(1024, 768)] * len(ids)
            alone = clicks_phase(srv.url, ids, sizes, 1, min(20, args.clicks), 0.0)
            print("one client:", json.dumps(alone), flush=True)
            loaded = clicks_phase(srv.url, ids, sizes, args.clients, args.clicks, args.think, video)
            print("clients + tracking:", json.dumps(loaded), flush=True)
            over = clicks_phase(srv.url, ids, sizes, args.overfill, 20, 0.0)
            print("overfill:", json.dumps(over), flush=True)
            soaked = soak(srv.url, pid, args.soak, video, pics) if args.soak > 0 else None
            if soaked:
                print("soak:", json.dumps({k: v for k, v in soaked.items() if k != "samples"}), flush=True)
        finally:
            rc = srv.stop()
    result = {"cpu": cpu_name(), "threads": threads, "resolution": args.resolution,
              "in_process_predict_ms": round(baseline * 1000, 1),
              "in_process_main_thread_ms": round(base["main_thread"] * 1000, 1),
              "in_process_worker_thread_ms": round(base["worker_thread"] * 1000, 1), "one_client": alone,
              "clients_and_tracking": loaded, "overfill": over, "soak": soaked, "server_exit": rc,
              "p50_over_in_process": round(loaded["p50_ms"] / (baseline * 1000), 2),
              "one_client_p50_over_in_process": round(alone["p50_ms"] / (baseline * 1000), 2)}
    bad = {k: v for k, v in over["statuses"].items() if k not in (200, 503)}
    print(f"\nCPU: {result['cpu']}, {threads} threads, tiny at {args.resolution}, cached embeddings")
    print(f"in-process predict {result['in_process_predict_ms']} ms; one client p50 {alone['p50_ms']} ms "
          f"(x{result['one_client_p50_over_in_process']}); {args.clients} clients + a video tracked: p50 "
          f"{loaded['p50_ms']} ms (x{result['p50_over_in_process']}), p95 {loaded['p95_ms']} ms, "
          f"{loaded['requests_per_s']} req/s, statuses {loaded['statuses']}, video frames {loaded['video_frames_tracked']}")
    print(f"overfill ({args.overfill} clients): statuses {over['statuses']} (errors other than 503: {bad or 'none'})")
    if soaked:
        print(f"soak {args.soak:.0f} s: {soaked['sessions_opened_and_closed']} sessions; RSS first {soaked['rss_mb_first']} "
              f"MB, mean first half {soaked['rss_mb_mean_first_half']}, second half {soaked['rss_mb_mean_second_half']}, "
              f"last {soaked['rss_mb_last']}, max {soaked['rss_mb_max']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
