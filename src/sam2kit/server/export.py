"""A video session's results as files, the same ones ``sam2kit video`` writes: DAVIS palette
PNGs, per-object 0/255 PNGs, or the overlay mp4 of every frame with a result."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import torch

from sam2kit.outputs import Mp4Writer, colour, draw_prompt, mask_png, palette_png, tint

DEFAULT_FPS = 25.0


def write_export(predictor, state, fmt: str, target: Path, fps: float | None) -> None:
    """Write ``fmt`` ("davis": ``00000.png`` ... palette PNGs; "masks": ``<obj>/00000.png`` ...;
    "mp4": the overlays in frame order) of ``state``'s tracked frames to ``target``."""
    frames = state.tracked_frames
    with torch.inference_mode():
        if fmt == "mp4":
            writer = Mp4Writer(target, fps or DEFAULT_FPS, state.video_width, state.video_height)
            try:
                for f in frames:
                    obj_ids, masks = _binary(predictor, state, f)
                    writer.add(overlay(state, f, masks))
            finally:
                writer.close()
            return
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as z:  # PNGs are compressed
            for f in frames:
                obj_ids, masks, logits = _binary(predictor, state, f, with_logits=True)
                if fmt == "davis":
                    z.writestr(f"{f:05d}.png", _png(palette_png(masks, logits)))
                else:
                    for obj, m in zip(obj_ids, masks):
                        z.writestr(f"{obj}/{f:05d}.png", _png(mask_png(m)))


def _binary(predictor, state, frame_idx: int, with_logits: bool = False):
    obj_ids, logits = predictor.frame_masks(state, frame_idx)
    lg = logits[:, 0].float().cpu().numpy()
    return (obj_ids, lg > 0, lg) if with_logits else (obj_ids, lg > 0)


def overlay(state, frame_idx: int, masks: np.ndarray) -> np.ndarray:
    """The frame with every object's mask tinted in its colour and its clicks and box drawn, as
    ``sam2kit video`` draws its overlays."""
    colours = [colour(k) for k in range(len(state.objects))]
    img = tint(state.frames.get(frame_idx), list(masks), colours)
    scale = np.array([state.video_width, state.video_height], np.float32) / state.image_size
    for obj, rgb in zip(state.objects, colours):
        prompt = obj.point_inputs.get(frame_idx)
        if prompt is None:
            continue
        coords, labels = (t[0].cpu().numpy() for t in prompt)  # model-input pixels
        coords = coords * scale
        corners = coords[np.isin(labels, (2, 3))]
        box = tuple(corners.reshape(-1)) if len(corners) == 2 else None
        clicks = np.isin(labels, (0, 1))
        draw_prompt(img, [tuple(c) for c in coords[clicks]], labels[clicks].tolist(), box, rgb)
    return np.asarray(img)


def _png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
