"""The request and answer shapes of CVAT's SAM serverless functions, over sam2kit's predictors.

Interactor (CVAT `cvat/apps/lambda_manager/views.py`, kind "interactor"; the function in
`serverless/pytorch/facebookresearch/sam2/nuclio/`): the request is
`{"image": base64 picture, "pos_points": [[x, y], ...], "neg_points": [[x, y], ...],
"obj_bbox": [[x1, y1], [x2, y2]] or null}` in pixels of the picture; the answer is
`{"mask": HxW list of 0/1}`: the best of the `multimask_output=True` candidates (the highest
score), as CVAT's SAM 2.0 function picks it.

Tracker (kind "tracker"): `{"image": base64 frame, "shapes": [...], "states": [...]}`, one call a
frame; for shape i, `states[i]` null starts tracking it on this frame, otherwise it is the state
the previous call answered. The answer is `{"shapes": [...], "states": [...]}`, one each per
shape. A shape is what CVAT's trackers take: a rectangle as 4 numbers `[x1, y1, x2, y2]`
(CVAT's nuclio trackers), or `{"type": "mask"|"polygon"|"rectangle", "points": [...]}`
(cvat-sdk's `TrackableShape`; mask points in CVAT's mask encoding, `formats.cvat`). Answers
keep the form and type of the shape given; an object lost on a frame answers null.
A state is small JSON: `{"tracker": id, "frames": n}`, a key into the server's bounded table of
trackers (each a `StreamSession`, flat memory) and the frame count that detects a replayed state.
"""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np
from PIL import Image, ImageDraw

from sam2kit.formats.cvat import decode_mask, encode_mask, mask_polygon
from sam2kit.image.io import ImageReadError, read_image

SHAPE_TYPES = ("rectangle", "polygon", "mask")


