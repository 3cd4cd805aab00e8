"""Write a randomly initialised checkpoint in the official format ({"model": state_dict}).

For exercising the pipeline where real weights cannot be had (no internet): the masks it
gives mean nothing. The object-score head's last bias is set to +8, so that the video tracker
sees the object as present and its (meaningless) masks show in the outputs instead of being
blanked. usage: python scripts/make_random_checkpoint.py NAME OUT.pt [SEED]
"""

import sys

import torch

from sam2kit import get_config
from sam2kit.build import build_model

name, out = sys.argv[1], sys.argv[2]
torch.manual_seed(int(sys.argv[3]) if len(sys.argv) > 3 else 0)
state_dict = build_model(get_config(name)).state_dict()
state_dict["sam_mask_decoder.pred_obj_score_head.layers.2.bias"].fill_(8.0)
torch.save({"model": state_dict}, out)
print(f"wrote a RANDOM {name} checkpoint to {out}")
