"""Prompts as text (the command line's and batch manifests' mini-language): parsing into typed
specs, and turning them into pixels checked against the picture.

Coordinates are pixels from the top-left corner (x to the right, y down; 0..width, 0..height),
or, written with a ``%``, percentages of the width (x) and height (y): ``50%,50%`` is the centre.
The two may be mixed. A point's label is 1 (foreground, the default) or 0 (background).

    image:  --point X,Y[:LABEL]          --box X0,Y0,X1,Y1           --grid ROWSxCOLS
    video:  --point FRAME:X,Y[:LABEL][@OBJ]   --box FRAME:X0,Y0,X1,Y1[@OBJ]   (OBJ: 1 by default)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sam2kit.errors import InputError


class PromptError(InputError, ValueError):
    """A prompt written wrongly; the message shows the form expected and an example."""

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
_C = rf"\s*({_NUM})\s*(%?)\s*"  # one coordinate: a number, perhaps a percentage
_POINT = rf"{_C},{_C}"
_BOX = rf"{_C},{_C},{_C},{_C}"
_LABEL = r"(?::\s*([01])\s*)?"
_FRAME = r"\s*(\d+)\s*:"
_OBJ = r"(?:@\s*(\d+)\s*)?"

COORDINATES_HELP = ("coordinates are pixels from the top-left corner (x right, y down), or with a % "
                    "percentages of the width and height (50%,50% is the centre)")


@dataclass(frozen=True)
class Coord:
    value: float
    percent: bool

    def pixels(self, extent: int) -> float:
        return self.value * extent / 100.0 if self.percent else self.value

    def __str__(self):
        return f"{self.value:g}{'%' if self.percent else ''}"


@dataclass(frozen=True)
class PointSpec:
    text: str
    x: Coord
    y: Coord
    label: int = 1
    frame: int = 0
    obj: int = 1


@dataclass(frozen=True)
class BoxSpec:
    text: str
    coords: tuple[Coord, Coord, Coord, Coord]
    frame: int = 0
    obj: int = 1


@dataclass
class Prompt:
    """One prompt, in pixels: points (N x (x, y)), their labels and/or a box (x0, y0, x1, y1)."""

    points: list[tuple[float, float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    box: tuple[float, float, float, float] | None = None
    frame: int = 0
    obj: int = 1
    grid_cell: tuple[int, int] | None = None
    source: str = ""

    def as_json(self) -> dict:
        d = {"points": [[round(x, 2), round(y, 2)] for x, y in self.points], "labels": self.labels,
             "box": None if self.box is None else [round(v, 2) for v in self.box]}
        if self.grid_cell is not None:
            d["grid_row"], d["grid_col"] = self.grid_cell
        return d


def _coords(groups) -> list[Coord]:
    return [Coord(float(groups[i]), groups[i + 1] == "%") for i in range(0, len(groups), 2)]


def _bad(kind: str, form: str, example: str, text: str) -> PromptError:
    return PromptError(
        f"expected {kind} as {form} (e.g. {example}; pixels, or percentages with %), got {text!r}")


def image_point(text: str) -> PointSpec:
    m = re.fullmatch(_POINT + _LABEL, text)
    if not m:
        raise _bad("a point", "X,Y[:LABEL] with LABEL 1 (foreground) or 0 (background)",
                   "320,180 or 50%,40%:0", text)
    x, y = _coords(m.groups()[:4])
    return PointSpec(text, x, y, int(m.group(5) or 1))


def image_box(text: str) -> BoxSpec:
    m = re.fullmatch(_BOX, text)
    if not m:
        raise _bad("a box", "X0,Y0,X1,Y1 (two corners)", "40,30,400,300 or 10%,10%,90%,90%", text)
    return BoxSpec(text, tuple(_coords(m.groups())))


def video_point(text: str) -> PointSpec:
    m = re.fullmatch(_FRAME + _POINT + _LABEL + _OBJ, text)
    if not m:
        raise _bad("a point", "FRAME:X,Y[:LABEL][@OBJ] with LABEL 1 (foreground) or 0 "
                   "(background) and OBJ a positive object number", "0:320,180 or 12:50%,40%:0@2", text)
    g = m.groups()
    x, y = _coords(g[1:5])
    return PointSpec(text, x, y, int(g[5] or 1), int(g[0]), _obj(g[6], text))


def video_box(text: str) -> BoxSpec:
    m = re.fullmatch(_FRAME + _BOX + _OBJ, text)
    if not m:
        raise _bad("a box", "FRAME:X0,Y0,X1,Y1[@OBJ]", "0:40,30,400,300@2", text)
    g = m.groups()
    return BoxSpec(text, tuple(_coords(g[1:9])), int(g[0]), _obj(g[9], text))


def _obj(group: str | None, text: str) -> int:
    obj = int(group or 1)
    if not 1 <= obj <= 255:
        raise PromptError(f"object numbers run from 1 to 255, got {obj} in {text!r}")
    return obj


def grid(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*(\d+)\s*", text)
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise PromptError(f"expected ROWSxCOLS with positive integers (e.g. 3x3), got {text!r}")
    rows, cols = int(m.group(1)), int(m.group(2))
    if rows * cols > 4096:
        raise PromptError(f"{rows}x{cols} is {rows * cols} prompts; use at most 4096")
    return rows, cols


# ---- into pixels, checked against the picture ---------------------------------------------

def _inside(option: str, text: str, xs: list[float], ys: list[float], w: int, h: int, what: str) -> None:
    for x, y in zip(xs, ys):
        if not (0 <= x <= w and 0 <= y <= h):
            raise InputError(f"{option} {text}: ({x:g}, {y:g}) is outside the {what} ({w}x{h} pixels: "
                           f"x from 0 to {w}, y from 0 to {h}); give coordinates inside it, in pixels "
                           "or as percentages such as 50%,50%")


def point_pixels(spec: PointSpec, w: int, h: int, what: str = "image") -> tuple[float, float]:
    x, y = spec.x.pixels(w), spec.y.pixels(h)
    _inside("--point", spec.text, [x], [y], w, h, what)
    return x, y


def box_pixels(spec: BoxSpec, w: int, h: int, what: str = "image") -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (c.pixels(w if i % 2 == 0 else h) for i, c in enumerate(spec.coords))
    _inside("--box", spec.text, [x0, x1], [y0, y1], w, h, what)
    if not (x0 < x1 and y0 < y1):
        raise InputError(f"--box {spec.text}: the box is empty; write X0,Y0,X1,Y1 with the top-left "
                       "corner first (X0 < X1 and Y0 < Y1)")
    return x0, y0, x1, y1


def grid_prompts(rows: int, cols: int, w: int, h: int) -> list[Prompt]:
    """One foreground point at the centre of each cell of a rows x cols grid, row by row."""
    return [Prompt([((c + 0.5) * w / cols, (r + 0.5) * h / rows)], [1], grid_cell=(r, c),
                   source=f"--grid {rows}x{cols}")
            for r in range(rows) for c in range(cols)]


def image_prompts(points: list[PointSpec], boxes: list[BoxSpec], grid_rc, w: int, h: int) -> list[Prompt]:
    """The image command's prompts: the grid's points each alone, or all points (with at most
    one box) as one prompt, or each box alone."""
    if grid_rc is not None and (points or boxes):
        raise InputError("--grid cannot be combined with --point or --box; give either a grid or "
                       "your own prompt")
    if not points and not boxes:
        return grid_prompts(*(grid_rc or (3, 3)), w, h)
    if points and len(boxes) > 1:
        raise InputError("--point goes with at most one --box (together they are one prompt); give "
                       "several boxes without points to segment one object per box")
    pts = [point_pixels(p, w, h) for p in points]
    labels = [p.label for p in points]
    bxs = [box_pixels(b, w, h) for b in boxes]
    if points:
        source = " ".join([f"--point {p.text}" for p in points] + [f"--box {b.text}" for b in boxes])
        return [Prompt(pts, labels, bxs[0] if bxs else None, source=source)]
    return [Prompt(box=b, source=f"--box {spec.text}") for b, spec in zip(bxs, boxes)]


def video_prompts(points: list[PointSpec], boxes: list[BoxSpec], num_frames: int, w: int, h: int,
                  default_frame: int) -> list[Prompt]:
    """One prompt per (frame, object), in the order first given. Without any: a 3x3 grid of
    foreground points spanning the central tenth of ``default_frame``, for object 1."""
    if not points and not boxes:
        pts = [(w * fx, h * fy) for fy in (0.45, 0.5, 0.55) for fx in (0.45, 0.5, 0.55)]
        return [Prompt(pts, [1] * 9, frame=default_frame, obj=1, source="default 3x3 centre grid")]
    out: dict[tuple[int, int], Prompt] = {}
    for spec in [*points, *boxes]:
        option = "--point" if isinstance(spec, PointSpec) else "--box"
        if spec.frame >= num_frames:
            raise InputError(f"{option} {spec.text}: frame {spec.frame} is past the end of the video, "
                           f"which has {num_frames} frames (0 to {num_frames - 1}); number frames from 0")
        p = out.setdefault((spec.frame, spec.obj), Prompt(frame=spec.frame, obj=spec.obj))
        p.source = f"{p.source} {option} {spec.text}".strip()
        if isinstance(spec, PointSpec):
            p.points.append(point_pixels(spec, w, h, "frame"))
            p.labels.append(spec.label)
        elif p.box is not None:
            raise InputError(f"--box {spec.text}: object {spec.obj} already has a box on frame "
                           f"{spec.frame}; give one box per object and frame")
        else:
            p.box = box_pixels(spec, w, h, "frame")
    return list(out.values())
