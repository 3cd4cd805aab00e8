"""The SAM 2 model: a stateless container of every part, with tensor-to-tensor methods.

Predictors (image, video) own all state and call only the public methods here. Parameter
and module names equal the official checkpoint keys, so loading is a strict
``load_state_dict`` with no remapping.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..configs import SAM2Config
from .common import MLP
from .hiera import Hiera
from .image_encoder import FpnNeck, ImageEncoder
from .mask_decoder import DecoderOutput, MaskDecoder
from .memory_attention import MemoryAttention
from .memory_encoder import MemoryEncoder
from .prompt_encoder import PromptEncoder

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

    def select(self, idx) -> "ImageFeatures":
        """Rows ``idx`` (an int or a slice/index tensor) of every tensor, keeping the batch dim."""
        if isinstance(idx, int):
            idx = slice(idx, idx + 1)
        return ImageFeatures(self.vision_features[idx], (self.high_res[0][idx], self.high_res[1][idx]),
                             self.vision_pos[idx])


class SAM2Model(nn.Module):
    def __init__(self, config: SAM2Config):
        super().__init__()
        self.config = config
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

    def encode_image(self, images: torch.Tensor) -> ImageFeatures:
        """images: [B, 3, S, S] float, normalised with PIXEL_MEAN / PIXEL_STD."""
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

    def decode_masks(self, image_embed: torch.Tensor, high_res: tuple[torch.Tensor, torch.Tensor],
                     points: tuple[torch.Tensor, torch.Tensor] | None, mask_input: torch.Tensor | None,
                     multimask_output: bool) -> DecoderOutput:
        """Prompt the decoder.

        image_embed: [1 or B, 256, h, w]; points: ([B, N, 2] (x, y) in model-input pixels,
        [B, N] labels: 1 foreground, 0 background, 2/3 box corners, -1 padding);
        mask_input: [B, 1, 4h, 4w] logits. Returns low-res logits [B, M, 4h, 4w], IoU [B, M],
        output tokens and object-score logits [B, 1].
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
        )

    def materialize_constants(self) -> None:
        """Recreate the non-persistent constant buffers (after building on the meta device)."""
        device = self.no_mem_embed.device
        self.pixel_mean = torch.tensor(PIXEL_MEAN, device=device).view(1, 3, 1, 1)
        self.pixel_std = torch.tensor(PIXEL_STD, device=device).view(1, 3, 1, 1)
