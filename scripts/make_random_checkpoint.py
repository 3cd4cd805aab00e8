"""Write a randomly initialised checkpoint in the official format ({"model": state_dict}).

For exercising the pipeline where real weights cannot be had (no internet): the masks it
gives mean nothing. usage: python scripts/make_random_checkpoint.py NAME OUT.pt [SEED]
"""

import sys

import torch

from sam2kit import get_config
from sam2kit.build import build_model

name, out = sys.argv[1], sys.argv[2]
torch.manual_seed(int(sys.argv[3]) if len(sys.argv) > 3 else 0)
torch.save({"model": build_model(get_config(name)).state_dict()}, out)
print(f"wrote a RANDOM {name} checkpoint to {out}")
