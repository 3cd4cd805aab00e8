"""Label Studio's formats: brush RLE, percent coordinates, label configs, prompts and results.

Conventions (Label Studio 1.2x, label_studio_sdk 2.x):

- Coordinates in results and prompts are percent of ``original_width`` / ``original_height``
  (x to the right, y down, 0-100). ``percent * size / 100`` gives pixels of the picture as the
  browser shows it, which is the picture with its EXIF orientation applied (``read_image`` does
  the same), so no rotation is needed beyond that.
- Brush masks are ``{"format": "rle", "rle": [int, ...]}``: the rle-pack bit stream of the
  row-major HxWx4 uint8 RGBA picture of the mask (0 or 255 repeated in all four channels), with
  word size 8 and run-length sizes (3, 4, 8, 16), the bytes of
  ``label_studio_sdk.converter.brush.mask2rle(mask * 255)``, trailing zero padding included.
- Video rectangles: ``{"sequence": [{"frame": n, "x", "y", "width", "height", ...}]}`` with
  frames numbered from 1 and boxes in percent of the video's frame size.

Nothing here imports a web framework or the model: the server's routes and the exporters call it.
"""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np

WORD_SIZE = 8
RLE_SIZES = (3, 4, 8, 16)


# ---- brush RLE ----------------------------------------------------------------------------------

def mask_to_brush_rle(mask: np.ndarray) -> list[int]:
    """[H, W] mask (nonzero = object) -> Label Studio brush RLE bytes (list of ints 0-255), equal to
    ``label_studio_sdk.converter.brush.mask2rle((mask != 0).astype(np.uint8) * 255)``."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be [H, W], got shape {mask.shape}")
    flat = np.repeat(np.where(mask.ravel() != 0, 255, 0).astype(np.int64), 4)  # RGBA
    n = flat.size
    header = (f"{n:032b}{WORD_SIZE - 1:05b}" + "".join(f"{s - 1:04b}" for s in RLE_SIZES))
    if n == 0:
        return _pack(np.array([int(c) for c in header], np.uint8))
    change = np.flatnonzero(flat[1:] != flat[:-1])
    ends = np.append(change, n - 1)
    lengths = np.diff(np.append(-1, ends))
    values = flat[ends]
    # a run over 256 is written with a 16-bit length; one over 2**16 as pieces of 2**16 and the rest,
    # every piece with a 16-bit length (the SDK's encoder writes them so)
    pieces = (lengths - 1) // 2**16 + 1
    long = np.repeat(lengths > 256, pieces)
    values = np.repeat(values, pieces)
    last = np.cumsum(pieces) - 1
    split = np.full(int(pieces.sum()), 2**16, np.int64)
    split[last] = lengths - (pieces - 1) * 2**16
    lengths = split
    records, widths = _records(lengths, values, long)
    bits = (records[:, None] >> np.arange(26, -1, -1)[None, :]) & 1  # [R, 27], most significant first
    keep = np.arange(27)[None, :] >= (27 - widths)[:, None]
    body = bits[keep].astype(np.uint8)
    head = np.array([int(c) for c in header], np.uint8)
    total = head.size + body.size
    pad = np.zeros(8 - total % 8, np.uint8)  # (the SDK pads a whole zero byte when already aligned)
    return _pack(np.concatenate([head, body, pad]))


def _records(lengths: np.ndarray, values: np.ndarray, long: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each run as one integer record (flag, size index, length - 1, 8-bit value) and its width in
    bits; single values are written as the SDK writes them (flag 0, index 0, three zero bits), and
    the pieces of a run over 256 (``long``) always with the 16-bit length."""
    single = (lengths == 1) & ~long
    index = np.where(long, 3, np.select([lengths <= 8, lengths <= 16, lengths <= 256], [0, 1, 2], 3))
    index = np.where(single, 0, index)
    size = np.where(single, 3, np.array(RLE_SIZES)[index])
    flag = np.where(single, 0, 1)
    count = np.where(single, 0, lengths - 1)
    records = (((flag << 2 | index) << size | count) << WORD_SIZE) | values
    return records.astype(np.int64), 3 + size + WORD_SIZE


