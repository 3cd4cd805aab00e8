#!/usr/bin/env python
"""Point-grid demo of the image workflow: embed an image once, then prompt it point by point.

Loads a SAM 2 model, sets one image, places an R x C grid of points at the centres of the grid
cells, and for each point asks for three candidate masks with that point as the only
(foreground) prompt, keeping the candidate with the highest predicted score. Writes into the
output directory:

    mask_00.png, mask_01.png, ...  one 8-bit mask per point (0 / 255, the image's size)
    composite.png                  every mask overlaid in its own colour, points marked
    results.json                   model, device, image, timings, and per-point scores, area, bbox

Examples:

    python examples/demo_image.py -o out/                              # bundled photo, official tiny
    python examples/demo_image.py --image cat.jpg --grid 4x6 -o out/
    python examples/demo_image.py --model sam2.1-hiera-large --device cuda -o out/
    python examples/demo_image.py --model ~/ckpt/sam2_hiera_tiny.pt -o out/   # a local checkpoint

Exit status: 0 on success, 2 on a usage or input error (one line on stderr).
"""

from __future__ import annotations

import argparse
import colorsys
import contextlib
import importlib.resources
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps, UnidentifiedImageError
from tqdm import tqdm

import sam2kit
from sam2kit import CheckpointError, CheckpointNotFoundError, SAM2ImagePredictor

DEFAULT_MODEL = "facebook/sam2-hiera-tiny"
OVERLAY_ALPHA = 0.45
# tab10, then evenly spread hues for larger grids
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


class DemoError(Exception):
    """An input or usage problem: reported as one line on stderr, exit status 2."""


# ---- arguments ---------------------------------------------------------------------------

def default_image() -> Path:
    return Path(str(importlib.resources.files("sam2kit") / "assets" / "sample_photo.png"))


def parse_grid(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX*,]\s*(\d+)\s*", text)
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise argparse.ArgumentTypeError(f"expected ROWSxCOLS with positive integers (e.g. 3x3), got {text!r}")
    rows, cols = int(m.group(1)), int(m.group(2))
    if rows * cols > 10_000:
        raise argparse.ArgumentTypeError(f"{rows}x{cols} is {rows * cols} points; use at most 10000")
    return rows, cols


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Segment an image from a grid of single-point prompts with SAM 2 (sam2kit).")
    p.add_argument("--image", type=Path, default=None,
                   help="image file to segment (default: the bundled sample_photo.png)")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="hub id (facebook/sam2-hiera-tiny), model name (sam2.1-hiera-large) or the "
                        f"path of a local .pt checkpoint (default: {DEFAULT_MODEL})")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="explicit local checkpoint file for --model (skips the hub)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto (default: cpu)")
    p.add_argument("--grid", type=parse_grid, default=(3, 3), metavar="ROWSxCOLS",
                   help="prompt grid, points at the cell centres (default: 3x3)")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="output directory (created if missing; must be empty unless --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty output directory, replacing earlier demo outputs")
    return p


# ---- inputs and outputs ------------------------------------------------------------------

def check_output_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise DemoError(f"output {str(out)!r} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DemoError(f"output directory {str(out)!r} is not empty; pass --overwrite to write into it")


def make_output_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DemoError(f"cannot create output directory {str(out)!r}: {e.strerror or e}") from e


def load_image(path: Path) -> np.ndarray:
    if not path.exists():
        raise DemoError(f"image {str(path)!r} does not exist")
    if not path.is_file():
        raise DemoError(f"image {str(path)!r} is not a file")
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)  # camera photos: honour the EXIF orientation
            return np.array(im.convert("RGB"))  # a writable copy
    except UnidentifiedImageError as e:
        raise DemoError(f"cannot read image {str(path)!r}: not an image format Pillow recognises") from e
    except (OSError, ValueError, SyntaxError) as e:  # truncated or damaged files
        raise DemoError(f"cannot read image {str(path)!r}: {one_line(e)}") from e


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(final: Path):
    """Yield a temporary path in final's directory; on success it replaces ``final``."""
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save_png(img: Image.Image, final: Path) -> None:
    with atomic_path(final) as tmp:
        img.save(tmp, format="PNG")


def save_json(obj, final: Path) -> None:
    with atomic_path(final) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or e.__class__.__name__


# ---- the workflow ------------------------------------------------------------------------

def grid_points(h: int, w: int, rows: int, cols: int) -> list[tuple[int, int, float, float]]:
    """(row, col, x, y) at the centre of each cell, row-major."""
    return [(r, c, (c + 0.5) * w / cols, (r + 0.5) * h / rows)
            for r in range(rows) for c in range(cols)]


def bbox_xyxy(mask: np.ndarray) -> list[int] | None:
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if ys.size == 0:
        return None
    return [int(xs[0]), int(ys[0]), int(xs[-1]), int(ys[-1])]


def colour(k: int) -> tuple[int, int, int]:
    if k < len(PALETTE):
        return PALETTE[k]
    hue = (k * 0.618033988749895) % 1.0
    return tuple(int(round(255 * v)) for v in colorsys.hsv_to_rgb(hue, 0.75, 0.95))


def boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it."""
    p = np.pad(mask, 1, constant_values=False)
    inner = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return mask & ~inner


def make_composite(image: np.ndarray, masks: list[np.ndarray], points) -> Image.Image:
    out = image.astype(np.float32)
    # largest first, so that small masks stay visible on top of large ones
    order = sorted(range(len(masks)), key=lambda k: -int(masks[k].sum()))
    for k in order:
        m = masks[k]
        c = np.asarray(colour(k), dtype=np.float32)
        out[m] = out[m] * (1.0 - OVERLAY_ALPHA) + c * OVERLAY_ALPHA
        out[boundary(m)] = c
    comp = Image.fromarray(out.round().clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(comp)
    h, w = image.shape[:2]
    r = max(4, round(min(h, w) / 70))
    for k, (_, _, x, y) in enumerate(points):
        draw.ellipse([x - r - 2, y - r - 2, x + r + 2, y + r + 2], fill=(0, 0, 0))
        draw.ellipse([x - r, y - r, x + r, y + r], fill=colour(k), outline=(255, 255, 255), width=2)
        draw.text((x + r + 4, y - r - 2), str(k), fill=(255, 255, 255), stroke_width=2,
                  stroke_fill=(0, 0, 0))
    return comp


def sync(device) -> None:
    if getattr(device, "type", "cpu") == "cuda":
        import torch
        torch.cuda.synchronize(device)


def run(args: argparse.Namespace) -> dict:
    image_path = (args.image or default_image()).expanduser()
    out = args.output.expanduser()
    rows, cols = args.grid
    check_output_dir(out, args.overwrite)  # fail fast; created only once the model is loaded
    image = load_image(image_path)
    h, w = image.shape[:2]

    t0 = time.perf_counter()
    predictor = SAM2ImagePredictor.from_pretrained(
        args.model, device=args.device,
        checkpoint=args.checkpoint.expanduser() if args.checkpoint else None)
    load_s = time.perf_counter() - t0
    config = predictor.model.config
    print(f"model {config.name} on {predictor.device} (loaded in {load_s:.2f} s)", file=sys.stderr)
    make_output_dir(out)

    t0 = time.perf_counter()
    predictor.set_image(image)
    sync(predictor.device)
    set_image_s = time.perf_counter() - t0

    points = grid_points(h, w, rows, cols)
    entries, masks = [], []
    predict_total = 0.0
    for k, (r, c, x, y) in enumerate(tqdm(points, desc="points", unit="pt", file=sys.stderr)):
        t0 = time.perf_counter()
        cand, scores, _ = predictor.predict(point_coords=np.array([[x, y]], dtype=np.float32),
                                            point_labels=np.array([1]), multimask_output=True)
        dt = time.perf_counter() - t0
        predict_total += dt
        best = int(np.argmax(scores))
        mask = cand[best] > 0.5
        name = f"mask_{k:02d}.png"
        save_png(Image.fromarray(mask.astype(np.uint8) * 255), out / name)  # 2-D uint8: mode L
        masks.append(mask)
        entries.append({
            "index": k, "row": r, "col": c, "point_xy": [round(x, 2), round(y, 2)], "label": 1,
            "mask_file": name, "best_candidate": best, "score": float(scores[best]),
            "candidate_scores": [float(s) for s in scores],
            "area": int(mask.sum()), "area_fraction": round(float(mask.mean()), 6),
            "bbox_xyxy": bbox_xyxy(mask), "predict_s": round(dt, 4),
        })

    save_png(make_composite(image, masks, points), out / "composite.png")
    written = {e["mask_file"] for e in entries}
    for stale in out.glob("mask_*.png"):  # masks of an earlier, larger grid (--overwrite)
        if re.fullmatch(r"mask_\d{2,}\.png", stale.name) and stale.name not in written:
            stale.unlink()

    results = {
        "sam2kit_version": sam2kit.__version__,
        "model": args.model,
        "model_config": config.name,
        "checkpoint": str(args.checkpoint) if args.checkpoint else None,
        "device": str(predictor.device),
        "model_image_size": config.image_size,
        "image": {"path": str(image_path.resolve()), "width": w, "height": h},
        "grid": {"rows": rows, "cols": cols},
        "multimask_output": True,
        "selection": "highest predicted score of the candidates",
        "bbox_format": "[x_min, y_min, x_max, y_max], inclusive pixel indices; null for an empty mask",
        "timings_s": {"load_model": round(load_s, 4), "set_image": round(set_image_s, 4),
                      "predict_total": round(predict_total, 4),
                      "predict_mean": round(predict_total / len(points), 4)},
        "points": entries,
    }
    save_json(results, out / "results.json")
    return results


def print_summary(results: dict, out: Path) -> None:
    t = results["timings_s"]
    img = results["image"]
    print(f"image    {img['path']} ({img['width']}x{img['height']})")
    print(f"model    {results['model']} [{results['model_config']}] on {results['device']}")
    print(f"timings  load {t['load_model']:.2f} s, set_image {t['set_image']:.3f} s, "
          f"predict {t['predict_total']:.3f} s total ({t['predict_mean'] * 1000:.1f} ms/point)")
    print(f"{'k':>3} {'point (x, y)':>16} {'best':>4} {'score':>7}  {'candidates':<24} {'area':>8}  bbox")
    for e in results["points"]:
        x, y = e["point_xy"]
        cands = " ".join(f"{s:.3f}" for s in e["candidate_scores"])
        print(f"{e['index']:>3} {f'({x:.0f}, {y:.0f})':>16} {e['best_candidate']:>4} "
              f"{e['score']:>7.3f}  {cands:<24} {e['area']:>8}  {e['bbox_xyxy']}")
    print(f"wrote    {len(results['points'])} masks, composite.png, results.json to {out}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        results = run(args)
    except (DemoError, CheckpointNotFoundError, CheckpointError, ValueError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print_summary(results, args.output.expanduser())
    return 0


if __name__ == "__main__":
    sys.exit(main())
