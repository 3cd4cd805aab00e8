"""Memory encoder: fuses a frame's image features with its predicted mask into a compact
memory (64 channels at stride 16) for later frames to attend to."""

from __future__ import annotations

import torch
from torch import nn

from sam2kit.modeling.common import LayerNorm2d
from sam2kit.modeling.position_encoding import PositionEmbeddingSine


class MaskDownSampler(nn.Module):
    """[B, 1, S, S] mask probabilities -> [B, C, S/16, S/16]: four stride-2 convs (channels x4
    each), LayerNorm and GELU between them, then a 1x1 projection."""

    def __init__(self, embed_dim: int = 256, num_layers: int = 4):
        super().__init__()
        self.encoder = nn.Sequential()
        cin = 1
        for _ in range(num_layers):
            cout = cin * 4
            self.encoder.append(nn.Conv2d(cin, cout, kernel_size=3, stride=2, padding=1))
            self.encoder.append(LayerNorm2d(cout))
            self.encoder.append(nn.GELU())
            cin = cout
        self.encoder.append(nn.Conv2d(cin, embed_dim, kernel_size=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


class CXBlock(nn.Module):
    """ConvNeXt block: depthwise 7x7 conv, LayerNorm, MLP x4 with GELU, layer scale, residual."""

    def __init__(self, dim: int = 256, kernel_size: int = 7, padding: int = 3):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=kernel_size, padding=padding, groups=dim)
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)  # [B, H, W, C]
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(y)))
        return x + y.permute(0, 3, 1, 2)


class Fuser(nn.Module):
    def __init__(self, dim: int = 256, num_layers: int = 2):
        super().__init__()
        self.layers = nn.ModuleList(CXBlock(dim) for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    def __init__(self, out_dim: int = 64, in_dim: int = 256):
        super().__init__()
        self.mask_downsampler = MaskDownSampler(in_dim)
        self.pix_feat_proj = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.fuser = Fuser(in_dim)
        self.position_encoding = PositionEmbeddingSine(out_dim)
        self.out_proj = nn.Conv2d(in_dim, out_dim, kernel_size=1)

    def forward(self, pix_feat: torch.Tensor, mask_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pix_feat: [B, 256, h, w] image features; mask_probs: [B, 1, 16h, 16w] in [0, 1]
        (already passed through the scaled sigmoid). Returns memory [B, 64, h, w] and its
        position encoding."""
        x = self.pix_feat_proj(pix_feat) + self.mask_downsampler(mask_probs)
        x = self.out_proj(self.fuser(x))
        return x, self.position_encoding(x)
