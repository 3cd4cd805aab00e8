"""Masks -> polygons (sam2kit.formats.polygons), checked by rasterising back with pycocotools
(COCO's reader) and OpenCV's fillPoly (what ultralytics' polygon2mask uses)."""

from __future__ import annotations

import numpy as np
import pytest

from sam2kit.formats.polygons import Polygon, flat, join_rings, mask_to_polygons, polygons_to_mask, ring_area

H, W = 64, 80


def _disk(cx, cy, r):
    yy, xx = np.mgrid[:H, :W]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def _shapes():
    rng = np.random.default_rng(0)
    blob = np.zeros((H, W), bool)
    blob[8:50, 10:70] = rng.random((42, 60)) < 0.85  # ragged, with many small holes and islands
    ring = _disk(40, 32, 20) & ~_disk(40, 32, 9)
    return {"rect": np.pad(np.ones((20, 30), bool), ((10, H - 30), (20, W - 50))),
            "disk": _disk(30, 30, 15), "ring": ring, "blob": blob,
            "pixel": np.eye(1, H * W, 5 * W + 7, dtype=bool).reshape(H, W),
            "line": np.pad(np.ones((1, 30), bool), ((20, H - 21), (10, W - 40))),
            "edge": np.pad(np.ones((H, 5), bool), ((0, 0), (W - 5, 0)))}  # touches the border


@pytest.mark.parametrize("name", list(_shapes()))
def test_untouched_rings_rasterise_back_exactly(name):
    mask = _shapes()[name]
    polys = mask_to_polygons(mask, tolerance=0)
    back = np.zeros_like(mask)
    for p in polys:  # holes cut out of each part's outer ring
        back |= polygons_to_mask([p.outer], H, W) & ~polygons_to_mask(list(p.holes), H, W)
    assert (back == mask).all()
    # marching squares cuts each corner pixel by a 1/8-pixel triangle (in or out), nothing more
    n_vertices = sum(len(p.outer) + sum(len(h) for h in p.holes) for p in polys)
    assert abs(sum(p.area() for p in polys) - mask.sum()) <= n_vertices / 8
    if name == "rect":
        assert sum(p.area() for p in polys) == 600 - 4 / 8


def test_holes_are_rings_of_their_part():
    polys = mask_to_polygons(_shapes()["ring"], tolerance=1.0)
    assert len(polys) == 1 and len(polys[0].holes) == 1
    assert ring_area(polys[0].outer) < 0 < ring_area(polys[0].holes[0])  # clockwise / counter-clockwise (y down)
    # the hole is the inner disk of radius 9: its area within a pixel ring of the true one
    assert abs(ring_area(polys[0].holes[0]) - _disk(40, 32, 9).sum()) < 2 * np.pi * 9


def test_keyhole_rasterises_holes_in_pycocotools_and_opencv():
    import cv2

    mask = _shapes()["ring"]
    (p,) = mask_to_polygons(mask, tolerance=0)
    keyhole = p.keyhole()
    assert len(keyhole) == len(p.outer) + len(p.holes[0]) + 2
    coco = polygons_to_mask([keyhole], H, W)
    assert (coco == mask).all()
    # OpenCV fills pixel centres: shift edge coordinates back by half a pixel, as a YOLO reader does
    filled = np.zeros((H, W), np.uint8)
    cv2.fillPoly(filled, [np.round(keyhole - 0.5).astype(np.int32)], 1)
    assert (filled[mask] == 1).mean() > 0.97 and filled[_disk(40, 32, 7)].sum() == 0


def test_join_rings_keeps_separate_parts_separate():
    a = np.array([[0, 0], [4, 0], [4, 4], [0, 4]], float)
    b = a + [10, 0]
    joined = join_rings([a, b])
    back = polygons_to_mask([joined], 8, 16)
    want = np.zeros((8, 16), bool)
    want[:4, :4] = want[:4, 10:14] = True
    assert (back == want).all()


@pytest.mark.parametrize("tolerance, min_iou", [(0.5, 0.97), (1.0, 0.95), (2.0, 0.9)])
def test_tolerance_bounds_the_error(tolerance, min_iou):
    mask = _shapes()["disk"]
    (p,) = mask_to_polygons(mask, tolerance=tolerance)
    (exact,) = mask_to_polygons(mask, tolerance=0)
    assert len(p.outer) < len(exact.outer)  # it simplifies
    back = polygons_to_mask([p.outer], H, W)
    iou = (back & mask).sum() / (back | mask).sum()
    assert iou >= min_iou
    # every simplified vertex lies on the traced ring's vertices (Douglas-Peucker keeps vertices)
    assert all(np.isclose(exact.outer, v).all(1).any() for v in p.outer)


def test_tiny_and_empty():
    assert mask_to_polygons(np.zeros((H, W), bool)) == []
    (p,) = mask_to_polygons(_shapes()["pixel"], tolerance=5.0)
    assert len(p.outer) >= 3 and len(flat(p.outer)) != 4  # never a 4-number list (COCO would read a box)
    assert polygons_to_mask([p.outer], H, W).sum() == 1
    two = np.zeros((4, 4), bool)
    two[0, 0] = two[1, 1] = True  # touching only diagonally: two parts (4-connectivity)
    assert len(mask_to_polygons(two)) == 2


def test_bad_input():
    with pytest.raises(ValueError, match="tolerance"):
        mask_to_polygons(np.zeros((4, 4)), tolerance=-1)
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        mask_to_polygons(np.zeros((2, 4, 4)))
    assert isinstance(mask_to_polygons(np.ones((3, 3)))[0], Polygon)
