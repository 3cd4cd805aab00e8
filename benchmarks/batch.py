"""sam2kit batch: throughput on this machine, Ray's cost per item, and a 100k-item simulation of
the driver and ledger at cluster scale.

1. ``real``: `sam2kit batch` (a fresh process each, as a user runs it) on 64 generated photos
   (640x480, a 3x3 grid of clicks each) and on 8 generated clips (8 frames of 640x480, the
   default centre prompt), with one worker (this process, all threads), two worker processes
   (one thread each) and Ray local with two actors (one CPU each). Random tiny weights (speed
   does not depend on them). Items/s is measured over the items (from the ledger: first start
   to last finish); "wall" adds start-up (model loads, Ray's runtime).
2. ``ray``: Ray's own cost per item: the driver's scheduling and ledger code with actors that
   hold no model and return at once (two actors, two tasks in flight each; one item a task,
   and 16), against the same code with an in-process backend that returns at once; and the
   driver's own CPU time per item.
3. ``sim``: the driver, scheduler and ledger at cluster scale, with a simulated cluster of
   workers that take a fixed time per item and write nothing (no model): 100,000 items found by
   discovery in real files; 800 slots at 0.25 s an item (100 nodes x 8 GPUs at 4 images/s
   each: 3,200 items/s offered); the driver killed (an interruption) at 60% and the batch
   resumed; 0.2% of items fail once and 0.05% always; each item's COCO part is nine real
   masks' RLE (one part shared by all items, made once: a real worker makes its own). Also
   the driver's ceiling (workers that take no time), the ledger's size,
   --status and annotations.json times.

    python benchmarks/batch.py                         # all three (~15 min on 2 cores)
    python benchmarks/batch.py --parts sim --items 100000 --json out/batch-sim.json
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


# ---- 1. real runs -------------------------------------------------------------------------


def cpu_name() -> str:
    from sam2kit.kernels.tuning import cpu_model  # the one CPU naming (model, family/model/stepping)

    return cpu_model()

def make_data(root: Path, images: int, clips: int, frames: int) -> None:
    import av
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:480, 0:640]
    for k in range(images):
        img = (rng.random((480, 640, 3)) * 50 + 70).astype(np.uint8)
        for _ in range(4):
            cx, cy, r = rng.uniform(0, 640), rng.uniform(0, 480), rng.uniform(40, 140)
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.integers(0, 255, 3)
        (root / "images" / f"d{k % 4}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / "images" / f"d{k % 4}" / f"img{k:03d}.jpg", quality=90)
    (root / "clips").mkdir(parents=True, exist_ok=True)
    for c in range(clips):
        with av.open(str(root / "clips" / f"clip{c}.mp4"), "w") as out:
            s = out.add_stream("libx264", rate=25)
            s.width, s.height, s.pix_fmt = 640, 480, "yuv420p"
            for i in range(frames):
                img = np.full((480, 640, 3), 90, np.uint8)
                img[(xx - 200 - 12 * i - 20 * c) ** 2 + (yy - 240) ** 2 < 80 ** 2] = (220, 60, 40)
                for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    out.mux(p)
            for p in s.encode():
                out.mux(p)


def make_checkpoint(path: Path) -> None:
    import torch

    from sam2kit import get_config
    from sam2kit.build import build_model

    torch.manual_seed(0)
    sd = build_model(get_config("sam2-hiera-tiny")).state_dict()
    sd["sam_mask_decoder.pred_obj_score_head.layers.2.bias"].fill_(8.0)
    torch.save({"model": sd}, path)


def ledger_span(out: Path) -> tuple[int, float]:
    db = sqlite3.connect(out / "batch.sqlite")
    n, first, last = db.execute("SELECT COUNT(*), MIN(started), MAX(finished) FROM items "
                                "WHERE state = 'done'").fetchone()
    db.close()
    return n, last - first


def real_runs(root: Path, resolution: int, threads: int) -> list[dict]:
    ckpt = root / "tiny.pt"
    make_checkpoint(ckpt)
    runs = []
    for task, inputs, extra in [("image", "images", ["--grid", "3x3"]), ("video", "clips", [])]:
        for name, opts in [("1 worker", []), ("2 workers", ["--workers", "2"]),
                           ("Ray local, 2 actors", ["--ray", "local", "--workers", "2"])]:
            out = root / f"out-{task}-{len(runs)}"
            cmd = [sys.executable, "-m", "sam2kit", "batch", str(root / inputs), "-o", str(out),
                   "--task", task, "--checkpoint", str(ckpt), "--resolution", str(resolution),
                   "--device", "cpu", "-q", *extra, *opts]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True,
                                  env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
            n, span = ledger_span(out)
            load = os.getloadavg()[1]  # the machine's 5-minute load: others' work shows here
            runs.append({"task": task, "run": name, "items": n, "items_per_s": round(n / span, 3),
                         "s_per_item": round(span / n, 3), "wall_s": round(wall, 2),
                         "load_avg_5min": round(load, 1)})
            print(f"{task:5} {name:22} {n} items  {n / span:.3f} items/s  wall {wall:.1f} s  "
                  f"(load average {load:.1f})", flush=True)
    return runs


# ---- 2. Ray's cost per item ---------------------------------------------------------------

def coco_part(item_id: int, key: str, rles: list[str]) -> dict:
    anns = [{"id": item_id * 100000 + k + 1, "image_id": item_id, "category_id": 1, "iscrowd": 0,
             "segmentation": {"size": [480, 640], "counts": rle}, "area": 5000, "bbox": [1, 2, 3, 4],
             "score": 0.9, "points": [[1.0, 2.0]], "labels": [1], "box": None,
             "mask_file": f"{key}/mask_{k:02d}.png"} for k, rle in enumerate(rles)]
    return {"image": {"id": item_id, "file_name": key, "path": "/in/" + key, "width": 640, "height": 480},
            "annotations": anns}


def nine_rles() -> list[str]:
    """COCO RLE strings of nine random blobs at 640x480 (real masks' length and entropy)."""
    from sam2kit.image.amg import coco_encode_rle, mask_to_rle

    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:480, 0:640]
    out = []
    for _ in range(9):
        cx, cy = rng.uniform(100, 540), rng.uniform(100, 380)
        r = 60 + 25 * np.sin(np.arctan2(yy - cy, xx - cx) * rng.integers(2, 7))
        out.append(coco_encode_rle(mask_to_rle((xx - cx) ** 2 + (yy - cy) ** 2 < r ** 2))["counts"])
    return out


