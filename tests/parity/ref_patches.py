"""Runs in the reference environment: what the reference video predictor needs to run on the
CPU as it does on a GPU (used by the video parity runner and by benchmarks/speed.py).

- Its connected components (a CUDA kernel, used to fill small holes) get a CPU version.
- Memory features stored as bfloat16 are cast to float32 at the memory-attention input (on
  the CPU the reference crashes when an object's memory holds no object pointer yet).
"""

import torch
import torch.nn.functional as F

import sam2.utils.misc as misc


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


def patch_for_cpu(predictor) -> None:
    """Apply both patches (the first process-wide, the second to ``predictor``)."""
    misc.get_connected_components = cpu_connected_components
    attn_forward = predictor.memory_attention.forward

    def fp32_memory_attention(curr, memory, curr_pos=None, memory_pos=None, num_obj_ptr_tokens=0):
        return attn_forward(curr, memory.float(), curr_pos, memory_pos.float(), num_obj_ptr_tokens)

    predictor.memory_attention.forward = fp32_memory_attention