def _pack(bits: np.ndarray) -> list[int]:
    return np.packbits(bits).tolist()


def brush_rle_to_mask(rle, height: int, width: int) -> np.ndarray:
    """Label Studio brush RLE (list of ints) -> [height, width] bool (the alpha channel > 0)."""
    bits = np.unpackbits(np.asarray(rle, dtype=np.uint8))
    pos = 0

    def read(k: int) -> int:
        nonlocal pos
        if pos + k > bits.size:
            raise ValueError("the brush RLE ends early: it is damaged or not Label Studio's format")
        value = int("".join(map(str, bits[pos:pos + k])), 2) if k else 0
        pos += k
        return value

    num = read(32)
    word = read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    if num != height * width * 4:
        raise ValueError(f"the brush RLE holds {num} values, not {height}x{width}x4: it belongs to a "
                         f"picture of another size")
    out = np.zeros(num, np.uint8)
    i = 0
    while i < num:
        repeat = read(1)
        j = i + 1 + read(sizes[read(2)])
        if repeat:
            out[i:j] = read(word)
            i = j
        else:
            while i < j:
                out[i] = read(word)
                i += 1
    return out.reshape(height, width, 4)[:, :, 3] > 0


# ---- coordinates --------------------------------------------------------------------------------

def percent_to_pixels(value: float, size: int) -> float:
    """A percent coordinate (0-100) of a side of ``size`` pixels -> pixels (float, not rounded)."""
    return float(value) * size / 100.0


def pixels_to_percent(value: float, size: int) -> float:
    return float(value) * 100.0 / size


def box_percent(mask: np.ndarray) -> dict | None:
    """The [H, W] mask's bounding box in percent (x, y, width, height) over whole pixels (the box
    holds the last row and column), None when the mask is empty."""
    cols = np.flatnonzero(mask.any(axis=0))
    if not len(cols):
        return None
    rows = np.flatnonzero(mask.any(axis=1))
    h, w = mask.shape
    return {"x": pixels_to_percent(cols[0], w), "y": pixels_to_percent(rows[0], h),
            "width": pixels_to_percent(cols[-1] - cols[0] + 1, w),
            "height": pixels_to_percent(rows[-1] - rows[0] + 1, h)}


# ---- label configs ------------------------------------------------------------------------------

OUTPUTS = {"brushlabels": "brushlabels", "polygonlabels": "polygonlabels"}
PROMPTS = ("keypointlabels", "rectanglelabels")


class LabelConfigError(ValueError):
    """A label config sam2kit cannot answer; the message says what is missing and what to add."""


@dataclass(frozen=True)
class Output:
    """A control tag sam2kit writes: ``kind`` is brushlabels, polygonlabels or videorectangle."""
    from_name: str
    to_name: str
    kind: str
    labels: tuple[str, ...] = ()

    def label_for(self, chosen: str | None) -> list[str]:
        """The label to write: the one the user chose when this tag has it, else this tag's first."""
        if chosen is not None and (chosen in self.labels or not self.labels):
            return [chosen]
        return [self.labels[0]] if self.labels else []


@dataclass(frozen=True)
class LabelConfig:
    """What a label config asks of sam2kit: the object tags (name -> data key), the outputs
    (masks as brushes or polygons; video rectangles) and the prompt tags."""
    objects: dict          # to_name -> ("image" | "video", data key without "$")
    outputs: tuple[Output, ...]
    prompts: tuple[str, ...]  # from_names of KeyPointLabels / RectangleLabels tags

    def outputs_for(self, to_name: str) -> list[Output]:
        return [o for o in self.outputs if o.to_name == to_name]


