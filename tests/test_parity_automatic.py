"""Parity of SAM2AutomaticMaskGenerator with the reference's (sam2==1.1.0), same weights.

Weights: the random tiny SAM 2.0 checkpoint of the other parity tests, with the mask decoder's
hypernetwork output layers scaled by 10. Random weights give logits within about +-0.8, so every
stability score (masks at logit +-1) would be 0; scaled, they spread over 0..0.6 and the
stability filter has something to decide. Predicted IoUs of random weights lie near 0.5, so
the thresholds are lowered to pred_iou_thresh=0.49 and stability_score_thresh=0.1 (about half
of the candidates pass each; the defaults 0.8 / 0.95 would leave no mask). With random weights
neighbouring points give similar masks, so NMS keeps few of them: most cases also switch NMS
off (box_nms_thresh=1.0, crop_nms_thresh=1.0 with crops) to compare every candidate.

Required per case: the same number of masks; each reference mask matched to one of ours with
the same point and crop box (the best mask IoU among those, one to one) with mask IoU >= 0.99,
|predicted_iou diff| and |stability_score diff| <= 1e-3, the same crop box and point, the bbox
within a pixel and the area within 0.1% (float rounding may flip a pixel whose logit is ~0). Where at most 1000 boxes enter every NMS, the order must be the same too (torchvision's
batched_nms, which the reference uses, orders equal scores arbitrarily above 1000 boxes on the
CPU: masks of one crop share the crop-NMS score). The figures are printed (-s shows them).
Most cases run the model at image_size 512 to stay fast; one runs at the default 1024. The
exact pass runs the default kernels (SAM2KIT_TUNING=off); the tuned pass runs the 512 cases with
tuning on and, over its sets, every other candidate kernel.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import REFERENCE_YAML, synthetic_image
from reference_cache import In, Job, Out
from sam2kit import SAM2AutomaticMaskGenerator, build_sam2
from sam2kit.image.amg import rle_to_mask
from tuned_kernels import N_SETS, assert_used, candidate_set, tuned

pytestmark = pytest.mark.parity

IMAGE = synthetic_image(240, 320, 5)
LOW = dict(pred_iou_thresh=0.49, stability_score_thresh=0.1)
OFF = dict(box_nms_thresh=1.0, crop_nms_thresh=1.0)
CASES = {  # name: (image_size, generator arguments, order must match)
    1024: [("pps8/nms_off@1024", dict(points_per_side=8, **LOW, **OFF), True)],
    512: [
        ("pps16/nms_off", dict(points_per_side=16, **LOW, **OFF), True),
        ("pps16/nms", dict(points_per_side=16, **LOW), True),
        ("pps8/crop1/nms_off", dict(points_per_side=8, crop_n_layers=1, **LOW, **OFF), True),
        # layer 1 at 8 points a side (downscale 2) to save time; default NMS in and between crops
        ("pps16/crop1/nms", dict(points_per_side=16, crop_n_layers=1, crop_n_points_downscale_factor=2,
                                 **LOW), False),
        ("pps4/m2m/min_area/coco", dict(points_per_side=4, use_m2m=True, min_mask_region_area=25,
                                        output_mode="coco_rle", pred_iou_thresh=0.0,
                                        stability_score_thresh=0.05, box_nms_thresh=1.0), True),
    ],
}


@pytest.fixture(scope="module")
def checkpoint(reference_checkpoint, tmp_path_factory):
    sd = torch.load(reference_checkpoint("sam2-hiera-tiny"), weights_only=True)["model"]
    for k, v in sd.items():
        if k.startswith("sam_mask_decoder.output_hypernetworks_mlps.") and ".layers.2." in k:
            v.mul_(10.0)
    path = tmp_path_factory.mktemp("auto_ckpt") / "tiny_sharp.pt"
    torch.save({"model": sd}, path)
    return path


def _mask(seg) -> np.ndarray:
    return seg if isinstance(seg, np.ndarray) else rle_to_mask(seg)


def _compare(name: str, ours: list[dict], ref: list[dict], ordered: bool) -> dict:
    assert len(ours) == len(ref), (name, len(ours), len(ref))
    assert len(ref) > 0, name
    key = lambda r: (tuple(r["crop_box"]), tuple(r["point_coords"][0]))  # noqa: E731
    by_key: dict = {}
    for i, r in enumerate(ours):
        by_key.setdefault(key(r), []).append(i)
    used, min_iou, d_iou, d_stab, same_order = set(), 1.0, 0.0, 0.0, True
    for j, r in enumerate(ref):
        rm = _mask(r["segmentation"])
        cands = [i for i in by_key.get(key(r), []) if i not in used]
        assert cands, (name, "no mask of ours for", key(r))
        ious = []
        for i in cands:
            om = _mask(ours[i]["segmentation"])
            union = (om | rm).sum()
            ious.append(1.0 if union == 0 else (om & rm).sum() / union)
        i = cands[int(np.argmax(ious))]
        used.add(i)
        same_order &= i == j
        o = ours[i]
        min_iou = min(min_iou, float(max(ious)))
        d_iou = max(d_iou, abs(o["predicted_iou"] - r["predicted_iou"]))
        d_stab = max(d_stab, abs(o["stability_score"] - r["stability_score"]))
        # float rounding (1e-7 on logits) may flip a pixel whose logit is ~0: boxes within a
        # pixel, areas within 0.1%
        assert np.abs(np.subtract(o["bbox"], r["bbox"])).max() <= 1, (name, j, o["bbox"], r["bbox"])
        assert abs(o["area"] - r["area"]) <= max(1, 1e-3 * r["area"]), (name, j, o["area"], r["area"])
        assert o["crop_box"] == r["crop_box"] and o["point_coords"] == r["point_coords"], (name, j)
    assert min_iou >= 0.99 and d_iou <= 1e-3 and d_stab <= 1e-3, (name, min_iou, d_iou, d_stab)
    if ordered:
        assert same_order, name
    return dict(count=len(ref), min_iou=min_iou, d_iou=d_iou, d_stab=d_stab, same_order=same_order)


@pytest.mark.parametrize("size", [1024, 512])
def test_automatic_masks_match_reference(size, checkpoint, reference, tmp_path):
    _check_against_reference(size, checkpoint, reference, tmp_path, "exact")


@pytest.mark.parametrize("kernels", range(N_SETS), ids=lambda k: f"set{k}")
def test_tuned_automatic_masks_match_reference(kernels, checkpoint, reference, tmp_path, monkeypatch):
    """The exact test's 512 cases and requirements with SAM2KIT_TUNING=on and the kernel
    choices of candidate set ``kernels`` (tests/tuned_kernels.py) instead of the defaults, against
    the reference outputs of the exact test (the same cache entry). The generator decodes 64
    prompts a batch, so each prompts-per-pass candidate splits them its own way here."""
    choices = candidate_set(kernels)
    with tuned(choices, tmp_path, monkeypatch):
        _check_against_reference(512, checkpoint, reference, tmp_path, f"tuned {choices}")
        assert_used(choices, ("linear", "prompts_per_pass"))


def _check_against_reference(size, checkpoint, reference, tmp_path, label) -> None:
    cases = CASES[size]
    out = tmp_path / "out.pt"
    reference.run("ref_auto.py", Job(dict(config=REFERENCE_YAML["sam2-hiera-tiny"], checkpoint=In(checkpoint),
                                          image_size=size, images=[IMAGE],
                                          cases=[dict(name=n, image=0, kwargs=kw) for n, kw, _ in cases])), Out(out))
    ref = torch.load(out, weights_only=False)
    model = build_sam2("sam2-hiera-tiny", checkpoint=checkpoint, image_size=size)
    for name, kwargs, ordered in cases:
        ours = SAM2AutomaticMaskGenerator(model, **kwargs).generate(IMAGE)
        if kwargs.get("output_mode") == "coco_rle":
            assert all(isinstance(r["segmentation"]["counts"], str) for r in ours)
        s = _compare(name, ours, ref[name]["records"], ordered)
        print(f"\nPARITY auto {name} (tiny@{size}, 320x240, {label}): {s['count']} masks, min IoU "
              f"{s['min_iou']:.6f}, max |predicted_iou diff| {s['d_iou']:.2e}, max |stability diff| "
              f"{s['d_stab']:.2e}, same order: {s['same_order']}")


def test_box_nms_matches_torchvision(reference, tmp_path):
    """Random integer boxes (as boxes of masks are) with many equal scores, 300 and 1500 of
    them: the same kept boxes; the same order with <= 1000 boxes (above that torchvision's
    CPU path sorts equal scores arbitrarily, so only the scores' order is compared)."""
    from sam2kit.image.amg import box_nms

    g = torch.Generator().manual_seed(0)
    jobs = []
    for n in (300, 1500):
        xy = torch.randint(0, 80, (n, 2), generator=g).float()
        boxes = torch.cat([xy, xy + torch.randint(0, 50, (n, 2), generator=g)], 1)
        scores = torch.randint(0, 6, (n,), generator=g).float() / 5
        jobs += [dict(boxes=boxes, scores=scores, iou=t) for t in (0.0, 0.3, 0.5, 0.7, 1.0)]
    out = tmp_path / "out.pt"
    reference.run("ref_nms.py", Job(jobs), Out(out))
    for j, theirs in zip(jobs, torch.load(out, weights_only=False)):
        ours = box_nms(j["boxes"], j["scores"], j["iou"])
        assert sorted(ours.tolist()) == sorted(theirs.tolist()), (len(j["scores"]), j["iou"])
        torch.testing.assert_close(j["scores"][ours], j["scores"][theirs], rtol=0, atol=0)
        if len(j["scores"]) <= 1000:
            assert ours.tolist() == theirs.tolist(), j["iou"]
    print(f"\nPARITY auto box_nms: {len(jobs)} cases equal to torchvision's batched_nms")
