"""Runs in the reference environment: Meta's tools/vos_inference.py (vendored unchanged as
vos_inference.py) over dataset folders, its predictor built as its main() builds it (with
apply_postprocessing off, as for its published evaluations), on the CPU.

usage: python ref_vos.py JOBS.json
JOBS: [{"config", "checkpoint", "image_size", "base_video_dir", "input_mask_dir",
        "output_mask_dir", "mode"}], mode "later" (--track_object_appearing_later_in_video)
or "per_obj" (--per_obj_png_file).
"""

import json
import os
import sys

from sam2.build_sam import build_sam2_video_predictor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vos_inference as official  # noqa: E402
from ref_patches import patch_for_cpu  # noqa: E402

for job in json.load(open(sys.argv[1])):
    per_obj = job["mode"] == "per_obj"
    overrides = ["++model.non_overlap_masks=" + ("false" if per_obj else "true")]  # as its main()
    if job["image_size"] != 1024:
        overrides.append(f"++model.image_size={job['image_size']}")
    predictor = build_sam2_video_predictor(config_file=job["config"], ckpt_path=job["checkpoint"],
                                           apply_postprocessing=False, hydra_overrides_extra=overrides,
                                           device="cpu")
    patch_for_cpu(predictor)
    run = official.vos_inference if per_obj else official.vos_separate_inference_per_object
    for video in sorted(os.listdir(job["base_video_dir"])):
        run(predictor=predictor, base_video_dir=job["base_video_dir"], input_mask_dir=job["input_mask_dir"],
            output_mask_dir=job["output_mask_dir"], video_name=video, per_obj_png_file=per_obj)
