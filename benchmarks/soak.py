"""A soak of ``sam2kit serve``: mixed picture and video sessions for a long time, some closed by
the client, some left to expire (``--session-ttl``) or pushed out (``--max-sessions``,
``--max-images``), while the server's RSS is sampled every ``--sample-s`` seconds. Prints the
samples and a text chart; writes a PNG plot with matplotlib if it is installed (``--plot``).

    python benchmarks/soak.py --minutes 30 --json out/soak.json --plot out/soak.png
    python benchmarks/soak.py --minutes 30 --arena-max 2 ...   # glibc arenas bounded (see below)

What "flat" means here: after the warm-up (at least ``--warmup-s`` seconds and
``--warmup-cycles`` load cycles, so that every kind of job -- automatic masks run every fourth
cycle -- has run on every worker thread), the highest sample exceeds the highest warm-up sample
by at most ``--bound-mb``. The summary also gives the highest and median sample of every
5-minute window: a leak shows as windows that climb. tests/test_soak.py runs the short form
(about a minute at resolution 256).

The one-time step seen last round (about 250 MB at 1024 px, at the fifth cycle of the soak in
benchmarks/serve_load.py) is not explained yet; this soak records, with every RSS sample, the
server's resident memory by kind (``memory_parts``: the main heap, glibc's per-thread arenas,
other anonymous mappings, files), so that a run on an idle machine shows where such a step
lands. The suspect is glibc's arenas: every thread that allocates gets one (up to 8 per core),
and ``sam2kit serve`` tells glibc to keep freed memory for reuse (``tune_cpu_allocator``: no
mmap for large blocks, a 2 GB trim threshold), so each arena would keep the peak of the largest
job its thread ran, a step the first time a thread runs a kind of job it had not run before,
bounded by (arenas) x (largest job's peak), not growing with time. ``--arena-max N`` runs the
server with MALLOC_ARENA_MAX=N to test that: if the step shrinks with fewer arenas, it is them.
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
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from serve_helpers import Server, cpu_name, moving_frames, random_checkpoint, write_mp4  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


ARENA_HEAP = 64 * 2**20  # glibc's HEAP_MAX_SIZE on 64-bit: a thread arena's heaps are aligned to it


def memory_parts(pid: int) -> dict:
    """The server's resident memory by kind, MB, from /proc/PID/smaps: ``brk_heap`` (the main
    arena), ``thread_arenas`` (anonymous mappings at 64 MB-aligned addresses: the heaps of
    glibc's per-thread arenas), ``other_anon`` (large mmaps, thread stacks, ...), ``files``."""
    parts = {"brk_heap": 0, "thread_arenas": 0, "other_anon": 0, "files": 0}
    kind = None
    for line in open(f"/proc/{pid}/smaps"):
        head = line.split()
        if "-" in head[0] and len(head) >= 5 and ":" not in head[0]:
            start = int(head[0].split("-")[0], 16)
            name = head[5] if len(head) > 5 else ""
            if name == "[heap]":
                kind = "brk_heap"
            elif name.startswith("/"):
                kind = "files"
            elif not name and start % ARENA_HEAP == 0:
                kind = "thread_arenas"
            else:
                kind = "other_anon"
        elif head[0] == "Rss:" and kind:
            parts[kind] += int(head[1])
    return {k: round(v / 1024, 1) for k, v in parts.items()}


def pictures(n: int, size: tuple[int, int]) -> list[bytes]:
    from conftest import synthetic_image

    out = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(synthetic_image(size[1], size[0], i)).save(buf, format="JPEG", quality=92)
        out.append(buf.getvalue())
    return out


class Load:
    """The clients' side: cycles of a video session (open, prompt, track a few frames; closed
    or left to expire) and a picture (open, click, everything-masks every fourth; deleted or
    left to the LRU), until ``stop`` is set. Counts what it did and any status >= 500."""

    def __init__(self, url: str, video: bytes, pics: list[bytes], frames: int):
        self.url, self.video, self.pics, self.frames = url, video, pics, frames
        self.stop = threading.Event()
        self.counts = {"cycles": 0, "videos": 0, "abandoned": 0, "pictures": 0, "automatic": 0, "errors_5xx": 0,
                       "statuses": {}}
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _count(self, r: httpx.Response) -> httpx.Response:
        self.counts["statuses"][r.status_code] = self.counts["statuses"].get(r.status_code, 0) + 1
        if r.status_code >= 500 and r.status_code != 503:
            self.counts["errors_5xx"] += 1
        return r

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=600) as c:
            k = 0
            while not self.stop.is_set():
                r = self._count(c.post("/api/videos", files={"file": ("v.mp4", self.video, "video/mp4")}))
                if r.status_code == 201:
                    sid = r.json()["session_id"]
                    self._count(c.post(f"/api/videos/{sid}/prompts",
                                       json={"frame": 0, "object": 1, "points": [[30, 48]], "labels": [1]}))
                    self._count(c.post(f"/api/videos/{sid}/propagate", json={"max_frames": self.frames}))
                    self.counts["videos"] += 1
                    if k % 3:
                        self._count(c.delete(f"/api/videos/{sid}"))
                    else:  # left open: the server must expire it (TTL) or push it out (LRU)
                        self.counts["abandoned"] += 1
                pic = self.pics[k % len(self.pics)]
                r = self._count(c.post("/api/images", files={"file": ("p.jpg", pic, "image/jpeg")}))
                if r.status_code == 201:
                    iid = r.json()["image_id"]
                    self._count(c.post(f"/api/images/{iid}/predict", json={"points": [[40, 40]], "labels": [1]}))
                    if k % 4 == 0:
                        self._count(c.post(f"/api/images/{iid}/automatic", json={"points_per_side": 8}))
                        self.counts["automatic"] += 1
                    if k % 2:
                        self._count(c.delete(f"/api/images/{iid}"))
                    self.counts["pictures"] += 1
                k += 1
                self.counts["cycles"] = k


