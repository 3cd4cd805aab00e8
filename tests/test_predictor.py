"""SAM2ImagePredictor behaviour on a small random model: shapes, dtypes, misuse."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import synthetic_image
from small_model import SMALL
from sam2kit import SAM2ImagePredictor
from sam2kit.build import build_model
from sam2kit.image.postprocess import connected_components, fill_holes_and_remove_sprinkles


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    return SAM2ImagePredictor(build_model(SMALL))


IMG = synthetic_image(120, 200, 5)


def test_predict_before_set_image(predictor):
    predictor.reset_predictor()
    with pytest.raises(RuntimeError, match=r"set_image\(\.\.\.\) before mask prediction"):
        predictor.predict(np.array([[10, 10]]), np.array([1]))
    with pytest.raises(RuntimeError, match="to generate an embedding"):
        predictor.get_image_embedding()
    with pytest.raises(RuntimeError, match="set_image_batch"):
        predictor.predict_batch([np.array([[1, 1]])], [np.array([1])])


def test_shapes_and_dtypes(predictor):
    predictor.set_image(IMG)
    assert predictor.get_image_embedding().shape == (1, 32, 16, 16)
    masks, scores, low = predictor.predict(np.array([[50, 60]]), np.array([1]))
    assert masks.shape == (3, 120, 200) and masks.dtype == np.float32
    assert set(np.unique(masks)) <= {0.0, 1.0}
    assert scores.shape == (3,) and scores.dtype == np.float32
    assert low.shape == (3, 64, 64) and low.dtype == np.float32 and np.abs(low).max() <= 32
    masks, scores, low = predictor.predict(np.array([[50, 60]]), np.array([1]), multimask_output=False,
                                           return_logits=True)
    assert masks.shape == (1, 120, 200) and scores.shape == (1,) and low.shape == (1, 64, 64)
    assert len(np.unique(masks)) > 2  # logits, not 0/1
    # batched prompts: B boxes
    masks, scores, low = predictor.predict(box=np.array([[0, 0, 100, 100], [50, 20, 190, 110]]))
    assert masks.shape == (2, 3, 120, 200) and scores.shape == (2, 3) and low.shape == (2, 3, 64, 64)
    # no prompt at all is allowed (as in the reference)
    masks, _, _ = predictor.predict()
    assert masks.shape == (3, 120, 200)


def test_pil_image_equals_array(predictor):
    predictor.set_image(IMG)
    a = predictor.predict(np.array([[50, 60]]), np.array([1]))
    predictor.set_image(Image.fromarray(IMG))
    b = predictor.predict(np.array([[50, 60]]), np.array([1]))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_normalized_coords(predictor):
    predictor.set_image(IMG)
    a = predictor.predict(np.array([[50.0, 60.0]]), np.array([1]))
    b = predictor.predict(np.array([[50 / 200, 60 / 120]]), np.array([1]), normalize_coords=False)
    np.testing.assert_allclose(a[2], b[2], atol=1e-5)


def test_batched_prompts_equal_one_at_a_time(predictor):
    predictor.set_image(IMG)
    pts = np.array([[[20.0, 30.0]], [[100.0, 60.0]], [[180.0, 100.0]]])
    batched = predictor.predict(pts, np.ones((3, 1), int))
    for i in range(3):
        single = predictor.predict(pts[i], np.array([1]))
        np.testing.assert_allclose(batched[2][i], single[2], atol=1e-5)
        np.testing.assert_allclose(batched[1][i], single[1], atol=1e-6)


@pytest.mark.parametrize("kwargs,match", [
    (dict(point_coords=np.array([[1, 2]])), "point_labels must be supplied"),
    (dict(point_labels=np.array([1])), "without point_coords"),
    (dict(point_coords=np.array([1, 2, 3]), point_labels=np.array([1])), "Nx2"),
    (dict(point_coords=np.array([[1, 2], [3, 4]]), point_labels=np.array([1])), "one label per point"),
    (dict(point_coords=np.array([[1, 2]]), point_labels=np.array([2])), r"1 \(foreground\) or 0"),
    (dict(point_coords=np.array([[np.nan, 2]]), point_labels=np.array([1])), "NaN"),
    (dict(box=np.array([1, 2, 3])), "XYXY"),
    (dict(mask_input=np.zeros((1, 32, 32))), "mask_input must have shape 1x64x64"),
    (dict(box=np.zeros((2, 4)), point_coords=np.zeros((3, 1, 2)), point_labels=np.ones((3, 1))), "one box per prompt"),
])
def test_bad_prompts(predictor, kwargs, match):
    predictor.set_image(IMG)
    with pytest.raises(ValueError, match=match):
        predictor.predict(**kwargs)


@pytest.mark.parametrize("image,match", [
    (np.zeros((10, 10), np.uint8), "grayscale"),
    (np.zeros((10, 10, 4), np.uint8), "alpha"),
    (np.zeros((10, 10, 3), np.float32), "uint8"),
    (np.zeros((0, 10, 3), np.uint8), "empty"),
    ("picture.png", "numpy array or a PIL image"),
])
def test_bad_images(predictor, image, match):
    with pytest.raises(ValueError, match=match):
        predictor.set_image(image)


def test_image_batch(predictor):
    imgs = [synthetic_image(100, 80, 1), synthetic_image(60, 90, 2)]
    predictor.set_image_batch(imgs)
    masks, scores, low = predictor.predict_batch([np.array([[10, 10]]), np.array([[20, 30]])],
                                                 [np.array([1]), np.array([1])])
    assert [m.shape for m in masks] == [(3, 100, 80), (3, 60, 90)]
    with pytest.raises(RuntimeError, match="use predict_batch"):
        predictor.predict(np.array([[1, 1]]), np.array([1]))
    with pytest.raises(ValueError, match="2 images"):
        predictor.predict_batch([np.array([[10, 10]])], [np.array([1])])
    # each image in a batch gives what it gives alone
    predictor.set_image(imgs[1])
    alone = predictor.predict(np.array([[20, 30]]), np.array([1]))
    np.testing.assert_allclose(alone[2], low[1], atol=1e-4)


def _flood_fill_areas(mask: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    areas = np.zeros((h, w), np.int64)
    seen = np.zeros((h, w), bool)
    for y in range(h):
        for x in range(w):
            if mask[y, x] and not seen[y, x]:
                stack, comp = [(y, x)], []
                seen[y, x] = True
                while stack:
                    cy, cx = stack.pop()
                    comp.append((cy, cx))
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            ny, nx = cy + dy, cx + dx
                            if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                                seen[ny, nx] = True
                                stack.append((ny, nx))
                for cy, cx in comp:
                    areas[cy, cx] = len(comp)
    return areas


def test_connected_components_match_flood_fill():
    rng = np.random.default_rng(0)
    masks = rng.random((3, 1, 40, 50)) < np.array([0.3, 0.5, 0.6])[:, None, None, None]
    labels, areas = connected_components(torch.from_numpy(masks))
    for i in range(3):
        np.testing.assert_array_equal(areas[i, 0].numpy(), _flood_fill_areas(masks[i, 0]))
        lab = labels[i, 0].numpy()
        assert ((lab > 0) == masks[i, 0]).all()
    # a spiral-free but long snake component is one component
    snake = np.zeros((1, 1, 21, 21), bool)
    snake[0, 0, ::2, :] = True
    snake[0, 0, 1::4, -1] = True
    snake[0, 0, 3::4, 0] = True
    _, areas = connected_components(torch.from_numpy(snake))
    assert areas.max().item() == snake.sum()


def test_fill_holes_and_sprinkles():
    logits = -torch.ones(1, 1, 20, 20)
    logits[0, 0, 2:12, 2:12] = 1.0
    logits[0, 0, 5, 5] = -1.0  # a one-pixel hole
    logits[0, 0, 17, 17] = 1.0  # a one-pixel island
    out = fill_holes_and_remove_sprinkles(logits, 0.0, max_hole_area=2, max_sprinkle_area=2)
    assert out[0, 0, 5, 5] > 0 and out[0, 0, 17, 17] < 0
    assert out[0, 0, 0, 0] < 0  # the big background is no hole
    assert (out[0, 0, 2:12, 2:12] > 0).all()