class EchoWorker:
    """A Ray actor with RayWorker's interface that holds no model: returns at once."""

    def __init__(self, spec, name):
        self.name, self.rles = name, nine_rles()

    def ready(self):
        return ("ready", self.name)

    def run(self, works):
        from sam2kit.batch.worker import ItemResult, encode_coco

        return [ItemResult(True, 0.0, self.name, coco=encode_coco(coco_part(w.id, w.key, self.rles)))
                for w in works]


class SimulatedCluster:
    """A backend whose ``slots`` workers each take ``seconds`` an item and write nothing (its
    'items' finish on the real clock); an item whose id is in ``fail_once`` fails its first
    attempt, one in ``fail_always`` every attempt. ``stop_after``: raise KeyboardInterrupt
    (the driver dies) once that many items finished."""

    def __init__(self, slots: int, seconds: float, fail_once=(), fail_always=(), stop_after=None,
                 seen: set | None = None):
        self.slots, self.seconds = slots, seconds
        self.description = f"simulated: {slots} workers, {seconds} s an item"
        self.fail_once, self.fail_always = set(fail_once), set(fail_always)
        self.stop_after, self.finished = stop_after, 0
        self.heap: list = []
        self.seen = set() if seen is None else seen  # items tried before (across runs)
        from sam2kit.batch.worker import encode_coco

        # one part for all items (its ids repeat): a real worker makes and compresses its own
        self.coco = encode_coco(coco_part(1, "d000/img000000.jpg", nine_rles()))

    def submit(self, work) -> None:
        heapq.heappush(self.heap, (time.perf_counter() + self.seconds, work.id, work))

    def wait(self, timeout: float):
        from sam2kit.batch.worker import ItemResult

        if self.stop_after is not None and self.finished >= self.stop_after:
            raise KeyboardInterrupt("simulated driver death")
        if not self.heap:
            return []
        delay = self.heap[0][0] - time.perf_counter()
        if delay > 0:
            time.sleep(min(delay, timeout))
        now, done = time.perf_counter(), []
        while self.heap and self.heap[0][0] <= now:
            _, _, work = heapq.heappop(self.heap)
            first = work.id not in self.seen
            self.seen.add(work.id)
            if work.id in self.fail_always or (first and work.id in self.fail_once):
                done.append((work, ItemResult(False, self.seconds, "sim", error="simulated failure")))
            else:
                done.append((work, ItemResult(True, self.seconds, "sim", coco=self.coco)))
        self.finished += len(done)
        return done

    def close(self) -> None:
        self.heap.clear()