def decode_image(data: str, max_pixels: int | None) -> np.ndarray:
    """CVAT's base64 picture -> HxWx3 uint8 RGB (EXIF orientation applied). ValueError if it is
    not base64 or not a picture."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("image: not base64; send the picture's bytes base64-encoded, as CVAT does") from None
    try:
        return read_image(io.BytesIO(raw), max_pixels, name="image")
    except ImageReadError as e:
        raise ValueError(str(e)) from None


def _points(value, what: str, w: int, h: int) -> np.ndarray:
    try:
        pts = np.asarray(value if value else np.zeros((0, 2)), dtype=np.float64).reshape(-1, 2)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: a list of [x, y] pixel pairs") from None
    if not np.isfinite(pts).all():
        raise ValueError(f"{what}: coordinates must be finite numbers")
    bad = (pts[:, 0] < 0) | (pts[:, 0] > w) | (pts[:, 1] < 0) | (pts[:, 1] > h)
    if bad.any():
        x, y = pts[np.flatnonzero(bad)[0]]
        raise ValueError(f"{what}: point ({x:g}, {y:g}) lies outside the {w}x{h} picture; "
                         "points are pixels of the picture")
    return pts


def interactor_prompt(pos_points, neg_points, obj_bbox, w: int, h: int):
    """(points [N, 2] or None, labels [N] or None, box [4] or None) of an interactor request."""
    pos = _points(pos_points, "pos_points", w, h)
    neg = _points(neg_points, "neg_points", w, h)
    box = None
    if obj_bbox:
        b = _points(obj_bbox, "obj_bbox", w, h)
        if b.shape != (2, 2):
            raise ValueError("obj_bbox: two corners [[x1, y1], [x2, y2]] in pixels")
        box = np.concatenate([b.min(0), b.max(0)]).astype(np.float32)
    if len(pos) == 0 and box is None:
        raise ValueError("pos_points: at least one positive point (or an obj_bbox) is needed")
    if len(pos) + len(neg) == 0:
        return None, None, box
    points = np.concatenate([pos, neg]).astype(np.float32)
    labels = np.array([1] * len(pos) + [0] * len(neg), dtype=np.int32)
    return points, labels, box


def interact(predictor, points, labels, box) -> np.ndarray:
    """[H, W] bool: the best of the three candidates, chosen as CVAT's SAM 2.0 function does
    (`np.argsort(scores)[::-1][0]`). `predictor`: a SAM2ImagePredictor with the picture set."""
    masks, scores, _ = predictor.predict(points, labels, box, multimask_output=True)
    return masks[np.argsort(scores)[::-1][0]] > 0.5


# ---- tracker ---------------------------------------------------------------------------------


def parse_shape(shape, w: int, h: int) -> tuple[tuple[str, bool], dict]:
    """((type, given as an object?), prompt) of a tracker shape; the prompt is `{"box": XYXY}`
    or `{"mask": [H, W] bool}`."""
    if isinstance(shape, dict):
        kind, pts, as_object = shape.get("type"), shape.get("points"), True
        if kind not in SHAPE_TYPES or not isinstance(pts, list):
            raise ValueError(f"shapes: a shape is [x1, y1, x2, y2] or {{\"type\": one of {list(SHAPE_TYPES)}, "
                             f"\"points\": [...]}}; got type {kind!r}")
    elif isinstance(shape, list):
        kind, pts, as_object = "rectangle", shape, False
    else:
        raise ValueError("shapes: a shape is [x1, y1, x2, y2] or an object with type and points")
    if kind == "mask":
        mask = decode_mask(pts, w, h)
        return (kind, as_object), {"mask": mask}
    xy = _points(pts, f"shapes ({kind})", w, h)
    if kind == "rectangle":
        if len(xy) != 2 or (xy[1] <= xy[0]).any():
            raise ValueError("shapes: a rectangle is [x1, y1, x2, y2] with x1 < x2 and y1 < y2, in pixels")
        return (kind, as_object), {"box": xy.reshape(-1).astype(np.float32)}
    if len(xy) < 3:
        raise ValueError("shapes: a polygon needs at least 3 points [x1, y1, x2, y2, x3, y3, ...]")
    img = Image.new("1", (w, h), 0)
    ImageDraw.Draw(img).polygon([tuple(p) for p in xy], fill=1)
    mask = np.asarray(img, dtype=bool)
    if not mask.any():
        raise ValueError("shapes: the polygon covers no pixel")
    return (kind, as_object), {"mask": mask}


def answer_shape(spec: tuple[str, bool], mask: np.ndarray):
    """A tracked [H, W] mask in the form of the shape that started the track; None when empty."""
    kind, as_object = spec
    if not mask.any():
        return None
    if kind == "mask":
        pts = encode_mask(mask)
    elif kind == "polygon":
        pts = [round(float(v), 2) for v in mask_polygon(mask).ravel()]
    else:
        ys, xs = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        pts = [int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1]
    return {"type": kind, "points": pts} if as_object else pts


class ShapeTracker:
    """One CVAT shape tracked frame by frame: a `StreamSession` of `predictor` with one object,
    started on `image` from the shape's box or mask."""

    def __init__(self, predictor, image: np.ndarray, shape):
        h, w = image.shape[:2]
        self.spec, prompt = parse_shape(shape, w, h)
        self.size = (h, w)
        self.session = predictor.init_stream()
        self.session.add_frame(image)
        if "mask" in prompt:
            self.session.add_new_mask(0, 1, prompt["mask"])
        else:
            self.session.add_new_points_or_box(0, 1, box=prompt["box"])
        self.frames = 1

    def step(self, image: np.ndarray):
        """Track onto the next frame: the shape there (None when the object is not seen)."""
        if image.shape[:2] != self.size:
            raise ValueError(f"image: this frame is {image.shape[1]}x{image.shape[0]}, the track's frames are "
                             f"{self.size[1]}x{self.size[0]}; start a new track for another video")
        _, masks = self.session.push(image)
        self.frames += 1
        return answer_shape(self.spec, (masks[0, 0] > 0).cpu().numpy())

    def close(self) -> None:
        self.session.close()