def parse_label_config(xml: str) -> LabelConfig:
    """Read a Label Studio label config; LabelConfigError when sam2kit has nothing to answer."""
    if not xml or not xml.strip():
        raise LabelConfigError("the project has no label config; set one with an <Image> and "
                               "<BrushLabels> (or <Video> and <VideoRectangle>)")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise LabelConfigError(f"the label config is not valid XML ({e})") from None
    objects, tags = {}, []
    for el in root.iter():
        tag = el.tag.lower()
        if tag in ("image", "video") and el.get("name"):
            objects[el.get("name")] = (tag, (el.get("value") or "").lstrip("$"))
        elif el.get("name") and el.get("toName"):
            labels = tuple(lab.get("value") for lab in el if lab.tag.lower() == "label" and lab.get("value"))
            tags.append((tag, el.get("name"), el.get("toName"), labels))
    outputs, prompts = [], []
    for tag, name, to_name, labels in tags:
        kind = objects.get(to_name, (None,))[0]
        if (tag in OUTPUTS and kind == "image") or (tag == "videorectangle" and kind == "video"):
            outputs.append(Output(name, to_name, tag, labels))
        elif tag in PROMPTS and kind == "image":
            prompts.append(name)
    if not outputs:
        raise LabelConfigError(
            "unsupported label config: sam2kit answers <BrushLabels> or <PolygonLabels> on an <Image>, "
            "or <VideoRectangle> on a <Video>, and this config has none; add one (with "
            "<KeyPointLabels smart=\"true\"> or <RectangleLabels smart=\"true\"> for the clicks)")
    return LabelConfig(objects, tuple(outputs), tuple(prompts))


# ---- prompts from the labeling context ------------------------------------------------------------

@dataclass
class Prompt:
    """An interactive prompt in pixels: points [N, 2] (x, y) with labels [N] (1 foreground,
    0 background), an optional box [x0, y0, x1, y1], the label chosen, the object tag it is on
    and the picture's size as Label Studio reported it."""
    to_name: str
    width: int
    height: int
    points: np.ndarray
    labels: np.ndarray
    box: np.ndarray | None
    label: str | None


