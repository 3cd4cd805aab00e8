"""Automatic mask generation without the reference: the helpers (grids, crop boxes, stability,
boxes, NMS, RLE and COCO strings) on hand-made cases, and the generator on a small random
model (records, output modes, batching, bad arguments)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from small_model import SMALL
from sam2kit import SAM2AutomaticMaskGenerator
from sam2kit.image import amg
from sam2kit.build import build_model

# ---- grids and crops ----------------------------------------------------------------------


def test_point_grid_is_cell_centres_row_by_row():
    np.testing.assert_allclose(amg.build_point_grid(2), [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])
    assert [len(g) for g in amg.build_all_layer_point_grids(16, 2, 2)] == [256, 64, 16]
    assert [len(g) for g in amg.build_all_layer_point_grids(5, 1, 1)] == [25, 25]


def test_crop_boxes_by_hand():
    # 320x240, one layer, overlap int(512/1500 * 240) = 81: crops 201x161 at x 0/120, y 0/80
    boxes, layers = amg.generate_crop_boxes((240, 320), 1, 512 / 1500)
    assert boxes == [[0, 0, 320, 240], [0, 0, 201, 161], [0, 80, 201, 240], [120, 0, 320, 161],
                     [120, 80, 320, 240]]
    assert layers == [0, 1, 1, 1, 1]
    boxes, layers = amg.generate_crop_boxes((100, 100), 2, 0.0)
    assert len(boxes) == 1 + 4 + 16 and layers.count(2) == 16
    assert [0, 0, 25, 25] in boxes and [75, 75, 100, 100] in boxes


# ---- scores and boxes ---------------------------------------------------------------------


def test_stability_score_counts_pixels_above_both_cutoffs():
    logits = torch.tensor([[[2.0, 0.5, -0.5, -2.0]], [[-3.0, -3.0, -3.0, -3.0]]])
    s = amg.stability_score(logits, 0.0, 1.0)
    assert s[0].item() == pytest.approx(1 / 3)  # 1 pixel > 1, 3 pixels > -1
    assert torch.isnan(s[1])                    # 0 / 0: filtered out by any threshold
    assert amg.stability_score(logits[:1], 0.4, 0.1)[0].item() == pytest.approx(1 / 2)


def test_masks_to_boxes_inclusive_and_empty():
    m = torch.zeros(3, 5, 6, dtype=torch.bool)
    m[0, 1:3, 2:5] = True
    m[1, 4, 0] = True
    boxes = amg.masks_to_boxes(m)
    assert boxes.tolist() == [[2, 1, 4, 2], [0, 4, 0, 4], [0, 0, 0, 0]]
    assert amg.masks_to_boxes(torch.zeros(0, 4, 4, dtype=torch.bool)).shape == (0, 4)


def test_box_near_crop_edge_only_where_the_crop_edge_is_inside_the_image():
    crop, image = [0, 0, 100, 100], [0, 0, 200, 100]
    boxes = torch.tensor([[5, 5, 50, 50], [10, 10, 95, 50], [10, 10, 50, 99]])
    # the right crop edge (x=100) lies inside the image; the bottom edge is the image's
    assert amg.is_box_near_crop_edge(boxes, crop, image).tolist() == [False, True, False]
    assert amg.is_box_near_crop_edge(torch.tensor([[10, 10, 30, 30]]), [100, 0, 200, 100], image).tolist() == [True]


# ---- NMS ----------------------------------------------------------------------------------


def test_nms_keeps_by_score_with_ties_in_index_order():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10]]).float()
    scores = torch.tensor([0.9, 0.8, 0.7, 0.9])
    assert amg.box_nms(boxes, scores, 0.5).tolist() == [0, 2]      # 3 ties 0 and comes later
    assert amg.box_nms(boxes, scores, 0.85).tolist() == [0, 1, 2]  # IoU(0, 1) = 81/100
    assert amg.box_nms(boxes, scores, 1.0).tolist() == [0, 3, 1, 2]


def test_nms_threshold_is_strict_and_zero_area_boxes_never_suppress():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 5]]).float()  # IoU exactly 0.5
    assert amg.box_nms(boxes, torch.tensor([1.0, 0.5]), 0.5).tolist() == [0, 1]
    assert amg.box_nms(boxes, torch.tensor([1.0, 0.5]), 0.49).tolist() == [0]
    flat = torch.tensor([[3, 3, 3, 3], [3, 3, 3, 3], [0, 0, 9, 9]]).float()  # one-pixel boxes: 0/0
    assert amg.box_nms(flat, torch.tensor([3.0, 2.0, 1.0]), 0.0).tolist() == [0, 1, 2]
    assert amg.box_nms(torch.zeros(0, 4), torch.zeros(0), 0.7).tolist() == []


def test_nms_matches_a_plain_greedy_loop():
    g = torch.Generator().manual_seed(0)
    xy = torch.randint(0, 60, (300, 2), generator=g).float()
    boxes = torch.cat([xy, xy + torch.randint(1, 40, (300, 2), generator=g)], 1)
    scores = torch.randint(0, 5, (300,), generator=g).float()
    for thr in (0.0, 0.3, 0.7):
        order = sorted(range(300), key=lambda i: (-scores[i].item(), i))
        keep, dead = [], set()
        for i in order:
            if i in dead:
                continue
            keep.append(i)
            for j in order:
                a, b = boxes[i].numpy(), boxes[j].numpy()  # float32 arithmetic, as torchvision
                iw = max(np.float32(0), min(a[2], b[2]) - max(a[0], b[0]))
                ih = max(np.float32(0), min(a[3], b[3]) - max(a[1], b[1]))
                union = ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])) - iw * ih
                if j != i and float(iw * ih / union) > thr:
                    dead.add(j)
        assert amg.box_nms(boxes, scores, thr).tolist() == keep, thr


# ---- RLE ----------------------------------------------------------------------------------


def test_rle_is_column_major_and_starts_with_zeros():
    assert amg.mask_to_rle([[0, 1], [1, 1]]) == {"size": [2, 2], "counts": [1, 3]}
    assert amg.mask_to_rle([[1, 0], [1, 0], [0, 1]]) == {"size": [3, 2], "counts": [0, 2, 3, 1]}
    assert amg.mask_to_rle(np.zeros((2, 3), bool))["counts"] == [6]
    assert amg.mask_to_rle(np.ones((2, 3), bool))["counts"] == [0, 6]
    assert amg.area_from_rle({"size": [3, 2], "counts": [0, 2, 3, 1]}) == 3


def test_rle_round_trips_batched_masks():
    rng = np.random.default_rng(0)
    masks = torch.from_numpy(rng.random((6, 17, 23)) > 0.6)
    masks[4] = True
    masks[5] = False
    for m, counts in zip(masks, amg.masks_to_rle_counts(masks)):
        rle = {"size": [17, 23], "counts": counts.tolist()}
        assert counts.sum() == 17 * 23
        np.testing.assert_array_equal(amg.rle_to_mask(rle), m.numpy())
        coco = amg.coco_encode_rle(rle)
        assert amg.coco_string_to_counts(coco["counts"]) == rle["counts"]
        np.testing.assert_array_equal(amg.rle_to_mask(coco), m.numpy())
    with pytest.raises(ValueError, match="add up to"):
        amg.rle_to_mask({"size": [2, 2], "counts": [1, 2]})


def test_coco_strings_by_hand():
    # 10 -> ':'; 20 and 30 need two characters (bit 16 set: 'd0', 'n0'); from the fourth count
    # on the difference to the count two before is stored: 40 - 20 = 20 -> 'd0', 3 - 10 = -7 -> 'I'
    assert amg.counts_to_coco_string([10, 20, 30, 40]) == ":d0n0d0"
    assert amg.counts_to_coco_string([5, 10, 20, 3]) == "5:d0I"
    assert amg.coco_string_to_counts("5:d0I") == [5, 10, 20, 3]
    assert amg.counts_to_coco_string([0, 4]) == "04"
    big = [1_000_000, 3, 7, 999_990, 0, 12]
    assert amg.coco_string_to_counts(amg.counts_to_coco_string(big)) == big


def test_coco_strings_equal_pycocotools():
    mask_utils = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(1)
    for h, w in [(17, 23), (240, 320), (1, 1)]:
        m = rng.random((h, w)) > rng.uniform(0.05, 0.95)
        rle = amg.mask_to_rle(m)
        theirs = mask_utils.frPyObjects(dict(rle), h, w)
        assert amg.coco_encode_rle(rle)["counts"] == theirs["counts"].decode()
        assert amg.mask_to_rle(m)["counts"] == rle["counts"]
        np.testing.assert_array_equal(mask_utils.decode(theirs).astype(bool), m)
    # long runs and differences of either sign (their sum within pycocotools' uint32 area)
    counts = rng.integers(0, 2**26, 40).tolist() + [0, 0, 5, 2**26]
    theirs = mask_utils.frPyObjects({"size": [1, sum(counts)], "counts": counts}, 1, sum(counts))
    assert amg.counts_to_coco_string(counts) == theirs["counts"].decode()
    assert amg.coco_string_to_counts(theirs["counts"]) == counts


def test_malformed_coco_strings_are_value_errors():
    # what the server turns into 422 (a truncated string once raised IndexError: a 500)
    for bad in ["1o", "\x7f0", "é", b"5:d"]:
        with pytest.raises(ValueError, match="not a COCO RLE string"):
            amg.coco_string_to_counts(bad)
    assert amg.coco_string_to_counts("") == []


# ---- the generator on a small random model ------------------------------------------------


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(SMALL).eval()


IMG = np.random.default_rng(2).integers(0, 256, (48, 64, 3), dtype=np.uint8)
OPEN = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)


def test_records_and_output_modes_agree(model):
    recs = {mode: SAM2AutomaticMaskGenerator(model, output_mode=mode, **OPEN).generate(IMG)
            for mode in ("binary_mask", "uncompressed_rle", "coco_rle")}
    n = len(recs["binary_mask"])
    assert n == 48  # 16 points x 3 candidates, no filter, no NMS (none empty with this image)
    for a, b, c in zip(*recs.values()):
        assert set(a) == {"segmentation", "area", "bbox", "predicted_iou", "point_coords",
                          "stability_score", "crop_box"}
        m = a["segmentation"]
        assert m.shape == (48, 64) and m.dtype == bool and a["area"] == int(m.sum())
        np.testing.assert_array_equal(amg.rle_to_mask(b["segmentation"]), m)
        np.testing.assert_array_equal(amg.rle_to_mask(c["segmentation"]), m)
        assert isinstance(c["segmentation"]["counts"], str) and c["segmentation"]["size"] == [48, 64]
        assert a["crop_box"] == [0.0, 0.0, 64.0, 48.0]
        if a["area"]:
            ys, xs = np.nonzero(m)
            assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]
        assert {k: v for k, v in a.items() if k != "segmentation"} == \
               {k: v for k, v in c.items() if k != "segmentation"}
    # the cell centres of a 4x4 grid, three candidates each; listed by predicted IoU (NMS order)
    points = sorted(r["point_coords"][0] for r in recs["binary_mask"])
    assert points == sorted([[x, y] for x in (8.0, 24.0, 40.0, 56.0) for y in (6.0, 18.0, 30.0, 42.0)] * 3)
    scores = [r["predicted_iou"] for r in recs["binary_mask"]]
    assert scores == sorted(scores, reverse=True)


def test_batch_size_and_filters(model):
    base = SAM2AutomaticMaskGenerator(model, points_per_batch=64, **OPEN).generate(IMG)
    small = SAM2AutomaticMaskGenerator(model, points_per_batch=5, **OPEN).generate(IMG)
    assert len(small) == len(base)
    for a, b in zip(base, small):
        np.testing.assert_array_equal(a["segmentation"], b["segmentation"])
        assert abs(a["predicted_iou"] - b["predicted_iou"]) < 1e-5
    ious = sorted(r["predicted_iou"] for r in base)
    thr = ious[len(ious) // 2]
    kept = SAM2AutomaticMaskGenerator(model, **{**OPEN, "pred_iou_thresh": thr}).generate(IMG)
    assert len(kept) == sum(v > thr for v in ious) and all(r["predicted_iou"] > thr for r in kept)
    nms = SAM2AutomaticMaskGenerator(model, **{**OPEN, "box_nms_thresh": 0.7}).generate(IMG)
    assert 0 < len(nms) < len(base)
    scores = [r["predicted_iou"] for r in nms]
    assert scores == sorted(scores, reverse=True)


def test_crops_and_explicit_grids(model):
    recs = SAM2AutomaticMaskGenerator(model, crop_n_layers=1, **{**OPEN, "points_per_side": 2}).generate(IMG)
    crops = {tuple(r["crop_box"]) for r in recs}
    assert (0.0, 0.0, 64.0, 48.0) in crops and all(len(c) == 4 for c in crops)
    grid = [np.array([[0.5, 0.5]])]
    one = SAM2AutomaticMaskGenerator(model, points_per_side=None, point_grids=grid,
                                     **{k: v for k, v in OPEN.items() if k != "points_per_side"}).generate(IMG)
    assert len(one) == 3 and all(r["point_coords"] == [[32.0, 24.0]] for r in one)
    single = SAM2AutomaticMaskGenerator(model, multimask_output=False, **OPEN).generate(IMG)
    assert len(single) == 16


@pytest.mark.parametrize("kwargs,match", [
    (dict(points_per_side=None), "exactly one of"),
    (dict(point_grids=[np.zeros((4, 2))]), "exactly one of"),
    (dict(output_mode="png"), "unknown output_mode"),
    (dict(points_per_batch=0), "points_per_batch"),
    (dict(points_per_side=0), "points_per_side"),
    (dict(points_per_side=None, point_grids=[np.zeros((4, 2))], crop_n_layers=1), "one .K, 2. array"),
    (dict(points_per_side=2, crop_n_layers=2, crop_n_points_downscale_factor=2), "leaves no points"),
])
def test_bad_arguments(model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        SAM2AutomaticMaskGenerator(model, **kwargs)


def test_unknown_argument_and_bad_image(model):
    with pytest.raises(TypeError, match="points_per_sid"):
        SAM2AutomaticMaskGenerator(model, points_per_sid=8)
    gen = SAM2AutomaticMaskGenerator(model, **OPEN)
    with pytest.raises(ValueError, match="HxWx3"):
        gen.generate(IMG[..., 0])
    with pytest.raises(ValueError, match="uint8"):
        gen.generate(IMG.astype(np.float32))