def ray_overhead(root: Path, n: int) -> dict:
    from sam2kit.batch import BatchConfig, run_batch
    from sam2kit.batch.items import Item
    from sam2kit.batch.ray_backend import RayBackend
    from sam2kit.jobs.common import Console
    from sam2kit.jobs.model import ModelSpec

    items = [Item(f"i{k:06d}.jpg", f"/nowhere/i{k:06d}.jpg") for k in range(n)]
    figures = {}
    for name, make in [("in-process, no model", lambda spec: SimulatedCluster(1, 0.0)),
                       ("Ray local, 2 actors, no model",
                        lambda spec: RayBackend(spec, "local", 2, 1, actor=EchoWorker)),
                       ("Ray local, 2 actors, no model, 16 items a task",
                        lambda spec: RayBackend(spec, "local", 2, 1, items_per_task=16, actor=EchoWorker))]:
        t0 = time.perf_counter()
        backend_start = {}

        def timed(spec, make=make):
            t = time.perf_counter()
            b = make(spec)
            backend_start["s"] = time.perf_counter() - t
            return b

        out = root / f"overhead-{len(figures)}"
        cpu0 = time.process_time()
        report = run_batch(BatchConfig("image", str(out), ModelSpec(resolution=512)), items,
                           Console(quiet=True), make_backend=timed)
        cpu = time.process_time() - cpu0  # the driver's own CPU (Ray's workers are other processes)
        n_done, span = ledger_span(out)
        figures[name] = {"items": n_done, "items_per_s": round(n_done / span, 1),
                         "ms_per_item": round(1000 * span / n_done, 3),
                         "driver_cpu_ms_per_item": round(1000 * cpu / n_done, 3),
                         "start_s": round(backend_start["s"], 2),
                         "wall_s": round(time.perf_counter() - t0, 2), "failed": report["failed"]}
        print(f"{name:32} {n_done / span:8.1f} items/s  {1000 * span / n_done:.3f} ms an item  "
              f"driver CPU {1000 * cpu / n_done:.3f} ms an item  start {backend_start['s']:.1f} s", flush=True)
    return figures


# ---- 3. cluster-scale simulation ------------------------------------------------------------

