"""The SAM 2 model: a stateless container of every part, with tensor-to-tensor methods.

Predictors (image, video) own all state and call only the public methods here. Parameter
and module names equal the official checkpoint keys, so loading is a strict
``load_state_dict`` with no remapping.

One model may serve any number of predictors, video sessions and threads at once, each
getting exactly what it would get alone (see ``SAM2Model``).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sam2kit.configs import SAM2Config
from sam2kit.modeling.common import MLP, WeightCache
from sam2kit.modeling.hiera import Hiera
from sam2kit.modeling.image_encoder import FpnNeck, ImageEncoder
from sam2kit.modeling.mask_decoder import DecoderOutput, MaskDecoder
from sam2kit.modeling.memory_attention import MemoryAttention, MemoryBank, MemoryTokens
from sam2kit.modeling.memory_encoder import MemoryEncoder
from sam2kit.modeling.position_encoding import sine_pe_1d
from sam2kit.modeling.prompt_encoder import PromptEncoder

# placeholder logit for masks of objects judged absent
NO_OBJ_SCORE = -1024.0

# ImageNet statistics used to normalise input images
PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)


@dataclass
class ImageFeatures:
    """Backbone output for a batch of B images at model resolution S (h = S/16).

    vision_features: [B, 256, h, w] stride-16 features (what memory attention conditions).
    high_res: ([B, 32, 4h, 4w], [B, 64, 2h, 2w]) skip features, already projected by the
        mask decoder's conv_s0 / conv_s1.
    vision_pos: [B, 256, h, w] sine position encoding of the stride-16 level.
    """

    vision_features: torch.Tensor
    high_res: tuple[torch.Tensor, torch.Tensor]
    vision_pos: torch.Tensor


@dataclass
class HeadOutput:
    """What the SAM heads give on one frame for B objects (S = model input size).

    low_res_masks: [B, 1, S/4, S/4] logits of the chosen mask; high_res_masks: [B, 1, S, S];
    ious: [B, M]; obj_ptr: [B, 256] object pointer; object_score_logits: [B, 1].
    """

    low_res_masks: torch.Tensor
    high_res_masks: torch.Tensor
    ious: torch.Tensor
    obj_ptr: torch.Tensor
    object_score_logits: torch.Tensor


@dataclass
class MemoryFrame:
    """One past frame's memory as memory attention reads it: features [B, 64, h, w] (any
    float dtype; computed in fp32), their position encoding [B, 64, h, w], and the slot
    ``t_pos``: 0 for conditioning frames, 1..num_maskmem-1 for the frames before.
    ``cache``: a dict kept with these features (emptied or replaced whenever they change)
    where memory attention keeps what it derives from them; None: nothing is kept."""

    features: torch.Tensor
    pos: torch.Tensor
    t_pos: int
    cache: dict | None = None


def _to_fp32(x):
    if isinstance(x, torch.Tensor):
        return x.float() if x.is_floating_point() else x
    if isinstance(x, (tuple, list)):
        return type(x)(_to_fp32(v) for v in x)
    if dataclasses.is_dataclass(x):
        return dataclasses.replace(x, **{f.name: _to_fp32(getattr(x, f.name)) for f in dataclasses.fields(x)})
    return x


def _precision(method):
    """Run a model method in the model's precision (``sam2kit.modes``): under bf16 autocast
    when it is "bf16", always returning fp32 tensors."""
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        if self.precision == "fp32" or torch.is_autocast_enabled(self.device.type):
            return method(self, *args, **kwargs)
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            out = method(self, *args, **kwargs)
        return _to_fp32(out)
    return run


class SAM2Model(nn.Module):
    """SAM 2: image encoder, prompt encoder and mask decoder, memory attention and memory encoder.

    Shared, and safe to use from several threads at once (inference): the weights, and what is
    derived from the weights alone, computed once and then only read — the position tables of
    the encoder, the prompt encoder's dense encoding, memory attention's reordered projections
    and RoPE tables (``WeightCache``s: a few entries each, bounded, behind a lock;
    ``cache_entries()`` counts them). Nothing a caller does adds to them.

    Not shared: everything that depends on a caller's inputs lives with the caller and dies with
    it. An image predictor holds its image's features; a video session holds its memories, the
    keys memory attention derives from them (``MemoryFrame.cache``) and their position-and-slot
    terms (the ``cache`` argument of ``condition_on_memory``). A predictor or a session is for
    one thread at a time; the model is for all of them.
    """

    def __init__(self, config: SAM2Config):
        super().__init__()
        self.config = config
        self.precision = "fp32"  # or "bf16" (sam2kit.modes.apply_modes)
        self.encoder_backend = None  # or an OpenVINOEncoder (backend="openvino", sam2kit.modes)
        c, mem = config.d_model, config.mem_dim
        trunk = Hiera(config.embed_dim, config.num_heads, config.stages, config.global_att_blocks,
                      config.window_spec, config.window_pos_embed_bkg_spatial_size)
        self.image_encoder = ImageEncoder(trunk, FpnNeck(c, config.backbone_channel_list))
        self.memory_attention = MemoryAttention(c, config.memory_attention_layers,
                                                config.memory_attention_ffn, mem, config.rope_theta)
        self.memory_encoder = MemoryEncoder(mem, c)
        # temporal encodings of the num_maskmem memory slots, and "no memory" tokens
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(config.num_maskmem, 1, 1, mem))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, c))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, c))
        self.no_obj_ptr = nn.Parameter(torch.zeros(1, c))
        if config.no_obj_embed_spatial:
            self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, mem))
        else:
            self.no_obj_embed_spatial = None
        # turns a mask prompt in [0, 1] into stride-4 logits for the decoder (pointer from a mask)
        self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)

        s = config.image_size
        h = s // config.backbone_stride
        self.sam_prompt_encoder = PromptEncoder(c, (h, h), (s, s), mask_in_chans=16)
        self.sam_mask_decoder = MaskDecoder(c)
        self.obj_ptr_proj = MLP(c, c, c, 3)
        if config.proj_tpos_enc_in_obj_ptrs:
            self.obj_ptr_tpos_proj = nn.Linear(c, mem)
        else:
            self.obj_ptr_tpos_proj = nn.Identity()
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def device(self) -> torch.device:
        return self.no_mem_embed.device

    # ---- image ---------------------------------------------------------------------------

    @_precision
    def encode_image(self, images: torch.Tensor) -> ImageFeatures:
        """images: [B, 3, S, S] float, normalised with PIXEL_MEAN / PIXEL_STD."""
        if self.encoder_backend is not None:
            return self.encoder_backend(images)
        feats, pos = self.image_encoder(images)
        dec = self.sam_mask_decoder
        return ImageFeatures(
            vision_features=feats[2],
            high_res=(dec.conv_s0(feats[0]), dec.conv_s1(feats[1])),
            vision_pos=pos[2],
        )

    def image_embedding(self, feats: ImageFeatures) -> torch.Tensor:
        """Features of a single image as the mask decoder sees them: with the no-memory
        embedding added (what SAM 2 was trained with on frames without memory). [B, 256, h, w]"""
        return feats.vision_features + self.no_mem_embed.view(1, -1, 1, 1)

    @_precision
    def decode_masks(self, image_embed: torch.Tensor, high_res: tuple[torch.Tensor, torch.Tensor],
                     points: tuple[torch.Tensor, torch.Tensor] | None, mask_input: torch.Tensor | None,
                     multimask_output: bool, dynamic_multimask: bool = True) -> DecoderOutput:
        """Prompt the decoder.

        image_embed: [1 or B, 256, h, w]; points: ([B, N, 2] (x, y) in model-input pixels,
        [B, N] labels: 1 foreground, 0 background, 2/3 box corners, -1 padding);
        mask_input: [B, 1, 4h, 4w] logits. Returns low-res logits [B, M, 4h, 4w], IoU [B, M],
        output tokens and object-score logits [B, 1]. ``dynamic_multimask``: see MaskDecoder.
        """
        sparse, dense = self.sam_prompt_encoder(points, mask_input)
        return self.sam_mask_decoder(
            image_embeddings=image_embed,
            image_pe=self.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            repeat_image=True,
            high_res_features=list(high_res),
            dynamic_multimask=dynamic_multimask,
        )

    def cache_entries(self) -> int:
        """How many values derived from the weights the model keeps (every ``WeightCache``):
        a constant once the first image and video frame have run, whatever the callers do."""
        return sum(len(c) for m in self.modules() for c in vars(m).values() if isinstance(c, WeightCache))

    def materialize_constants(self) -> None:
        """Recreate the non-persistent constant buffers (after building on the meta device)."""
        device = self.no_mem_embed.device
        self.pixel_mean = torch.tensor(PIXEL_MEAN, device=device).view(1, 3, 1, 1)
        self.pixel_std = torch.tensor(PIXEL_STD, device=device).view(1, 3, 1, 1)

    # ---- video tracking steps (stateless; the video predictor chooses the memories) ------

    @_precision
    def condition_on_memory(self, feats: ImageFeatures, memories: list[MemoryFrame],
                            obj_ptrs: list[tuple[int, torch.Tensor]], max_obj_ptrs: int,
                            cache: dict | None = None) -> torch.Tensor:
        """Fuse the frame's stride-16 features [B, 256, h, w] with memories of past frames
        and object pointers ``(temporal offset, [B, 256])``; ``max_obj_ptrs`` normalises the
        offsets. With neither (the first prompted frame) the no-memory embedding is added.
        ``cache``: the caller's dict (a video session's) where memory attention keeps the
        position-and-slot terms of the memories' keys between frames; None keeps nothing."""
        x = feats.vision_features
        b, c, h, w = x.shape
        if not memories and not obj_ptrs:
            return self.image_embedding(feats)
        cfg = self.config
        frames = [MemoryTokens(m.features.float().flatten(2).transpose(1, 2),  # [B, hw, 64]
                               m.pos.float().flatten(2).transpose(1, 2),
                               self.maskmem_tpos_enc[cfg.num_maskmem - m.t_pos - 1].view(-1), m.cache)
                  for m in memories]
        pointers = None
        if obj_ptrs:
            offsets = torch.tensor([o for o, _ in obj_ptrs], device=x.device)
            ptrs = torch.stack([p for _, p in obj_ptrs], dim=1)  # [B, N, 256]
            if cfg.add_tpos_enc_to_obj_ptrs:
                t_max = max(max_obj_ptrs - 1, 1)
                dim = c if cfg.proj_tpos_enc_in_obj_ptrs else cfg.mem_dim
                ptr_pos = self.obj_ptr_tpos_proj(sine_pe_1d(offsets / t_max, dim))  # [N, 64]
                ptr_pos = ptr_pos.unsqueeze(0).expand(b, -1, -1)
            else:
                ptr_pos = ptrs.new_zeros(b, len(obj_ptrs), cfg.mem_dim)
            split = c // cfg.mem_dim  # each 256-d pointer becomes 4 tokens of 64
            ptrs = ptrs.reshape(b, -1, split, cfg.mem_dim).flatten(1, 2)  # [B, 4N, 64]
            pointers = (ptrs, ptr_pos.repeat_interleave(split, dim=1))
        out = self.memory_attention(
            curr=x.flatten(2).transpose(1, 2),  # [B, hw, 256]
            curr_pos=feats.vision_pos.flatten(2).transpose(1, 2),
            bank=MemoryBank(frames, pointers, cache),
        )
        return out.transpose(1, 2).reshape(b, c, h, w)

    @_precision
    def sam_heads(self, pix_feat: torch.Tensor, high_res: tuple[torch.Tensor, torch.Tensor],
                  points: tuple[torch.Tensor, torch.Tensor] | None, mask_inputs: torch.Tensor | None,
                  multimask_output: bool, dynamic_multimask: bool = True) -> HeadOutput:
        """Decode one mask per object from (memory-conditioned) features [B, 256, h, w].

        points: ([B, N, 2], [B, N]) in model-input pixels or None; mask_inputs: [B, 1, *, *]
        logits (resized to the decoder's mask size when needed). Masks of objects judged
        absent are set to NO_OBJ_SCORE and their pointer to the learned no-object pointer.
        """
        b = pix_feat.shape[0]
        if points is None:  # a padding point keeps the decoder's token layout
            points = (torch.zeros(b, 1, 2, device=pix_feat.device),
                      -torch.ones(b, 1, dtype=torch.int32, device=pix_feat.device))
        if mask_inputs is not None and tuple(mask_inputs.shape[-2:]) != self.sam_prompt_encoder.mask_input_size:
            mask_inputs = F.interpolate(mask_inputs.float(), size=self.sam_prompt_encoder.mask_input_size,
                                        mode="bilinear", align_corners=False, antialias=True)
        out = self.decode_masks(pix_feat, high_res, points, mask_inputs, multimask_output, dynamic_multimask)
        appearing = out.object_score_logits > 0  # [B, 1]
        low_res = torch.where(appearing[:, None, None], out.masks, NO_OBJ_SCORE).float()
        token = out.sam_tokens[:, 0]
        if multimask_output:
            best = torch.argmax(out.iou, dim=-1)
            rows = torch.arange(b, device=pix_feat.device)
            low_res = low_res[rows, best].unsqueeze(1)
            token = out.sam_tokens[rows, best]
        high_res_masks = F.interpolate(low_res, size=(self.image_size, self.image_size),
                                       mode="bilinear", align_corners=False)
        obj_ptr = self._gate_obj_ptr(self.obj_ptr_proj(token), appearing.float())
        return HeadOutput(low_res, high_res_masks, out.iou, obj_ptr, out.object_score_logits)

    @_precision
    def mask_as_output(self, feats: ImageFeatures, mask_inputs: torch.Tensor) -> HeadOutput:
        """Take a binary mask prompt [B, 1, S, S] as the output itself (as SAM 2 does for mask
        prompts); the decoder only supplies the object pointer."""
        mask = mask_inputs.float()
        high_res = mask * 20.0 - 10.0  # logits with sigmoid ~ 0 / 1
        low_res = F.interpolate(high_res, size=(high_res.shape[-2] // 4, high_res.shape[-1] // 4),
                                mode="bilinear", align_corners=False, antialias=True)
        ptr = self.sam_heads(feats.vision_features, feats.high_res, None,
                             self.mask_downsample(mask), False).obj_ptr
        appearing = torch.any(mask.flatten(1) > 0.0, dim=1, keepdim=True).float()
        obj_ptr = self._gate_obj_ptr(ptr, appearing)
        ious = mask.new_ones(mask.shape[0], 1)
        return HeadOutput(low_res, high_res, ious, obj_ptr, 20.0 * appearing - 10.0)

    def _gate_obj_ptr(self, obj_ptr: torch.Tensor, appearing: torch.Tensor) -> torch.Tensor:
        return appearing * obj_ptr + (1 - appearing) * self.no_obj_ptr

    @_precision
    def encode_memory(self, feats: ImageFeatures, high_res_masks: torch.Tensor,
                      object_score_logits: torch.Tensor, binarize: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory of a frame from its features and mask logits [B, 1, S, S]: features
        [B, 64, h, w] and position encoding. ``binarize`` thresholds the mask (used for masks
        that come from clicks) instead of taking its sigmoid."""
        probs = (high_res_masks > 0).float() if binarize else torch.sigmoid(high_res_masks)
        probs = probs * self.config.sigmoid_scale_for_mem_enc + self.config.sigmoid_bias_for_mem_enc
        b = high_res_masks.shape[0]
        pix = feats.vision_features.expand(b, -1, -1, -1)
        mem, pos = self.memory_encoder(pix, probs)
        if self.no_obj_embed_spatial is not None:
            absent = (object_score_logits <= 0).float()[..., None, None]  # [B, 1, 1, 1]
            mem = mem + absent * self.no_obj_embed_spatial[..., None, None]
        return mem, pos
