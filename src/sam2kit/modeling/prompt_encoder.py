"""Prompt encoder: points, box corners and mask inputs to sparse and dense embeddings."""

from __future__ import annotations

import torch
from torch import nn

from sam2kit.modeling.common import LayerNorm2d, WeightCache
from sam2kit.modeling.position_encoding import PositionEmbeddingRandom

# point labels: 0 background, 1 foreground, 2 / 3 box corners, -1 padding (not a point)
LABEL_PAD = -1


class PromptEncoder(nn.Module):
    """Encodes prompts for the mask decoder.

    ``image_embedding_size`` is the (h, w) of the image embedding (S/16), ``input_image_size``
    the (H, W) of the model input (S). Points are (x, y) in input pixels.
    """

    def __init__(self, embed_dim: int, image_embedding_size: tuple[int, int],
                 input_image_size: tuple[int, int], mask_in_chans: int = 16):
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = input_image_size
        self.image_embedding_size = image_embedding_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        # 0: background point, 1: foreground point, 2/3: box corners
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)
        self._consts = WeightCache(max_entries=2)

    def get_dense_pe(self) -> torch.Tensor:
        """Position encoding of the image embedding grid: [1, C, h, w].

        Computed once per weights (``WeightCache``): loading new weights or moving the module
        recomputes it."""
        return self._consts.get(("dense_pe",), (self.pe_layer.positional_encoding_gaussian_matrix,),
                                lambda: self.pe_layer(self.image_embedding_size).unsqueeze(0))

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        points = points + 0.5  # centre of the pixel
        if pad:
            points = torch.cat([points, points.new_zeros(points.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, -labels.new_ones(labels.shape[0], 1)], dim=1)
        emb = self.pe_layer.forward_with_coords(points, self.input_image_size)  # [B, N, C]
        lab = labels.unsqueeze(-1)
        emb = torch.where(lab == LABEL_PAD, torch.zeros_like(emb) + self.not_a_point_embed.weight, emb)
        for value in range(4):
            emb = torch.where(lab == value, emb + self.point_embeddings[value].weight, emb)
        return emb

    def forward(self, points: tuple[torch.Tensor, torch.Tensor] | None,
                masks: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """points: ([B, N, 2] float (x, y) in input pixels, [B, N] int labels) or None; boxes
        are passed as two points labelled 2 and 3. masks: [B, 1, 4h, 4w] logits or None.

        Returns sparse [B, N(+1), C] and dense [B, C, h, w] embeddings. Point prompts get a
        padding point appended (SAM 2 always encodes boxes as labelled points).
        """
        bs = points[0].shape[0] if points is not None else (masks.shape[0] if masks is not None else 1)
        if points is not None:
            sparse = self._embed_points(points[0], points[1], pad=True)
        else:
            sparse = torch.empty((bs, 0, self.embed_dim), device=self.no_mask_embed.weight.device)
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(bs, -1, *self.image_embedding_size)
        return sparse, dense
