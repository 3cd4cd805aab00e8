"""Runs in the reference environment: build a reference model with random weights, perturb
every tensor (so zero/one initialisations such as position embeddings and norms are tested
too), and save it in the official format ``{"model": state_dict}``.

usage: python ref_make_checkpoint.py CONFIG_YAML OUT.pt SEED [OBJ_SCORE_BIAS]
"""

import sys

import torch
from sam2.build_sam import build_sam2

config, out, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
obj_bias = float(sys.argv[4]) if len(sys.argv) > 4 else None
torch.manual_seed(seed)
model = build_sam2(config, ckpt_path=None, device="cpu")
sd = model.state_dict()
gen = torch.Generator().manual_seed(seed + 1)
for k, v in sd.items():
    if v.is_floating_point():
        v.add_(0.02 * torch.randn(v.shape, generator=gen))
if obj_bias is not None:  # make objects "present" so video masks are not all empty
    sd["sam_mask_decoder.pred_obj_score_head.layers.2.bias"].fill_(obj_bias)
torch.save({"model": sd}, out)
