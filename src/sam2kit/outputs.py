"""Pictures, files and the overlay video that the command line and the server write: mask
statistics, colours, the DAVIS palette, overlays with their prompts drawn, the grid composite,
and an H.264 mp4 writer."""

from __future__ import annotations

import colorsys
import json
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont


OVERLAY_ALPHA = 0.45
# tab10, then evenly spread hues
_TAB10 = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
          (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
BBOX_FORMAT = "[x_min, y_min, x_max, y_max]: inclusive pixel indices; null for an empty mask"


def davis_palette() -> list[int]:
    """The 256-colour palette of DAVIS / PASCAL VOC annotations (index 0 black), flattened;
    byte for byte the DAVIS_PALETTE of Meta's tools/vos_inference.py."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def colour(k: int) -> tuple[int, int, int]:
    """The overlay colour of prompt or object number ``k`` (0-based)."""
    if k < len(_TAB10):
        return _TAB10[k]
    hue = (k * 0.618033988749895) % 1.0
    return tuple(int(round(255 * v)) for v in colorsys.hsv_to_rgb(hue, 0.75, 0.95))


def mask_stats(mask: np.ndarray) -> dict:
    """Area (pixels), area as a fraction of the picture, bounding box (BBOX_FORMAT)."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    bbox = None if ys.size == 0 else [int(xs[0]), int(ys[0]), int(xs[-1]), int(ys[-1])]
    return {"area": int(mask.sum()), "area_fraction": round(float(mask.mean()), 6), "bbox_xyxy": bbox}


def mask_png(mask: np.ndarray) -> Image.Image:
    """A binary HxW mask as an 8-bit picture: 0 background, 255 object."""
    return Image.fromarray(mask.astype(np.uint8) * 255)


def palette_png(masks: np.ndarray, logits: np.ndarray | None = None) -> Image.Image:
    """One indexed ("P") picture holding all objects: pixel value k+1 for object k, 0 for the
    background; where objects overlap the one with the highest logit wins."""
    labels = np.zeros(masks.shape[1:], np.uint8)
    if len(masks):
        score = np.where(masks, logits if logits is not None else 1.0, -np.inf)
        best = score.argmax(axis=0)
        labels = np.where(masks.any(axis=0), best + 1, 0).astype(np.uint8)
    img = Image.frombytes("P", (labels.shape[1], labels.shape[0]), labels.tobytes())
    img.putpalette(davis_palette())
    return img


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it."""
    p = np.pad(mask, 1, constant_values=False)
    inner = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return mask & ~inner


def tint(image: np.ndarray, masks: list[np.ndarray], colours: list[tuple[int, int, int]]) -> Image.Image:
    """``image`` with each mask tinted in its colour and outlined; larger masks first, so that
    small ones stay visible."""
    out = image.astype(np.float32)
    for k in sorted(range(len(masks)), key=lambda k: -int(masks[k].sum())):
        m, c = masks[k], np.asarray(colours[k], dtype=np.float32)
        out[m] = out[m] * (1.0 - OVERLAY_ALPHA) + c * OVERLAY_ALPHA
        out[_boundary(m)] = c
    return Image.fromarray(out.round().clip(0, 255).astype(np.uint8))


def marker_radius(width: int, height: int) -> int:
    return max(4, round(min(width, height) / 70))


def draw_prompt(img: Image.Image, points, labels, box, rgb, label: str | None = None) -> None:
    """Draw points (foreground: a filled dot; background: a dark dot with a cross) and a box."""
    draw = ImageDraw.Draw(img)
    r = marker_radius(*img.size)
    if box is not None:
        x0, y0, x1, y1 = box
        draw.rectangle([x0 - 1, y0 - 1, x1 + 1, y1 + 1], outline=(0, 0, 0), width=4)
        draw.rectangle([x0, y0, x1, y1], outline=rgb, width=2)
    for (x, y), lab in zip(points, labels):
        draw.ellipse([x - r - 2, y - r - 2, x + r + 2, y + r + 2], fill=(0, 0, 0))
        if lab == 1:
            draw.ellipse([x - r, y - r, x + r, y + r], fill=rgb, outline=(255, 255, 255), width=2)
        else:
            draw.ellipse([x - r, y - r, x + r, y + r], fill=(40, 40, 40), outline=rgb, width=2)
            d = r * 0.6
            draw.line([x - d, y - d, x + d, y + d], fill=(255, 255, 255), width=2)
            draw.line([x - d, y + d, x + d, y - d], fill=(255, 255, 255), width=2)
    if label is not None:
        if points:
            x, y = points[0]
        else:
            x, y = box[0], box[1]
        draw.text((x + r + 4, y - r - 2), label, fill=(255, 255, 255), stroke_width=2,
                  stroke_fill=(0, 0, 0), font=_font(max(10, 2 * r)))


def grid_composite(panels: list[Image.Image], rows: int, cols: int, captions: list[str],
                   max_side: int = 2400, gap: int = 4) -> Image.Image:
    """Panels laid out in ``rows`` x ``cols``, each scaled down so that the whole picture is at
    most ``max_side`` pixels wide and high, each captioned in its top-left corner."""
    w, h = panels[0].size
    scale = min(1.0, (max_side - gap * (cols - 1)) / (cols * w), (max_side - gap * (rows - 1)) / (rows * h))
    pw, ph = max(1, round(w * scale)), max(1, round(h * scale))
    out = Image.new("RGB", (cols * pw + gap * (cols - 1), rows * ph + gap * (rows - 1)), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    font = _font(max(10, min(pw, ph) // 16))
    for k, (panel, caption) in enumerate(zip(panels, captions)):
        x, y = (k % cols) * (pw + gap), (k // cols) * (ph + gap)
        out.paste(panel if scale == 1.0 else panel.resize((pw, ph), Image.Resampling.LANCZOS), (x, y))
        draw.text((x + 6, y + 4), caption, fill=(255, 255, 255), stroke_width=2, stroke_fill=(0, 0, 0),
                  font=font)
    return out


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # a scalable font (Pillow >= 10.1 with FreeType)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def to_json(obj, indent: str = "") -> str:
    """JSON with one key a line, except that anything whose JSON fits in 100 characters stays
    on one line (points, boxes, per-object entries)."""
    flat = json.dumps(obj)
    if len(flat) <= 100 or not isinstance(obj, (dict, list)) or not obj:
        return flat
    inner = indent + "  "
    if isinstance(obj, dict):
        items = [f"{inner}{json.dumps(str(k))}: {to_json(v, inner)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    return "[\n" + ",\n".join(inner + to_json(v, inner) for v in obj) + f"\n{indent}]"


def save_json(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(to_json(obj) + "\n", encoding="utf-8")
    tmp.replace(path)  # readers of a folder being written never see half a file


class Mp4Writer:
    """Frames (HxWx3 uint8 RGB) to an H.264 mp4 that browsers play: yuv420p, ``+faststart``
    (the index first), at ``fps``. H.264 needs even sizes: an odd width or height is padded by
    repeating the last column or row. Without an H.264 encoder in PyAV, MPEG-4 part 2 is
    written instead (with a note), which desktop players but not all browsers play.

    ``fragmented``: written as it goes (an empty index first, then a fragment at each keyframe,
    one a second, encoded without delay), so that a file whose writer stopped is playable up
    to its last fragment: for live streams, whose end is not known."""

    def __init__(self, path: Path, fps: float, width: int, height: int, note=None, fragmented: bool = False):
        import av

        self.path = path
        self.codec = _h264_encoder(av)
        if self.codec is None:
            self.codec = "mpeg4"
            (note or (lambda m: print(m, file=sys.stderr)))(
                "note: this PyAV has no H.264 encoder; overlay.mp4 is MPEG-4 part 2 (install a "
                "PyAV build with libx264 for browser playback)")
        self.rate = Fraction(fps).limit_denominator(1001)
        self.size = (width, height)
        flags = "+frag_keyframe+empty_moov+default_base_moof" if fragmented else "+faststart"
        self.container = av.open(str(path), mode="w", format="mp4", options={"movflags": flags})
        try:
            self.stream = self.container.add_stream(self.codec, rate=self.rate)
            self.stream.width, self.stream.height = width + width % 2, height + height % 2
            self.stream.pix_fmt = "yuv420p"
            if fragmented:
                self.stream.codec_context.gop_size = max(1, round(fps))
            if self.codec != "mpeg4":
                self.stream.options = {"crf": "20", "preset": "fast",
                                       **({"tune": "zerolatency"} if fragmented else {})}
        except BaseException:
            self.container.close()
            raise
        self._av = av
        self.frames = 0

    def add(self, rgb: np.ndarray) -> None:
        w, h = self.size
        if w % 2 or h % 2:
            rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self.container is None:
            return
        try:
            for packet in self.stream.encode():
                self.container.mux(packet)
        finally:
            self.container.close()
            self.container = None


def _h264_encoder(av) -> str | None:
    for name in ("libx264", "h264"):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # PyAV raises UnknownCodecError (a ValueError) or FFmpeg errors
            continue
    return None
