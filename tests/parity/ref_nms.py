"""Runs in the reference environment: torchvision's batched_nms (one category), as the reference
generator calls it.

usage: python ref_nms.py JOB.pt OUT.pt
JOB: [{"boxes": [N, 4] float32, "scores": [N], "iou": float}]; OUT: [kept indices]
"""

import sys

import torch
from torchvision.ops.boxes import batched_nms

jobs = torch.load(sys.argv[1], weights_only=False)
torch.save([batched_nms(j["boxes"], j["scores"], torch.zeros(len(j["scores"])), j["iou"]) for j in jobs],
           sys.argv[2])
