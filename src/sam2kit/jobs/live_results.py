"""What a live run writes about its frames, in memory that does not grow with the stream:
``frames.jsonl``, one line per tracked frame (the entry a file run lists under "frames" in
results.json), appended and flushed as each frame is done; and ``results.json``, a summary of
bounded size (status, totals, per-object counts, dropped and late frames as capped ranges,
latency, the last frame), rewritten atomically every few seconds and at the end."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from sam2kit.outputs import save_json
from sam2kit.video.sources import IndexRanges

FRAMES_FILE = "frames.jsonl"


class RunningTotals:
    """The "totals" of results.json (as ``video.totals`` computes them from every frame's
    entry) kept as running sums: a few numbers per object, whatever the number of frames."""

    def __init__(self, obj_ids: list):
        self.obj_ids = list(obj_ids)
        self.frames = 0
        k = len(self.obj_ids)
        self.with_mask, self.area_sum, self.area_max = [0] * k, [0] * k, [0] * k
        self.score_sum, self.score_n = [0.0] * k, [0] * k

    def add(self, entry: dict) -> None:
        self.frames += 1
        for k, o in enumerate(entry["objects"]):
            self.with_mask[k] += o["area"] > 0
            self.area_sum[k] += o["area"]
            self.area_max[k] = max(self.area_max[k], o["area"])
            if o["object_score"] is not None:
                self.score_sum[k] += o["object_score"]
                self.score_n[k] += 1

    def as_json(self) -> dict:
        n = self.frames
        return {"frames": n, "objects": [
            {"id": i, "frames_with_mask": self.with_mask[k],
             "mean_area": round(self.area_sum[k] / n, 2) if n else 0.0, "max_area": self.area_max[k],
             "mean_object_score": round(self.score_sum[k] / self.score_n[k], 4) if self.score_n[k] else None}
            for k, i in enumerate(self.obj_ids)]}


class Latency:
    """p50, p95 and max of per-frame latencies over a run of any length: a histogram of bins
    1% wide from 0.1 ms to about a day (fixed memory), so a percentile (nearest rank) is
    within 1% of the exact one; the max is exact."""

    LOW, RATIO, BINS = 1e-4, 1.01, 2100

    def __init__(self):
        self.counts = np.zeros(self.BINS + 1, np.int64)  # bin k: (LOW * RATIO**(k-1), LOW * RATIO**k]
        self.n, self.max = 0, 0.0

    def add(self, seconds: float) -> None:
        s = max(float(seconds), 0.0)
        k = 0 if s <= self.LOW else min(self.BINS, math.ceil(math.log(s / self.LOW) / math.log(self.RATIO)))
        self.counts[k] += 1
        self.n += 1
        self.max = max(self.max, s)

    def percentile(self, q: float) -> float:
        rank = max(1, math.ceil(q / 100 * self.n))
        k = int(np.searchsorted(np.cumsum(self.counts), rank))
        return min(self.LOW * self.RATIO ** k, self.max)

    def as_json(self) -> dict | None:
        if not self.n:
            return None
        return {"p50": round(self.percentile(50), 4), "p95": round(self.percentile(95), 4),
                "max": round(self.max, 4)}


def listed(count: str, frames: str, ranges: IndexRanges) -> dict:
    """How many (``count``), which as ranges (``frames``) and whether that list is cut short."""
    return {count: len(ranges), frames: ranges.ranges(), f"{frames}_truncated": not ranges.complete}


class LiveRecorder:
    """Records each tracked frame as it is done: its entry appended to frames.jsonl (flushed,
    so a reader or a killed run sees every finished frame), the running totals and latency
    updated; results.json (``results``, without a "frames" list: "frames_file" names the
    jsonl) is saved every ``every_s`` seconds while tracking ("complete": false) and by
    ``finish``. ``dropped`` and ``late`` are the source's records of frames dropped in real
    time and (a folder) frames that came too late; what they list is capped (IndexRanges);
    ``health`` (a SourceHealth) what went wrong with the source, as capped counts."""

    def __init__(self, results: dict, out: Path, obj_ids: list, every_s: float,
                 dropped: IndexRanges, late: IndexRanges | None = None, health=None):
        self.results, self.path, self.every_s = results, out / "results.json", every_s
        self.dropped, self.late, self.health = dropped, late, health
        self.totals, self.latency = RunningTotals(obj_ids), Latency()
        results.pop("frames", None)
        results["frames_file"] = FRAMES_FILE
        self._lines = open(out / FRAMES_FILE, "x", encoding="utf-8")
        self.saved = time.perf_counter()

    def __call__(self, entry: dict, latency_s: float) -> None:
        self._lines.write(json.dumps(entry) + "\n")
        self._lines.flush()
        self.totals.add(entry)
        self.latency.add(latency_s)
        self.results["tracking"]["last_frame"] = entry["frame"]
        if time.perf_counter() - self.saved > self.every_s:
            self.save()

    def save(self) -> None:
        r = self.results
        r["tracking"].update(listed("dropped", "dropped_frames", self.dropped))
        if self.late is not None:
            r["tracking"].update(listed("late_frames_skipped", "late_frames", self.late))
        if self.health is not None:  # the source's SourceHealth: damaged, resized and lost frames, outages
            r["tracking"]["source"] = self.health.as_json()
        r["tracking"]["latency_s"] = self.latency.as_json()
        r["totals"] = self.totals.as_json()
        save_json(r, self.path)
        self.saved = time.perf_counter()

    def finish(self, timings: dict, spent: dict) -> dict:
        self.close()
        r, done = self.results, self.totals.frames
        r["tracking"]["complete"] = True
        r["timings_s"] = {k: round(v, 4) for k, v in timings.items()}
        r["frames_per_second"] = {
            "tracking": round(done / spent["model"], 4) if done and spent["model"] else None,
            "with_writing": round(done / (spent["model"] + spent["write"]), 4) if done else None}
        self.save()
        return r

    def close(self) -> None:
        self._lines.close()
