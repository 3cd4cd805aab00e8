"""Mask decoder: two-way transformer over image and prompt tokens, then mask, IoU and
object-score heads. SAM 2 adds the object-score token and high-resolution skip features."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sam2kit.kernels import tuning
from sam2kit.modeling.common import MLP, LayerNorm2d
from sam2kit.modeling.transformer import TwoWayTransformer


def _deconv2x2(x: torch.Tensor, conv: nn.ConvTranspose2d) -> torch.Tensor:
    """ConvTranspose2d(kernel 2, stride 2) of a channels-last map [B, H, W, Cin] ->
    [B, 2H, 2W, Cout], as one matrix product."""
    b, h, w, cin = x.shape
    cout = conv.out_channels
    weight = conv.weight.reshape(cin, cout * 4)  # [Cin, Cout, 2, 2] -> [Cin, Cout*4]
    y = (x.reshape(-1, cin) @ weight).view(b, h, w, cout, 2, 2)
    y = y.permute(0, 1, 4, 2, 5, 3).reshape(b, 2 * h, 2 * w, cout)
    return y + conv.bias


# prompts decoded per pass on a CPU by default (tiny at 1024 on a Xeon: 29 ms a prompt in passes
# of 1-2, 53 ms in one pass of 64); the tuning choice "prompts_per_pass" measures it per machine
CPU_CHUNK = 2


@dataclass
class DecoderOutput:
    """masks: [B, M, 4h, 4w] low-res logits; iou: [B, M]; sam_tokens: [B, M', C] output
    tokens for object pointers; object_score_logits: [B, 1] (>0: object present)."""

    masks: torch.Tensor
    iou: torch.Tensor
    sam_tokens: torch.Tensor
    object_score_logits: torch.Tensor


class MaskDecoder(nn.Module):
    def __init__(self, transformer_dim: int = 256, num_multimask_outputs: int = 3,
                 iou_head_depth: int = 3, iou_head_hidden_dim: int = 256,
                 dynamic_multimask_stability_delta: float = 0.05,
                 dynamic_multimask_stability_thresh: float = 0.98):
        super().__init__()
        c = transformer_dim
        self.transformer = TwoWayTransformer(depth=2, embedding_dim=c, num_heads=8, mlp_dim=2048)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, c)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, c)
        self.obj_score_token = nn.Embedding(1, c)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(c, c // 4, kernel_size=2, stride=2),
            LayerNorm2d(c // 4),
            nn.GELU(),
            nn.ConvTranspose2d(c // 4, c // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.conv_s0 = nn.Conv2d(c, c // 8, kernel_size=1)  # stride-4 skip features
        self.conv_s1 = nn.Conv2d(c, c // 4, kernel_size=1)  # stride-8 skip features
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(c, c, c // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(c, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth,
                                       sigmoid_output=True)
        self.pred_obj_score_head = MLP(c, c, 1, 3)
        self.stability_delta = dynamic_multimask_stability_delta
        self.stability_thresh = dynamic_multimask_stability_thresh

    def forward(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor,
                sparse_prompt_embeddings: torch.Tensor, dense_prompt_embeddings: torch.Tensor,
                multimask_output: bool, repeat_image: bool,
                high_res_features: list[torch.Tensor], dynamic_multimask: bool = True,
                per_pass: int | None = None) -> DecoderOutput:
        """image_embeddings: [B or 1, C, h, w]; image_pe: [1, C, h, w]; sparse: [B, N, C];
        dense: [B, C, h, w]; high_res_features: [B or 1, C/8, 4h, 4w] and [B or 1, C/4, 2h, 2w].
        With ``repeat_image`` one image serves every prompt in the batch.

        multimask_output=True returns the three multimask outputs; otherwise one mask: the
        single-mask output when it is stable, else the best multimask output (the reference's
        dynamic_multimask_via_stability, on in its predictors); with ``dynamic_multimask``
        False, always the single-mask output (the reference built with
        apply_postprocessing=False, as its VOS evaluation does).
        """
        b = sparse_prompt_embeddings.shape[0]
        if per_pass is None and image_embeddings.device.type == "cpu" and b > 1:
            per_pass = int(tuning.choose("prompts_per_pass"))
        if image_embeddings.device.type == "cpu" and b > (per_pass or b):
            # on a CPU, many prompts at once run slower per prompt than a few (every prompt
            # carries its own copy of the image tokens through the transformer: memory traffic)
            parts = []
            for i in range(0, b, per_pass):
                take = slice(i, i + per_pass)
                own = [x if x.shape[0] != b else x[take] for x in [image_embeddings, *high_res_features]]
                parts.append(self._predict(own[0], image_pe, sparse_prompt_embeddings[take],
                                           dense_prompt_embeddings[take], repeat_image, own[1:]))
            masks, iou, tokens, obj = (torch.cat(x) for x in zip(*parts))
        else:
            masks, iou, tokens, obj = self._predict(image_embeddings, image_pe, sparse_prompt_embeddings,
                                                    dense_prompt_embeddings, repeat_image, high_res_features)
        if multimask_output:
            return DecoderOutput(masks[:, 1:], iou[:, 1:], tokens[:, 1:], obj)
        if dynamic_multimask:
            masks, iou = self._dynamic_multimask(masks, iou)
        else:
            masks, iou = masks[:, 0:1], iou[:, 0:1]
        return DecoderOutput(masks, iou, tokens[:, 0:1], obj)

    def _predict(self, image_embeddings, image_pe, sparse, dense, repeat_image, high_res_features):
        output_tokens = torch.cat(
            [self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight], dim=0
        )
        b = sparse.shape[0]
        tokens = torch.cat((output_tokens.unsqueeze(0).expand(b, -1, -1), sparse), dim=1)
        feat_s0, feat_s1 = high_res_features
        if image_embeddings.shape[0] != b:  # one image serves a batch of prompts
            image_embeddings = image_embeddings.expand(b, -1, -1, -1)
            feat_s0 = feat_s0.expand(b, -1, -1, -1)
            feat_s1 = feat_s1.expand(b, -1, -1, -1)
        src = image_embeddings + dense
        pos_src = image_pe.expand(b, -1, -1, -1)
        _, c, h, w = src.shape

        hs, src = self.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, 1, :]
        mask_tokens_out = hs[:, 2: 2 + self.num_mask_tokens, :]

        up = self._upscale(src, h, w, feat_s1, feat_s0)  # [B, 4h, 4w, C/8] channels last
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )  # [B, M, C/8]
        hu, wu = up.shape[1:3]
        masks = (up.reshape(b, hu * wu, -1) @ hyper_in.transpose(1, 2)).transpose(1, 2).reshape(b, -1, hu, wu)
        iou = self.iou_prediction_head(iou_token_out)
        obj = self.pred_obj_score_head(hs[:, 0, :])
        return masks, iou, mask_tokens_out, obj

    def _upscale(self, src: torch.Tensor, h: int, w: int, feat_s1: torch.Tensor,
                 feat_s0: torch.Tensor) -> torch.Tensor:
        """The output upscaling on image tokens [B, h*w, C], kept channels-last: each
        2x2-stride-2 transposed convolution is one matrix product (every input pixel
        writes its own 2x2 output block), far faster on the CPU than the convolution
        kernel; the layer norm runs over the last axis. Returns [B, 4h, 4w, C/8]."""
        dc1, ln1, act1, dc2, act2 = self.output_upscaling
        x = _deconv2x2(src.reshape(-1, h, w, src.shape[-1]), dc1)
        x = x + feat_s1.permute(0, 2, 3, 1)
        x = act1(F.layer_norm(x, ln1.normalized_shape, ln1.weight, ln1.bias, ln1.eps))
        x = _deconv2x2(x, dc2) + feat_s0.permute(0, 2, 3, 1)
        return act2(x)

    def stability_scores(self, mask_logits: torch.Tensor) -> torch.Tensor:
        """IoU between the masks thresholded at +delta and -delta: [..., H, W] -> [...]."""
        flat = mask_logits.flatten(-2)
        inter = torch.sum(flat > self.stability_delta, dim=-1).float()
        union = torch.sum(flat > -self.stability_delta, dim=-1).float()
        return torch.where(union > 0, inter / union, 1.0)

    def _dynamic_multimask(self, masks: torch.Tensor, iou: torch.Tensor):
        """Keep the single-mask output where it is stable; else the best multimask output."""
        multi_iou = iou[:, 1:]
        best = torch.argmax(multi_iou, dim=-1)
        rows = torch.arange(masks.shape[0], device=masks.device)
        best_masks = masks[:, 1:][rows, best].unsqueeze(1)
        best_iou = multi_iou[rows, best].unsqueeze(1)
        single_masks, single_iou = masks[:, 0:1], iou[:, 0:1]
        stable = self.stability_scores(single_masks) >= self.stability_thresh  # [B, 1]
        out_masks = torch.where(stable[..., None, None], single_masks, best_masks)
        out_iou = torch.where(stable, single_iou, best_iou)
        return out_masks, out_iou


# ---- the kernel choice (sam2kit.kernels.tuning) ----------------------------------------

@tuning.register("prompts_per_pass", ("2", "1", "4"),
          "prompts decoded per pass of the mask decoder on a CPU (each carries its own copy of the "
          "image tokens through the two-way transformer)")
def _bench_prompts_per_pass():
    torch.manual_seed(0)
    dec = MaskDecoder(256)
    image, pe = torch.randn(1, 256, 64, 64), torch.randn(1, 256, 64, 64)
    sparse, dense = torch.randn(4, 2, 256), torch.randn(1, 256, 64, 64).expand(4, -1, -1, -1)
    high = [torch.randn(1, 32, 256, 256), torch.randn(1, 64, 128, 128)]

    def run(n):
        return lambda: dec(image, pe, sparse, dense, True, True, high, per_pass=int(n))
    return {c: run(c) for c in tuning.CHOICES["prompts_per_pass"].candidates}