def run_soak(seconds: float, resolution: int = 1024, sample_s: float = 10.0, warmup_s: float = 120.0,
             ttl: float = 20.0, frames: int = 6, arena_max: int | None = None, log=print,
             min_cycles: int = 0, max_seconds: float | None = None, warmup_cycles: int = 0) -> dict:
    """Run the soak for ``seconds``, and on until ``min_cycles`` load cycles are done (a busy
    machine does fewer a minute) but never past ``max_seconds``; returns the samples [(t s, RSS
    MB)], the counts and the summary."""
    cap = max(seconds, max_seconds or seconds)
    env = {"MALLOC_ARENA_MAX": str(arena_max)} if arena_max else {}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = random_checkpoint(tmp / "tiny.pt")
        video = write_mp4(tmp / "clip.mp4", moving_frames(24)).read_bytes()
        pics = pictures(4, (640, 480))
        srv = Server(ckpt, "--session-ttl", str(ttl), "--max-sessions", "3", "--max-images", "4", "-q",
                     resolution=resolution, timeout=600)
        for k, v in old.items():  # (the server has it; this process does not need it)
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        samples, parts, cycles, t0 = [], [], [], time.monotonic()
        load = Load(srv.url, video, pics, frames)
        load.thread.start()
        try:
            while ((time.monotonic() - t0 < seconds or load.counts["cycles"] < min_cycles)
                   and time.monotonic() - t0 < cap):
                time.sleep(max(0.0, sample_s * (len(samples) + 1) - (time.monotonic() - t0)))
                samples.append((round(time.monotonic() - t0, 1), round(rss_mb(srv.proc.pid), 1)))
                parts.append(memory_parts(srv.proc.pid))
                cycles.append(load.counts["cycles"])
                log(f"t={samples[-1][0]:7.1f} s  RSS {samples[-1][1]:7.1f} MB  cycles {load.counts['cycles']}  {parts[-1]}")
        finally:
            load.stop.set()
            load.thread.join(600)
            with httpx.Client(base_url=srv.url, timeout=60) as c:
                health = c.get("/api/health").json()
            rc = srv.stop()
    return {"cpu": cpu_name(), "resolution": resolution, "seconds": seconds, "sample_s": sample_s,
            "warmup_s": warmup_s, "warmup_cycles": warmup_cycles, "session_ttl": ttl, "arena_max": arena_max,
            "samples": samples, "cycles_at_sample": cycles, "memory_parts_mb": parts,
            "counts": load.counts, "open_at_end": {"sessions": health["sessions"], "images": health["images"]},
            "server_exit": rc, **summary(samples, warmup_s, cycles, warmup_cycles)}


def warmup_end(samples: list[tuple[float, float]], warmup_s: float, cycles: list[int] | None = None,
               warmup_cycles: int = 0) -> float:
    """The time the warm-up ends: ``warmup_s`` seconds, and on until ``warmup_cycles`` load
    cycles are done (``cycles``: the cycles done at each sample)."""
    end = warmup_s
    if cycles and warmup_cycles:
        done = [t for (t, _), c in zip(samples, cycles) if c >= warmup_cycles]
        end = max(end, done[0] if done else samples[-1][0])
    return end