def prompt_from_context(regions: list[dict], config: LabelConfig, size: tuple[int, int] | None = None) -> Prompt:
    """``params.context.result`` of an interactive request (keypointlabels and rectanglelabels
    regions in percent) -> one Prompt in pixels. Several keypoints make one prompt; of several
    rectangles the last is the box (SAM 2 takes one box per mask). ``is_positive`` false (Alt+click)
    is a background point. ``size`` (width, height): the picture as sam2kit read it, used for the
    conversion instead of the regions' ``original_width/height`` (percent is of the picture, so this
    stays right if Label Studio measured it differently). Raises ValueError for regions sam2kit
    cannot use."""
    points, labels, box, label, to_name, given = [], [], None, None, None, size
    size = None
    for r in regions:
        kind = r.get("type")
        if kind not in PROMPTS:
            continue
        value = r.get("value") or {}
        try:
            w, h = int(r["original_width"]), int(r["original_height"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"a {kind} region has no original_width/original_height") from None
        if w <= 0 or h <= 0 or (size is not None and size != (w, h)):
            raise ValueError(f"the prompt regions disagree on the picture's size ({size} and {(w, h)})")
        size, to_name = (w, h), r.get("to_name", to_name)
        if given is not None:
            w, h = given
        chosen = value.get(kind) or []
        label = chosen[0] if chosen else label
        x, y = percent_to_pixels(value["x"], w), percent_to_pixels(value["y"], h)
        if kind == "keypointlabels":
            points.append((x, y))
            labels.append(1 if r.get("is_positive", True) else 0)
        else:
            box = np.array([x, y, x + percent_to_pixels(value["width"], w),
                            y + percent_to_pixels(value["height"], h)], np.float32)
    if size is None:
        raise ValueError("the context has no keypoint or rectangle region to prompt with")
    if to_name is None or to_name not in config.objects:
        to_name = next(iter(k for k, v in config.objects.items() if v[0] == "image"), None)
    w, h = given or size
    return Prompt(to_name, w, h, np.array(points, np.float32).reshape(-1, 2),
                  np.array(labels, np.int32), box, label)


def parse_preannotate(text: str) -> tuple[str, tuple[float, ...]]:
    """The pre-annotation setting -> ("auto" | "off", ()) or ("point", (x, y)) / ("box", (x0, y0,
    x1, y1)) in percent of the picture; ValueError naming the forms it takes."""
    text = (text or "").strip().lower()
    if text in ("auto", "off"):
        return text, ()
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    ok = len(values) in (2, 4) and all(0 <= v <= 100 for v in values)
    if ok and len(values) == 4:
        ok = values[2] > values[0] and values[3] > values[1]
    if not ok:
        raise ValueError(f"pre-annotation {text!r} is not auto, off, 'X,Y' (a point) or 'X0,Y0,X1,Y1' (a box) "
                         "in percent of the picture (0-100)")
    return ("point" if len(values) == 2 else "box"), values


def preset_prompt(kind: str, values: tuple[float, ...], to_name: str, width: int, height: int) -> Prompt:
    """A configured point or box (percent) as a Prompt in pixels of a width x height picture."""
    if kind == "point":
        pts = np.array([[percent_to_pixels(values[0], width), percent_to_pixels(values[1], height)]], np.float32)
        return Prompt(to_name, width, height, pts, np.ones(1, np.int32), None, None)
    box = np.array([percent_to_pixels(values[0], width), percent_to_pixels(values[1], height),
                    percent_to_pixels(values[2], width), percent_to_pixels(values[3], height)], np.float32)
    return Prompt(to_name, width, height, np.zeros((0, 2), np.float32), np.zeros(0, np.int32), box, None)


# ---- results ------------------------------------------------------------------------------------

def _region_id() -> str:
    return secrets.token_hex(5)


def brush_result(mask: np.ndarray, out: Output, label: str | None, score: float | None = None) -> dict:
    """One brushlabels region of an [H, W] mask."""
    h, w = mask.shape
    region = {"id": _region_id(), "from_name": out.from_name, "to_name": out.to_name, "type": "brushlabels",
              "original_width": w, "original_height": h, "image_rotation": 0, "readonly": False,
              "value": {"format": "rle", "rle": mask_to_brush_rle(mask), "brushlabels": out.label_for(label)}}
    if score is not None:
        region["score"] = float(score)
    return region


def polygon_results(mask: np.ndarray, out: Output, label: str | None, score: float | None = None,
                    tolerance: float | None = None) -> list[dict]:
    """polygonlabels regions of an [H, W] mask: one per 4-connected part, holes joined into the
    outer ring by zero-width cuts (Label Studio polygons have no holes), points in percent.
    ``tolerance``: Douglas-Peucker distance in pixels (default: ``polygons.DEFAULT_TOLERANCE``)."""
    from sam2kit.formats.polygons import DEFAULT_TOLERANCE, mask_to_polygons

    h, w = mask.shape
    regions = []
    for poly in mask_to_polygons(mask, DEFAULT_TOLERANCE if tolerance is None else tolerance):
        ring = poly.keyhole()
        points = [[pixels_to_percent(x, w), pixels_to_percent(y, h)] for x, y in ring]
        region = {"id": _region_id(), "from_name": out.from_name, "to_name": out.to_name,
                  "type": "polygonlabels", "original_width": w, "original_height": h, "image_rotation": 0,
                  "readonly": False,
                  "value": {"points": points, "closed": True, "polygonlabels": out.label_for(label)}}
        if score is not None:
            region["score"] = float(score)
        regions.append(region)
    return regions


def mask_results(mask: np.ndarray, outputs: list[Output], label: str | None, score: float | None = None,
                 tolerance: float | None = None) -> list[dict]:
    """The regions of one mask for every image output tag (a brush, and/or polygons)."""
    out = []
    for o in outputs:
        if o.kind == "brushlabels":
            out.append(brush_result(mask, o, label, score))
        elif o.kind == "polygonlabels":
            out.extend(polygon_results(mask, o, label, score, tolerance))
    return out


def prediction(results: list[dict], score: float | None, model_version: str) -> dict:
    """One entry of ``/predict``'s ``results`` (a Label Studio prediction)."""
    return {"result": results, "score": float(score) if score is not None else 0.0,
            "model_version": model_version}


def videorectangle_sequence(boxes: dict[int, dict | None], fps: float | None) -> list[dict]:
    """{0-based frame index: box in percent or None} -> a videorectangle ``sequence`` (frames from
    1; frames where the mask is empty end the box: ``enabled`` false on the last one seen)."""
    seq = []
    for idx in sorted(boxes):
        b = boxes[idx]
        if b is None:
            if seq and seq[-1]["enabled"]:
                seq[-1]["enabled"] = False
            continue
        item = {"frame": idx + 1, **b, "enabled": True, "rotation": 0}
        if fps:
            item["time"] = idx / fps
        seq.append(item)
    return seq


def video_prompt(regions: list[dict], config: LabelConfig) -> tuple[Output, dict, dict]:
    """The videorectangle region to track (the last one in the context) -> (output tag, region,
    its last keyframe). ValueError when the context has none."""
    videos = [r for r in regions if r.get("type") == "videorectangle" and (r.get("value") or {}).get("sequence")]
    if not videos:
        raise ValueError("the context has no videorectangle with a keyframe; draw a rectangle on a frame")
    region = videos[-1]
    out = next((o for o in config.outputs if o.kind == "videorectangle" and o.from_name == region.get("from_name")),
               None) or next(o for o in config.outputs if o.kind == "videorectangle")
    key = max(region["value"]["sequence"], key=lambda s: int(s["frame"]))
    return out, region, key


# ---- pre-annotation export ----------------------------------------------------------------------

def config_for_masks(from_name: str = "mask", to_name: str = "image", labels=("object",)) -> str:
    """A label config that shows pre-annotated masks (BrushLabels on an Image)."""
    items = "".join(f'<Label value="{_xml_attr(lab)}"/>' for lab in labels)
    return (f'<View><Image name="{to_name}" value="$image"/>'
            f'<BrushLabels name="{from_name}" toName="{to_name}">{items}</BrushLabels></View>')


def _xml_attr(text: str) -> str:
    """``text`` escaped for an XML attribute value."""
    from xml.sax.saxutils import quoteattr

    return quoteattr(str(text))[1:-1]


def pre_annotation_task(image: str, masks: list[np.ndarray], scores: list[float] | None = None,
                        labels: list[str] | None = None, model_version: str = "sam2kit",
                        from_name: str = "mask", to_name: str = "image", kind: str = "brushlabels",
                        tolerance: float | None = None) -> dict:
    """An import-ready Label Studio task: ``{"data": {"image": image}, "predictions": [...]}`` with
    one region per [H, W] mask (brushlabels, or polygonlabels with ``kind="polygonlabels"``).
    ``image``: the URL or path Label Studio will load; ``labels``: one per mask (default "object")."""
    if kind not in OUTPUTS:
        raise ValueError(f"kind must be brushlabels or polygonlabels, got {kind!r}")
    scores = list(scores) if scores is not None else [None] * len(masks)
    labels = list(labels) if labels is not None else ["object"] * len(masks)
    if not len(scores) == len(labels) == len(masks):
        raise ValueError(f"{len(masks)} masks, {len(scores)} scores and {len(labels)} labels: give one each")
    results = []
    for mask, score, label in zip(masks, scores, labels):
        out = Output(from_name, to_name, kind, (label,))
        results.extend(mask_results(np.asarray(mask) != 0, [out], label, score, tolerance))
    known = [s for s in scores if s is not None]
    mean = float(np.mean(known)) if known else None
    return {"data": {to_name: image}, "predictions": [prediction(results, mean, model_version)]}


__all__ = [
    "LabelConfig",
    "LabelConfigError",
    "Output",
    "Prompt",
    "box_percent",
    "brush_result",
    "brush_rle_to_mask",
    "config_for_masks",
    "mask_results",
    "mask_to_brush_rle",
    "parse_label_config",
    "parse_preannotate",
    "percent_to_pixels",
    "pixels_to_percent",
    "polygon_results",
    "pre_annotation_task",
    "prediction",
    "preset_prompt",
    "prompt_from_context",
    "video_prompt",
    "videorectangle_sequence",
]
