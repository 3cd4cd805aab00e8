"""Runs in the reference environment: automatic mask generation cases.

usage: python ref_auto.py JOB.pt OUT.pt
JOB: {"config", "checkpoint", "image_size", "images": [HxWx3 uint8], "cases": [{"name", "image"
(index), "kwargs" (SAM2AutomaticMaskGenerator arguments)}]}
OUT: {name: {"records": [...], "seconds": float}}; segmentations are uncompressed RLEs (the
reference's coco_rle needs pycocotools, which its environment lacks: the test compares masks).

Patch: its connected components (a CUDA kernel, used with min_mask_region_area > 0 to fill
holes and remove islands in the low-res masks) get the CPU implementation of ref_patches.py, as
on a GPU build; without it the reference skips that step on the CPU with a warning.
"""

import sys
import time

import torch
import sam2.utils.misc as misc
from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
from sam2.build_sam import build_sam2

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from ref_patches import cpu_connected_components  # noqa: E402

misc.get_connected_components = cpu_connected_components

job = torch.load(sys.argv[1], weights_only=False)
s = job["image_size"]
overrides = [f"++model.image_size={s}"] if s != 1024 else []
model = build_sam2(job["config"], ckpt_path=job["checkpoint"], device="cpu",
                   hydra_overrides_extra=overrides)
results = {}
for case in job["cases"]:
    kwargs = dict(case["kwargs"])
    if kwargs.get("output_mode") == "coco_rle":
        kwargs["output_mode"] = "uncompressed_rle"
    gen = SAM2AutomaticMaskGenerator(model, **kwargs)
    gen.predictor._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]
    t0 = time.perf_counter()
    records = gen.generate(job["images"][case["image"]])
    results[case["name"]] = {"records": records, "seconds": time.perf_counter() - t0}
torch.save(results, sys.argv[2])
