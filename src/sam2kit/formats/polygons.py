"""Masks -> polygons, with a stated simplification tolerance and holes kept.

How a mask becomes polygons:
1. The mask is split into 4-connected components (`skimage.measure.label`, connectivity 1).
2. Each component's boundary is traced by marching squares at level 0.5
   (`skimage.measure.find_contours` on the zero-padded component), which passes half-way between
   a foreground pixel centre and its background neighbour; shifted by +0.5 these are pixel-edge
   coordinates (COCO's). Rasterised by pycocotools, the unsimplified rings give back the mask
   exactly, single pixels and one-pixel lines included.
   (OpenCV's `findContours` traces pixel *centres*: its rings lose about half a pixel all round,
   6-8 % of a 30-pixel disk, and single pixels or lines vanish when rasterised; so it is not used.)
3. Each ring is simplified by Douglas-Peucker (`skimage.measure.approximate_polygon`) with
   `tolerance` = the largest distance in pixels between the simplified ring and the traced one;
   0 keeps every traced vertex. A ring that would fall below 3 vertices keeps its traced form
   (a COCO flat list of 4 numbers would read as a box).
4. The component's outer ring is its outer boundary; every other ring of it is a hole.

Holes: COCO polygon lists are a union (pycocotools merges them), so a list of rings cannot carry
a hole. `Polygon.keyhole()` joins the holes into the outer ring by zero-width cuts (each hole is
entered and left along the same segment at its nearest vertex pair); rasterisers that fill by
crossings (pycocotools' `frPyObjects`, OpenCV's `fillPoly`) then leave the holes empty. The
format writers choose per format: COCO writes masks with holes as RLE (exact) unless asked for
keyholes; YOLO (one polygon a line) always writes one keyhole ring joining all parts, as
ultralytics' own `merge_multi_segment` joins COCO parts.

Shapes: rings are [N, 2] float64 (x, y), first vertex not repeated at the end; outer rings run
clockwise on screen (y down), holes counter-clockwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_TOLERANCE = 1.0
"""Default Douglas-Peucker tolerance in pixels (see the module docstring)."""


def _skimage_measure():
    try:
        from skimage import measure
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("polygon export needs scikit-image: pip install 'sam2kit[formats]'") from e
    return measure


@dataclass(frozen=True)
class Polygon:
    """One 4-connected part of a mask: `outer` [N, 2] and `holes` (each [M, 2]), (x, y) pixel-edge
    coordinates as floats (see the module docstring)."""

    outer: np.ndarray
    holes: tuple[np.ndarray, ...] = ()

    def area(self) -> float:
        """Area in pixels: the outer ring's minus the holes' (shoelace formula)."""
        return abs(ring_area(self.outer)) - sum(abs(ring_area(h)) for h in self.holes)

    def keyhole(self) -> np.ndarray:
        """[K, 2] one ring: the outer ring with every hole joined in by a zero-width cut."""
        return join_rings([self.outer, *self.holes])


def ring_area(ring: np.ndarray) -> float:
    """Signed shoelace area of a closed [N, 2] (x, y) ring (negative = clockwise on screen, y down)."""
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def join_rings(rings: list[np.ndarray]) -> np.ndarray:
    """[K, 2] one ring visiting every ring of `rings`: each next ring is spliced in at the pair of
    vertices nearest to the ring built so far, entered and left along that same segment."""
    out = np.asarray(rings[0], dtype=np.float64)
    for ring in rings[1:]:
        ring = np.asarray(ring, dtype=np.float64)
        d = ((out[:, None, :] - ring[None, :, :]) ** 2).sum(-1)  # [len(out), len(ring)]
        i, j = np.unravel_index(int(np.argmin(d)), d.shape)
        loop = np.concatenate([ring[j:], ring[: j + 1]])  # starts and ends at ring[j]
        out = np.concatenate([out[: i + 1], loop, out[i:]])
    return out


def flat(ring: np.ndarray, ndigits: int = 2) -> list[float]:
    """[N, 2] ring -> [x1, y1, x2, y2, ...] rounded floats (COCO's `segmentation` list)."""
    return [round(float(v), ndigits) for v in np.asarray(ring).ravel()]


def _trace(component: np.ndarray, tolerance: float, measure) -> list[np.ndarray]:
    """Rings of one component's crop, in crop pixel-edge coordinates, largest |area| first."""
    padded = np.pad(component.astype(np.float64), 1)
    rings = []
    for c in measure.find_contours(padded, 0.5):
        ring = c[:-1, ::-1] - 0.5  # (row, col) closed -> (x, y) open; -1 for the pad, +0.5 to edges
        if tolerance > 0:
            simple = measure.approximate_polygon(c, tolerance)[:-1, ::-1] - 0.5
            if len(simple) >= 3:
                ring = simple
        rings.append(ring)
    rings.sort(key=lambda r: -abs(ring_area(r)))
    return rings


def mask_to_polygons(mask: np.ndarray, tolerance: float = DEFAULT_TOLERANCE) -> list[Polygon]:
    """[H, W] mask (nonzero = object) -> one `Polygon` per 4-connected part, larger parts first;
    [] for an empty mask. `tolerance`: Douglas-Peucker distance in pixels (0 = no simplification)."""
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance}")
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be [H, W], got shape {mask.shape}")
    measure = _skimage_measure()
    labels = measure.label(mask != 0, connectivity=1)
    polys = []
    for region in measure.regionprops(labels):
        r0, c0, r1, c1 = region.bbox
        rings = _trace(region.image, tolerance, measure)
        shift = np.array([c0, r0], dtype=np.float64)
        outer, holes = rings[0] + shift, tuple(h + shift for h in rings[1:])
        if ring_area(outer) > 0:  # outer clockwise on screen, holes counter-clockwise
            outer = outer[::-1]
        holes = tuple(h[::-1] if ring_area(h) < 0 else h for h in holes)
        polys.append(Polygon(outer, holes))
    polys.sort(key=lambda p: -p.area())
    return polys


def polygons_to_mask(rings: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """Rasterise rings as pycocotools does for one COCO annotation (union of the rings) -> [H, W]
    bool. For checks and for consumers that want a mask back."""
    from pycocotools import mask as mask_utils

    if not rings:
        return np.zeros((height, width), dtype=bool)
    rles = mask_utils.frPyObjects([flat(r, 6) for r in rings], height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)
