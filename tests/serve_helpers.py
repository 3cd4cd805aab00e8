"""Running the real ``sam2kit serve`` for tests: a subprocess (uvicorn) on a free 127.0.0.1 port,
a random checkpoint, and small pictures and videos made here."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import torch

from sam2kit import get_config
from sam2kit.build import build_model
from sam2kit.kernels.tuning import cpu_model as cpu_name  # noqa: F401  (re-exported: the one CPU naming)


def random_checkpoint(path: Path, name: str = "sam2-hiera-tiny", seed: int = 0) -> Path:
    """Random weights in the official format, objects judged present (as with real weights; as
    scripts/make_random_checkpoint.py does)."""
    torch.manual_seed(seed)
    model = build_model(get_config(name, 256))
    with torch.no_grad():
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(8.0)
    torch.save({"model": model.state_dict()}, path)
    return path


def moving_frames(n: int, h: int = 96, w: int = 128) -> list[np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w]
    frames = []
    for i in range(n):
        img = np.full((h, w, 3), 90, np.uint8)
        img[((xx - 30 - 2 * i) ** 2 + (yy - 48) ** 2) < 250] = (230, 40, 40)
        img[((xx - 95) ** 2 + (yy - 30 - i) ** 2) < 120] = (40, 200, 60)
        img[(xx // 8 + yy // 8) % 2 == 0] += 20
        frames.append(img)
    return frames


def write_mp4(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    from sam2kit.outputs import Mp4Writer

    writer = Mp4Writer(path, fps, frames[0].shape[1], frames[0].shape[0])
    for f in frames:
        writer.add(f)
    writer.close()
    return path


class Server:
    """``sam2kit serve`` in a subprocess on a free loopback port, as a user starts it: ``url``
    (no trailing slash), ``log`` (its output so far, read by a thread so that the pipe never
    fills), ``stop()`` (SIGTERM; returns the exit status)."""

    def __init__(self, checkpoint: Path, *options: str, resolution: int = 256, timeout: float = 180.0):
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sam2kit", "serve", "--model", str(checkpoint), "--resolution",
             str(resolution), "--port", "0", "--device", "cpu", *options],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.output: list[str] = []
        self.url: str | None = None
        self._found = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._found.wait(timeout) or self.url is None:
            self.stop()
            raise RuntimeError("sam2kit serve did not start:\n" + self.log)

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.output.append(line)
            m = re.search(r"listening on (http://\S+?)/? ", line)
            if m and self.url is None:
                self.url = m.group(1)
                self._found.set()
        self._found.set()

    @property
    def log(self) -> str:
        return "".join(self.output[-60:])

    def stop(self, sig=signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._reader.join(10)
        return rc
