"""Runs in the reference environment: a video parity scenario.

usage: python ref_video.py JOB.pt OUT.pt
JOB: {"config", "checkpoint", "image_size", "frames_dir" (JPEG frames), "scenario"}

The reference is patched to run on the CPU as it does on a GPU (ref_patches.py).
"""

import sys

import torch
from sam2.build_sam import build_sam2_video_predictor

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from ref_patches import patch_for_cpu  # noqa: E402
from video_scenarios import SCENARIOS, run_steps  # noqa: E402

job = torch.load(sys.argv[1], weights_only=False)
s = job["image_size"]
overrides = [f"++model.image_size={s}"] if s != 1024 else []
predictor = build_sam2_video_predictor(job["config"], ckpt_path=job["checkpoint"], device="cpu",
                                       hydra_overrides_extra=overrides)
patch_for_cpu(predictor)


def obj_scores(state):
    out = {}
    for idx, obj_id in state["obj_idx_to_id"].items():
        d = state["output_dict_per_obj"][idx]
        frames = {**d["non_cond_frame_outputs"], **d["cond_frame_outputs"]}
        out[obj_id] = {f: float(o["object_score_logits"].reshape(-1)[0]) for f, o in frames.items()}
    return out


with torch.inference_mode():
    state = predictor.init_state(job["frames_dir"])
    h, w = state["video_height"], state["video_width"]
    steps = SCENARIOS[job["scenario"]](h, w, state["num_frames"])
    records = run_steps(predictor, state, steps, obj_scores)
torch.save(records, sys.argv[2])
