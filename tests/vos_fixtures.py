"""Small synthetic benchmark datasets in the DAVIS 2017, SA-V and YouTube-VOS layouts, made by
the tests (and benchmarks/evaluate.py): moving shapes over a textured background, objects that
appear later, vanish, touch the border, are a single pixel, and void (255) regions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from sam2kit.vos.datasets import davis_palette, save_png


def shapes_video(n: int, h: int, w: int, seed: int = 0, objects: int = 4, void: bool = True, appear: int = 2):
    """(frames [n, h, w, 3] uint8 RGB, labels [n, h, w] uint8). Object 1: a disc drifting right
    all along; 2: a box that appears on frame ``appear`` and slides into the right border; 3:
    an ellipse that vanishes after frame n // 2; 4: a single pixel on frames 1..n-2; 255: a
    void band on every other frame."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = (rng.integers(60, 120, (h // 8 + 1, w // 8 + 1, 3))).repeat(8, 0).repeat(8, 1)[:h, :w]
    colours = rng.integers(120, 255, (objects + 1, 3))
    frames = np.empty((n, h, w, 3), np.uint8)
    labels = np.zeros((n, h, w), np.uint8)
    for t in range(n):
        lab = labels[t]
        cy, cx, r = h * 0.45 + rng.normal(0, 1), w * 0.25 + t * w * 0.03, min(h, w) * 0.18
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
        if objects >= 2 and t >= appear:
            x0 = int(w * 0.55 + t * w * 0.06)
            lab[int(h * 0.1): int(h * 0.4), x0: x0 + int(w * 0.3)] = 2
        if objects >= 3 and t <= n // 2:
            lab[((yy - h * 0.75) / (h * 0.12)) ** 2 + ((xx - w * 0.6) / (w * 0.15)) ** 2 <= 1] = 3
        if objects >= 4 and 1 <= t <= n - 2:
            lab[int(h * 0.9), int(w * 0.1) + t] = 4
        if void and t % 2 == 0:
            lab[int(h * 0.6): int(h * 0.6) + 3, :] = 255
        img = base.copy()
        for k in range(1, objects + 1):
            img[lab == k] = colours[k]
        frames[t] = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    return frames, labels


def write_frames(folder: Path, frames: np.ndarray, step: int = 1) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for t, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{t * step:05d}.jpg", quality=95)


def write_palette_masks(folder: Path, labels: np.ndarray, frames=None, step: int = 1) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for t in (range(len(labels)) if frames is None else frames):
        save_png(folder / f"{t * step:05d}.png", labels[t], davis_palette())


def write_object_masks(folder: Path, labels: np.ndarray, ids, frames=None, step: int = 1) -> None:
    for k in ids:
        d = folder / f"{k:03d}"
        d.mkdir(parents=True, exist_ok=True)
        for t in (range(len(labels)) if frames is None else frames):
            save_png(d / f"{t * step:05d}.png", (labels[t] == k).astype(np.uint8), davis_palette())


def make_davis(root: Path, videos: dict, split: str = "val", frames: bool = True) -> Path:
    """videos: {name: (frames, labels)} -> a DAVIS 2017 folder at ``root``."""
    for name, (f, lab) in videos.items():
        if frames:
            write_frames(root / "JPEGImages" / "480p" / name, f)
        write_palette_masks(root / "Annotations" / "480p" / name, lab)
    (root / "ImageSets" / "2017").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "2017" / f"{split}.txt").write_text("".join(f"{n}\n" for n in videos))
    return root


def make_sav(root: Path, videos: dict, step: int = 4, frames: bool = True) -> Path:
    """videos: {name: (frames, labels)}: frames at 24 fps, every ``step``-th one annotated,
    one folder per object (numbered from 0, as SA-V's: object k of the labels is 00k-1), with a
    PNG on every annotated frame (empty where the object is absent)."""
    for name, (f, lab) in videos.items():
        if frames:
            write_frames(root / "JPEGImages_24fps" / name, np.repeat(f, step, axis=0)[: (len(f) - 1) * step + 1])
        ids = [int(k) for k in np.unique(lab) if 0 < k < 255]
        ann = root / "Annotations_6fps" / name
        for k in ids:
            d = ann / f"{k - 1:03d}"
            d.mkdir(parents=True)
            for t in range(len(lab)):
                save_png(d / f"{t * step:05d}.png", (lab[t] == k).astype(np.uint8), davis_palette())
    return root


def make_ytvos(root: Path, videos: dict, split: str = "valid") -> Path:
    """YouTube-VOS: palette annotations only on the frames where objects first appear (holding
    those objects)."""
    for name, (f, lab) in videos.items():
        write_frames(root / split / "JPEGImages" / name, f)
        seen: set = set()
        first = np.zeros_like(lab)
        frames = []
        for t in range(len(lab)):
            new = {int(k) for k in np.unique(lab[t]) if 0 < k < 255} - seen
            if new:
                seen |= new
                first[t] = np.where(np.isin(lab[t], list(new)), lab[t], 0)
                frames.append(t)
        write_palette_masks(root / split / "Annotations" / name, first, frames)
    return root
