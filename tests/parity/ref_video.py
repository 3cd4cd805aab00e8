"""Runs in the reference environment: a video parity scenario.

usage: python ref_video.py JOB.pt OUT.pt
JOB: {"config", "checkpoint", "image_size", "frames_dir" (JPEG frames), "scenario"}

Two patches make the reference run on the CPU as it does on a GPU: its connected components
(a CUDA kernel, used to fill small holes) get a CPU implementation, and memory features
stored as bfloat16 are cast to float32 at the memory-attention input (on the CPU the
reference crashes when an object's memory holds no object pointer yet).
"""

import sys

import torch
import torch.nn.functional as F

import sam2.utils.misc as misc
from sam2.build_sam import build_sam2_video_predictor

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from video_scenarios import SCENARIOS, run_steps  # noqa: E402


def cpu_connected_components(mask):
    """8-connected components of [N, 1, H, W] masks: (labels, areas), like the CUDA kernel."""
    mask = mask.bool()
    n, _, h, w = mask.shape
    ids = torch.arange(1, h * w + 1, dtype=torch.float32).view(1, 1, h, w).expand(n, -1, -1, -1)
    labels = torch.where(mask, ids, torch.zeros(()))
    while True:
        grown = torch.where(mask, F.max_pool2d(labels, 3, 1, 1), labels)
        if torch.equal(grown, labels):
            break
        labels = grown
    lab = labels.long().flatten(1)
    counts = torch.zeros(n, h * w + 1, dtype=torch.long).scatter_add_(1, lab, torch.ones_like(lab))
    counts[:, 0] = 0
    return labels.int(), torch.gather(counts, 1, lab).view(n, 1, h, w).int()


misc.get_connected_components = cpu_connected_components

job = torch.load(sys.argv[1], weights_only=False)
s = job["image_size"]
overrides = [f"++model.image_size={s}"] if s != 1024 else []
predictor = build_sam2_video_predictor(job["config"], ckpt_path=job["checkpoint"], device="cpu",
                                       hydra_overrides_extra=overrides)
attn_forward = predictor.memory_attention.forward


def fp32_memory_attention(curr, memory, curr_pos=None, memory_pos=None, num_obj_ptr_tokens=0):
    return attn_forward(curr, memory.float(), curr_pos, memory_pos.float(), num_obj_ptr_tokens)


predictor.memory_attention.forward = fp32_memory_attention


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