def summary(samples: list[tuple[float, float]], warmup_s: float, cycles: list[int] | None = None,
            warmup_cycles: int = 0, window_s: float = 300.0) -> dict:
    end = warmup_end(samples, warmup_s, cycles, warmup_cycles)
    warm = [mb for t, mb in samples if t <= end] or [samples[0][1]]
    after = [mb for t, mb in samples if t > end] or [samples[-1][1]]
    windows = []
    for w in range(0, int(samples[-1][0] // window_s) + 1):
        inside = [mb for t, mb in samples if w * window_s < t <= (w + 1) * window_s]
        if inside:
            windows.append({"from_s": w * window_s, "max_mb": max(inside), "median_mb": statistics.median(inside)})
    return {"warmup_end_s": end, "rss_mb_warmup_max": max(warm), "rss_mb_after_max": max(after),
            "rss_mb_after_min": min(after), "rss_mb_after_median": statistics.median(after),
            "growth_after_warmup_mb": round(max(after) - max(warm), 1), "rss_mb_last": samples[-1][1],
            "windows": windows}


def text_chart(samples: list[tuple[float, float]], width: int = 60, height: int = 12) -> str:
    lo, hi = min(s[1] for s in samples), max(s[1] for s in samples)
    hi = hi if hi > lo else lo + 1
    cols = [samples[int(i * len(samples) / width)] for i in range(min(width, len(samples)))]
    rows = []
    for r in range(height, -1, -1):
        level = lo + (hi - lo) * r / height
        rows.append(f"{level:8.0f} MB |" + "".join("#" if mb >= level else " " for _, mb in cols))
    rows.append(" " * 12 + f"0 s{'':>{max(1, len(cols) - 10)}}{samples[-1][0]:.0f} s")
    return "\n".join(rows)


def plot(result: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    t, mb = zip(*result["samples"])
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot([x / 60 for x in t], mb, marker=".")
    ax.axvline(result.get("warmup_end_s", result["warmup_s"]) / 60, color="grey", linestyle="--",
               label="end of warm-up")
    ax.set_xlabel("minutes")
    ax.set_ylabel("server RSS (MB)")
    ax.set_title(f"sam2kit serve soak, tiny at {result['resolution']} px, {result['counts']['cycles']} cycles"
                 + (f", MALLOC_ARENA_MAX={result['arena_max']}" if result["arena_max"] else ""))
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--resolution", type=int, default=1024)
    ap.add_argument("--sample-s", type=float, default=10.0, help="seconds between RSS samples (default 10)")
    ap.add_argument("--warmup-s", type=float, default=120.0, help="seconds of warm-up, at least (default 120)")
    ap.add_argument("--warmup-cycles", type=int, default=5,
                    help="load cycles of warm-up, at least (default 5: automatic masks have run twice)")
    ap.add_argument("--ttl", type=float, default=20.0, help="the server's --session-ttl (default 20)")
    ap.add_argument("--arena-max", type=int, help="MALLOC_ARENA_MAX for the server (default: glibc's)")
    ap.add_argument("--bound-mb", type=float, default=64.0,
                    help="allowed growth after the warm-up, MB (default 64); exit 1 past it")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--plot", type=Path, help="a PNG of the samples (needs matplotlib)")
    args = ap.parse_args()
    result = run_soak(args.minutes * 60, args.resolution, args.sample_s, args.warmup_s, args.ttl,
                      arena_max=args.arena_max, warmup_cycles=args.warmup_cycles)
    print(text_chart(result["samples"]))
    print(json.dumps({k: v for k, v in result.items() if k not in ("samples", "memory_parts_mb", "cycles_at_sample")}))
    print("memory by kind (MB), first, at the end of the warm-up, last:")
    warm = [i for i, (t, _) in enumerate(result["samples"]) if t <= result["warmup_end_s"]] or [0]
    for i in (0, warm[-1], len(result["samples"]) - 1):
        print(f"  t={result['samples'][i][0]:.0f} s: {result['memory_parts_mb'][i]}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    if args.plot and not plot(result, args.plot):
        print("(no plot: matplotlib is not installed; the text chart is above)")
    flat = result["growth_after_warmup_mb"] <= args.bound_mb and result["counts"]["errors_5xx"] == 0
    sys.exit(0 if flat else 1)


if __name__ == "__main__":
    main()
