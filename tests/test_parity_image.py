"""Parity of the image model and predictor with the reference (sam2==1.1.0), same weights.

Required per case: low-res logits allclose(atol=1e-3, rtol=1e-3), scores within 1e-4, at
least 99.9% of full-resolution mask pixels equal. The largest differences are printed
(run with -s to see them). The exact pass runs the default kernels (SAM2KIT_TUNING=off); the
tuned pass runs the same cases with tuning on and, over its sets, every other candidate kernel.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import REFERENCE_YAML, synthetic_image
from reference_cache import In, Job, Out
from sam2kit import SAM2ImagePredictor, build_sam2
from tuned_kernels import N_SETS, assert_used, candidate_set, tuned

pytestmark = pytest.mark.parity

IMAGES = [
    synthetic_image(480, 640, 1),   # landscape
    synthetic_image(640, 360, 2),   # portrait
    synthetic_image(64, 1000, 3),   # a very wide strip
    synthetic_image(17, 23, 4),     # tiny
]


def _cases() -> list[dict]:
    cases = []
    for i, img in enumerate(IMAGES):
        h, w = img.shape[:2]
        p = lambda fx, fy: [fx * (w - 1), fy * (h - 1)]  # noqa: E731
        cases += [
            dict(name=f"{i}/one_point", image=i, point_coords=np.array([p(0.5, 0.5)]),
                 point_labels=np.array([1]), multimask_output=True),
            dict(name=f"{i}/one_point_single", image=i, point_coords=np.array([p(0.3, 0.6)]),
                 point_labels=np.array([1]), multimask_output=False),
            dict(name=f"{i}/pos_neg", image=i,
                 point_coords=np.array([p(0.4, 0.4), p(0.6, 0.5), p(0.1, 0.9), p(0.9, 0.1)]),
                 point_labels=np.array([1, 1, 0, 0]), multimask_output=False),
            dict(name=f"{i}/box", image=i, box=np.array(p(0.2, 0.25) + p(0.7, 0.8)),
                 multimask_output=False),
            dict(name=f"{i}/box_points", image=i, box=np.array(p(0.1, 0.1) + p(0.8, 0.9)),
                 point_coords=np.array([p(0.5, 0.5), p(0.15, 0.8)]), point_labels=np.array([1, 0]),
                 multimask_output=True),
            dict(name=f"{i}/mask_refine", image=i, mask_from=f"{i}/one_point",
                 point_coords=np.array([p(0.5, 0.5), p(0.7, 0.3)]), point_labels=np.array([1, 1]),
                 multimask_output=False),
            dict(name=f"{i}/multi_box", image=i,
                 box=np.array([p(0.0, 0.0) + p(0.5, 0.5), p(0.4, 0.3) + p(1.0, 1.0)]),
                 multimask_output=True),
        ]
    cases.append(dict(
        name="batch", images=[0, 1, 2],
        point_coords=[np.array([[100.0, 200.0]]), np.array([[50.0, 60.0], [200.0, 400.0]]), None],
        point_labels=[np.array([1]), np.array([1, 0]), None],
        box=[None, None, np.array([10.0, 5.0, 600.0, 50.0])],
        multimask_output=True))
    return cases


def _ours(pred: SAM2ImagePredictor, cases: list[dict]) -> dict:
    results, current = {}, None
    for case in cases:
        if "images" in case:
            pred.set_image_batch([IMAGES[i] for i in case["images"]])
            current = None
            results[case["name"]] = pred.predict_batch(case["point_coords"], case["point_labels"],
                                                       case["box"], None, case["multimask_output"])
            continue
        if current != case["image"]:
            pred.set_image(IMAGES[case["image"]])
            current = case["image"]
        mask_input = None
        if case.get("mask_from"):
            _, scores, low = results[case["mask_from"]]
            mask_input = low[np.argmax(scores)][None]
        results[case["name"]] = pred.predict(
            point_coords=case.get("point_coords"), point_labels=case.get("point_labels"),
            box=case.get("box"), mask_input=mask_input, multimask_output=case["multimask_output"])
    return results


def _compare(name, ours, ref) -> dict:
    masks, scores, low = ours
    r_masks, r_scores, r_low = ref
    assert masks.shape == r_masks.shape and masks.dtype == r_masks.dtype, name
    assert scores.shape == r_scores.shape and low.shape == r_low.shape, name
    np.testing.assert_allclose(low, r_low, atol=1e-3, rtol=1e-3, err_msg=name)
    assert np.abs(scores - r_scores).max() <= 1e-4, (name, scores, r_scores)
    equal = (masks == r_masks).mean()
    assert equal >= 0.999, (name, equal)
    return dict(logits=float(np.abs(low - r_low).max()), scores=float(np.abs(scores - r_scores).max()),
                mask_equal=float(equal))


@pytest.mark.parametrize("name,size", [
    ("sam2-hiera-tiny", 1024), ("sam2-hiera-tiny", 512),
    ("sam2.1-hiera-tiny", 1024), ("sam2.1-hiera-tiny", 512),
])
def test_image_predictor_matches_reference(name, size, reference, reference_checkpoint, tmp_path):
    _check_against_reference(name, size, reference, reference_checkpoint(name), tmp_path, "exact")


@pytest.mark.parametrize("kernels", range(N_SETS), ids=lambda k: f"set{k}")
def test_tuned_image_predictor_matches_reference(kernels, reference, reference_checkpoint, tmp_path, monkeypatch):
    """The exact test's cases and tolerances, sam2.1-hiera-tiny at 512, with SAM2KIT_TUNING=on
    and the kernel choices of candidate set ``kernels`` (tests/tuned_kernels.py: over the sets,
    every non-default candidate) instead of the defaults: the tuned kernels against the
    reference outputs of the exact test (the same job, so the same cache entry)."""
    name, choices = "sam2.1-hiera-tiny", candidate_set(kernels)
    with tuned(choices, tmp_path, monkeypatch):
        _check_against_reference(name, 512, reference, reference_checkpoint(name), tmp_path, f"tuned {choices}")
        assert_used(choices, ("linear", "prompts_per_pass"))


def _check_against_reference(name, size, reference, ckpt, tmp_path, label) -> None:
    cases = _cases()
    out = tmp_path / "out.pt"
    reference.run("ref_image.py", Job(dict(config=REFERENCE_YAML[name], checkpoint=In(ckpt), image_size=size,
                                           images=IMAGES, cases=cases)), Out(out))
    ref = torch.load(out, weights_only=False)

    pred = SAM2ImagePredictor(build_sam2(name, checkpoint=ckpt, image_size=size))
    ours = _ours(pred, cases)
    worst = {"logits": 0.0, "scores": 0.0, "mask_equal": 1.0}
    for case in cases:
        o, r = ours[case["name"]], ref[case["name"]]
        if isinstance(o[0], list):  # batch: one entry per image
            diffs = [_compare(f"{case['name']}[{i}]", tuple(x[i] for x in o), tuple(x[i] for x in r))
                     for i in range(len(o[0]))]
        else:
            diffs = [_compare(case["name"], o, r)]
        for d in diffs:
            worst = dict(logits=max(worst["logits"], d["logits"]), scores=max(worst["scores"], d["scores"]),
                         mask_equal=min(worst["mask_equal"], d["mask_equal"]))
    print(f"\nPARITY image {name}@{size} ({label}): max |logit diff| {worst['logits']:.2e}, "
          f"max |score diff| {worst['scores']:.2e}, min mask agreement {worst['mask_equal']:.6f}")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sam2-hiera-small", "sam2-hiera-base-plus", "sam2.1-hiera-large"])
def test_image_embeddings_match_reference(name, reference, reference_checkpoint, tmp_path):
    ckpt = reference_checkpoint(name)
    out = tmp_path / "out.pt"
    reference.run("ref_image.py", Job(dict(config=REFERENCE_YAML[name], checkpoint=In(ckpt), image_size=1024,
                                           images=IMAGES[:1], cases=[], embed_only=True)), Out(out))
    ref = torch.load(out, weights_only=False)
    pred = SAM2ImagePredictor(build_sam2(name, checkpoint=ckpt))
    pred.set_image(IMAGES[0])
    emb = pred.get_image_embedding()
    diff = (emb - ref["embed0"]).abs().max().item()
    hr = [(a - b).abs().max().item() for a, b in zip(pred.features.high_res, ref["high_res0"])]
    scale = ref["embed0"].abs().max().item()
    print(f"\nPARITY embedding {name}: max |diff| {diff:.2e} (max |value| {scale:.2f}), "
          f"high-res {hr[0]:.2e} / {hr[1]:.2e}")
    torch.testing.assert_close(emb, ref["embed0"], atol=1e-3, rtol=1e-3)
    for a, b in zip(pred.features.high_res, ref["high_res0"]):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)
