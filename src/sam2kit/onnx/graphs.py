"""The four exported graphs as nn.Modules over one SAM2Model (PyTorch; used by ``export``).

Each wraps the model's own modules and methods, laid out so that the TorchScript tracer records
shapes that stay dynamic: several objects (B), any number of prompt points (N), memory frames
(M) and object pointers (P). h = S/16 for the model input size S.

- ``ImageEncoderGraph``: image [1, 3, S, S] -> image_embed [1, 256, h, w] (with the no-memory
  embedding added: what the decoder reads on a single image), high_res_feats_0 [1, 32, 4h, 4w],
  high_res_feats_1 [1, 64, 2h, 2w], vision_features [1, 256, h, w] (what memory attention and
  the memory encoder read), vision_pos [1, 256, h, w] (a constant: the sine position encoding).
- ``PromptDecoderGraph``: prompt encoder + mask decoder.
- ``MemoryAttentionGraph``: the current frame attends to M memory frames and P pointers.
- ``MemoryEncoderGraph``: features + high-res mask logits -> memory features and position.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sam2kit.modeling.position_encoding import sine_pe_1d
from sam2kit.modeling.sam2 import SAM2Model


class ImageEncoderGraph(nn.Module):
    def __init__(self, model: SAM2Model):
        super().__init__()
        self.m = model

    def forward(self, image: torch.Tensor):
        f = self.m.encode_image(image)
        return (self.m.image_embedding(f), f.high_res[0], f.high_res[1], f.vision_features, f.vision_pos)


class PromptDecoderGraph(nn.Module):
    """Inputs: image_embed [1, 256, h, w]; high_res_feats_0/1; point_coords [B, N, 2] float
    (x, y) in model-input pixels; point_labels [B, N] int32 (1 fg, 0 bg, 2/3 box corners, -1
    padding: the caller appends the padding point the official code appends; N may be 0);
    mask_input [B, 1, 4h, 4w] logits; has_mask_input [1] float (1: use mask_input, 0: no
    mask). Outputs: masks [B, 4, 4h, 4w] (index 0 the single-mask output, 1..3 the multimask
    ones), iou_predictions [B, 4], single_mask [B, 1, 4h, 4w] and single_iou [B, 1] (the
    single-mask output, or the best multimask one where it is unstable: dynamic multimask),
    obj_ptr [B, 4, 256] (the object pointer of each output token, already replaced by the
    no-object pointer where the object is judged absent), object_score_logits [B, 1]."""

    def __init__(self, model: SAM2Model):
        super().__init__()
        self.m = model

    def forward(self, image_embed, high_res_feats_0, high_res_feats_1, point_coords, point_labels,
                mask_input, has_mask_input):
        m = self.m
        pe, dec = m.sam_prompt_encoder, m.sam_mask_decoder
        sparse = pe._embed_points(point_coords, point_labels, pad=False)  # [B, N, C]
        no_mask = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        has = has_mask_input.reshape(1, 1, 1, 1)
        dense = has * pe.mask_downscaling(mask_input) + (1 - has) * no_mask  # [B, C, h, w]
        masks, iou, tokens, obj = dec._predict(image_embed, pe.get_dense_pe(), sparse, dense, True,
                                               [high_res_feats_0, high_res_feats_1])
        single_mask, single_iou = dec._dynamic_multimask(masks, iou)
        appearing = (obj > 0).float()[:, :, None]  # [B, 1, 1]
        ptr = m.obj_ptr_proj(tokens)  # [B, 4, 256]
        ptr = appearing * ptr + (1 - appearing) * m.no_obj_ptr
        return masks, iou, single_mask, single_iou, ptr, obj


class MemoryAttentionGraph(nn.Module):
    """Inputs: vision_features, vision_pos [1, 256, h, w] (the current frame); memory [M, 64,
    h, w] (memory features of M frames, one object); memory_pos [1, 64, h, w] (their spatial
    position encoding, the memory encoder's maskmem_pos); memory_slots [M] int64 (0: a
    conditioning frame, 1..num_maskmem-1: that many frames back, the temporal-encoding slot);
    obj_ptrs [P, 256]; obj_ptr_offsets [P] float (the pointers' temporal offsets divided by
    max(max_obj_ptrs - 1, 1), as the torch model computes them). Output: pix_feat
    [1, 256, h, w], the memory-conditioned features the decoder reads. Each pointer becomes
    256/64 tokens that are not rotated; memory keys are rotated by the 2-D RoPE of their grid."""

    def __init__(self, model: SAM2Model):
        super().__init__()
        self.m = model
        layer = model.memory_attention.layers[0]
        if layer.cross_attn_image.num_heads != 1:
            raise NotImplementedError("memory attention with more than one head is not exported "
                                      "(every official SAM 2 model has one)")
        if len({(a.internal_dim, a.num_heads, a.rope_theta) for lay in model.memory_attention.layers
                for a in (lay.self_attn, lay.cross_attn_image)}) != 1:
            raise NotImplementedError("memory attention layers with different RoPE widths are not exported")
        # one RoPE table for the whole graph (every layer's attention has the same head width and
        # theta), held as buffers: one initializer in the file instead of a constant per use
        hw = (model.config.image_size // model.config.backbone_stride) ** 2
        with torch.no_grad():
            cos, sin = layer.self_attn.rope_tables(hw, model.device)
        self.register_buffer("rope_cos", cos.clone(), persistent=False)
        self.register_buffer("rope_sin", sin.clone(), persistent=False)

    def forward(self, vision_features, vision_pos, memory, memory_pos, memory_slots, obj_ptrs,
                obj_ptr_offsets):
        m, cfg = self.m, self.m.config
        c, mem = cfg.d_model, cfg.mem_dim
        h = w = cfg.image_size // cfg.backbone_stride  # python ints: constants in the graph
        curr = vision_features.flatten(2).transpose(1, 2)  # [1, hw, 256]
        curr_pos = vision_pos.flatten(2).transpose(1, 2)
        tpos = m.maskmem_tpos_enc.reshape(cfg.num_maskmem, 1, mem)[cfg.num_maskmem - 1 - memory_slots]
        feats = memory.flatten(2).transpose(1, 2)  # [M, hw, 64]
        pos = memory_pos.flatten(2).transpose(1, 2) + tpos  # [M, hw, 64]
        if cfg.add_tpos_enc_to_obj_ptrs:
            dim = c if cfg.proj_tpos_enc_in_obj_ptrs else mem
            ptr_pos = m.obj_ptr_tpos_proj(sine_pe_1d(obj_ptr_offsets, dim))  # [P, 64]
        else:
            ptr_pos = torch.zeros_like(obj_ptrs[:, :mem])
        split = c // mem  # each 256-d pointer becomes 4 tokens of 64
        ptr_tokens = obj_ptrs.reshape(-1, mem)[None]  # [1, 4P, 64]
        ptr_pos = ptr_pos[:, None, :].expand(-1, split, -1).reshape(1, -1, mem)
        values = torch.cat([feats.reshape(1, -1, mem), ptr_tokens], dim=1)  # [1, M*hw + 4P, 64]
        x = curr + 0.1 * curr_pos
        rope = (self.rope_cos, self.rope_sin)
        for layer in m.memory_attention.layers:
            t = layer.norm1(x)
            x = x + self._self(layer.self_attn, t, rope)
            t = layer.norm2(x)
            x = x + self._cross(layer.cross_attn_image, t, feats, pos, ptr_tokens, ptr_pos, values, rope)
            t = layer.norm3(x)
            x = x + layer.linear2(F.relu(layer.linear1(t)))
        out = m.memory_attention.norm(x)  # [1, hw, 256]
        return out.transpose(1, 2).reshape(1, c, h, w)

    @staticmethod
    def _self(attn, x, rope):
        """RoPEAttention.forward (self-attention on the hw grid) with the RoPE table given."""
        wq, bq, wk, bk = attn._qk_weights()
        cos, sin = rope
        q = attn._rotate(attn._heads(F.linear(x, wq, bq)), cos, sin)
        k = attn._rotate(attn._heads(F.linear(x, wk, bk)), cos, sin)
        out = F.scaled_dot_product_attention(q, k, attn._heads(attn.v_proj(x)))
        return attn.out_proj(attn._merge(out))

    @staticmethod
    def _cross(attn, x, feats, pos, ptr_tokens, ptr_pos, values, rope):
        """RoPEAttention.attend_memory over keys built for all M frames at once."""
        wq, bq, wk, bk = attn._qk_weights()
        cos, sin = rope

        def rotate(k):  # [M, hw, C] (one head: its half layout is the channel order) -> rotated
            a, b = k.chunk(2, dim=-1)  # no reshape by M, so that M = 0 works too
            return torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1)

        mem_keys = rotate(F.linear(feats, wk)) + rotate(F.linear(pos, wk, bk))  # as memory_keys
        keys = torch.cat([mem_keys.reshape(1, -1, mem_keys.shape[-1]),
                          F.linear(ptr_tokens + ptr_pos, wk, bk)], dim=1)  # [1, M*hw + 4P, C]
        q = attn._rotate(attn._heads(F.linear(x, wq, bq)), cos, sin)
        out = F.scaled_dot_product_attention(q, attn._heads(keys), values.unsqueeze(1))
        return attn.out_proj(attn.v_proj(out.squeeze(1)))  # values projected after (one head)


class MemoryEncoderGraph(nn.Module):
    """Inputs: vision_features [1, 256, h, w]; masks [B, 1, S, S] high-res mask logits;
    object_score_logits [B, 1]; binarize [] bool (threshold the mask at 0 instead of its
    sigmoid: masks from clicks). Outputs: maskmem_features [B, 64, h, w], maskmem_pos
    [B, 64, h, w] (a constant: the sine position encoding)."""

    def __init__(self, model: SAM2Model):
        super().__init__()
        self.m = model

    def forward(self, vision_features, masks, object_score_logits, binarize):
        m, cfg = self.m, self.m.config
        probs = torch.where(binarize, (masks > 0).float(), torch.sigmoid(masks))
        probs = probs * cfg.sigmoid_scale_for_mem_enc + cfg.sigmoid_bias_for_mem_enc
        pix = vision_features.expand(masks.shape[0], -1, -1, -1)
        feats, pos = m.memory_encoder(pix, probs)
        if m.no_obj_embed_spatial is not None:
            absent = (object_score_logits <= 0).float()[..., None, None]  # [B, 1, 1, 1]
            feats = feats + absent * m.no_obj_embed_spatial[..., None, None]
        return feats, pos
