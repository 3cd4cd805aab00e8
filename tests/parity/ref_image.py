"""Runs in the reference environment: the image cases of the parity tests.

usage: python ref_image.py JOB.pt OUT.pt
JOB: {"config": yaml, "checkpoint": path, "image_size": int, "images": [HxWx3 uint8 arrays],
      "cases": [case dicts], "embed_only": bool}
Each case: {"name", "image" (index) or "images" (list, batch mode), "point_coords",
"point_labels", "box", "mask_from" (name of an earlier case whose best low-res logits feed
mask_input), "multimask_output"}; batch cases hold lists of those per image.
"""

import sys

import numpy as np
import torch
from sam2.build_sam import build_sam2
from sam2.sam2_image_predictor import SAM2ImagePredictor

job = torch.load(sys.argv[1], weights_only=False)
s = job["image_size"]
overrides = [f"++model.image_size={s}"] if s != 1024 else []
model = build_sam2(job["config"], ckpt_path=job["checkpoint"], device="cpu",
                   hydra_overrides_extra=overrides)
pred = SAM2ImagePredictor(model)
pred._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]
torch.set_grad_enabled(False)

results = {}
if job.get("embed_only"):
    for i, img in enumerate(job["images"]):
        pred.set_image(img)
        results[f"embed{i}"] = pred.get_image_embedding().clone()
        results[f"high_res{i}"] = [f.clone() for f in pred._features["high_res_feats"]]
    torch.save(results, sys.argv[2])
    sys.exit(0)


def best_low_res(res):
    masks, scores, low = res
    if scores.ndim == 1:
        return low[np.argmax(scores)][None]
    return low[np.arange(len(scores)), np.argmax(scores, -1)][:, None]


current = None
for case in job["cases"]:
    if "images" in case:
        pred.set_image_batch([job["images"][i] for i in case["images"]])
        current = None
        masks, scores, low = pred.predict_batch(
            case.get("point_coords"), case.get("point_labels"), case.get("box"),
            None, multimask_output=case["multimask_output"])
        results[case["name"]] = (masks, scores, low)
        continue
    if current != case["image"]:
        pred.set_image(job["images"][case["image"]])
        current = case["image"]
    mask_input = best_low_res(results[case["mask_from"]]) if case.get("mask_from") else None
    results[case["name"]] = pred.predict(
        point_coords=case.get("point_coords"), point_labels=case.get("point_labels"),
        box=case.get("box"), mask_input=mask_input, multimask_output=case["multimask_output"])
torch.save(results, sys.argv[2])