def simulate(root: Path, n: int, slots: int, seconds: float) -> dict:
    from sam2kit.batch import BatchConfig, batch_status, discover, run_batch
    from sam2kit.jobs.common import Console
    from sam2kit.jobs.model import ModelSpec

    fig: dict = {"items": n, "slots": slots, "seconds_per_item": seconds,
                 "offered_items_per_s": slots / seconds}
    inputs, out = root / "inputs", root / "sim-out"
    t0 = time.perf_counter()
    for k in range(n):  # the inputs (empty: never read) and each item's results.json (the
        d = inputs / f"d{k // 1000:03d}"  # outputs that the workers would have written)
        if k % 1000 == 0:
            d.mkdir(parents=True)
        (d / f"img{k:06d}.jpg").touch()
        (out / f"d{k // 1000:03d}" / f"img{k:06d}.jpg").mkdir(parents=True)
        (out / f"d{k // 1000:03d}" / f"img{k:06d}.jpg" / "results.json").write_text("{}")
    fig["setup_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    items = discover([str(inputs)], "image")
    fig["discover_s"] = round(time.perf_counter() - t0, 2)
    rng = np.random.default_rng(0)
    ids = rng.permutation(np.arange(1, n + 1))
    fail_once, fail_always = set(ids[: n // 500].tolist()), set(ids[n // 500: n // 500 + n // 2000].tolist())
    config = BatchConfig("image", str(out), ModelSpec(resolution=512), overwrite=True, retries=1)
    console = Console(quiet=True)

    seen: set = set()

    def run(stop_after=None):
        cluster = SimulatedCluster(slots, seconds, fail_once, fail_always, stop_after, seen)
        t = time.perf_counter()
        try:
            report = run_batch(config, items, console, make_backend=lambda spec: cluster)
        except KeyboardInterrupt:
            report = None
        return report, time.perf_counter() - t

    _, killed_s = run(stop_after=int(0.6 * n))
    db = sqlite3.connect(out / "batch.sqlite")
    at_kill = dict(db.execute("SELECT state, COUNT(*) FROM items GROUP BY state").fetchall())
    running = {i for (i,) in db.execute("SELECT id FROM items WHERE state = 'running'")}
    first, last = db.execute("SELECT MIN(started), MAX(finished) FROM items WHERE state = 'done'").fetchone()
    fig["first_run"] = {"killed_after_s": round(killed_s, 2), "states_at_kill": at_kill,
                        "items_per_s": round(at_kill["done"] / (last - first), 1)}
    report, resumed_s = run()
    rows = db.execute("SELECT id, state, attempts FROM items").fetchall()
    attempts = {i: a for i, _, a in rows}
    states = {}
    for _, s, _ in rows:
        states[s] = states.get(s, 0) + 1
    extra = sum(a - 1 for a in attempts.values())
    fig["resumed_run"] = {"s": round(resumed_s, 2), "timings_s": report["timings_s"],
                          "made": report["done"], "skipped": report["skipped"],
                          "failed": report["failed"], "states_after": states,
                          "attempts_beyond_one": extra,
                          "items_per_s": round(report["done"] / report["timings_s"]["items"], 1)}
    # every item made once: one attempt, one more if it was out when the driver died, one more
    # if it failed once; items that always fail are failed after 2 attempts in each run
    wrong = [i for i, s, a in rows if (s == "failed") != (i in fail_always) or (
        i not in fail_always and a != 1 + (i in running) + (i in fail_once))]
    fig["each_item_once"] = not wrong
    t0 = time.perf_counter()
    status = batch_status(str(out))
    fig["status_s"] = round(time.perf_counter() - t0, 3)
    fig["status_counts"] = {k: status[k] for k in ("done", "failed", "pending", "running")}
    size = (out / "batch.sqlite").stat().st_size
    fig["ledger_bytes_per_item"] = round(size / n)
    fig["annotations_json_mb"] = round((out / "annotations.json").stat().st_size / 2**20, 1)
    db.close()
    t0 = time.perf_counter()
    from sam2kit.batch.ledger import Ledger
    from sam2kit.batch.runner import write_coco
    from sam2kit.batch.storage import open_output

    led = Ledger(out / "batch.sqlite")
    write_coco(led, open_output(str(out)))
    led.close()
    fig["annotations_json_s"] = round(time.perf_counter() - t0, 2)
    # the driver's ceiling: workers that take no time, all 100k items afresh
    ceiling_out = root / "ceiling-out"
    cluster = SimulatedCluster(slots, 0.0)
    t0 = time.perf_counter()
    run_batch(BatchConfig("image", str(ceiling_out), ModelSpec(resolution=512)), items, console,
              make_backend=lambda spec: cluster)
    n_done, span = ledger_span(ceiling_out)
    fig["driver_ceiling_items_per_s"] = round(n_done / span, 1)
    fig["ceiling_wall_s"] = round(time.perf_counter() - t0, 2)
    blob = sqlite3.connect(ceiling_out / "batch.sqlite").execute("SELECT AVG(LENGTH(data)) FROM coco").fetchone()[0]
    fig["coco_bytes_per_item_in_ledger"] = round(blob)
    fig["coco_raw_bytes_per_item"] = len(json.dumps(coco_part(1, "d000/img000000.jpg", nine_rles())))
    fig["zlib_ratio"] = round(fig["coco_raw_bytes_per_item"] / blob, 2)  # the ledger stores parts compressed
    print(json.dumps(fig, indent=1), flush=True)
    return fig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", nargs="+", choices=("real", "ray", "sim"), default=["real", "ray", "sim"])
    p.add_argument("--resolution", type=int, default=512, help="model input size of the real runs")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="OMP_NUM_THREADS of real runs")
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--items", type=int, default=100_000, help="items of the simulation")
    p.add_argument("--slots", type=int, default=800, help="simulated workers")
    p.add_argument("--seconds", type=float, default=0.25, help="simulated seconds an item")
    p.add_argument("--overhead-items", type=int, default=4000)
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    result = {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()}
    print(f"CPU: {result['cpu']}, {result['cores']} cores (shared with other work while measured)")
    with tempfile.TemporaryDirectory(prefix="sam2kit-batch-bench-") as tmp:
        root = Path(tmp)
        if "real" in a.parts:
            make_data(root, a.images, a.clips, a.frames)
            result["real"] = {"resolution": a.resolution, "threads": a.threads,
                              "runs": real_runs(root, a.resolution, a.threads)}
        if "ray" in a.parts:
            result["ray_overhead"] = ray_overhead(root, a.overhead_items)
        if "sim" in a.parts:
            result["simulation"] = simulate(root, a.items, a.slots, a.seconds)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
