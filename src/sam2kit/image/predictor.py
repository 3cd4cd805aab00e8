"""SAM2ImagePredictor: embed an image once, then predict masks from prompts repeatedly.

A drop-in for the reference's ``sam2.sam2_image_predictor.SAM2ImagePredictor``: the same
methods, arguments, shapes and dtypes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sam2kit.build import FromPretrained
from sam2kit.modeling.sam2 import ImageFeatures, SAM2Model
from sam2kit.image.postprocess import fill_holes_and_remove_sprinkles
from sam2kit.image.arrays import check_points as _check_points
from sam2kit.image.arrays import predict_many as _predict_many
from sam2kit.image.transforms import as_rgb_array, preprocess, resize_masks


@dataclass
class ImageEmbedding:
    """A set image (or batch) as the decoder reads it: the encoder's features, the embedding
    [B, 256, S/16, S/16] (features with the no-memory token added) and each image's original
    (H, W). Keep one to prompt the same picture again later without re-encoding it
    (``SAM2ImagePredictor.set_embedding``); it is only read, so several predictors may share it."""

    features: ImageFeatures
    image_embed: torch.Tensor
    orig_hw: list[tuple[int, int]]

    @property
    def nbytes(self) -> int:
        ts = [self.image_embed, self.features.vision_features, self.features.vision_pos, *self.features.high_res]
        return sum(t.numel() * t.element_size() for t in ts)


class SAM2ImagePredictor(FromPretrained):
    """Embed an image once (``set_image``), then predict masks from prompts (``predict``,
    ``predict_many``). ``SAM2ImagePredictor.from_pretrained(model_id, device=, image_size=,
    revision=, checkpoint=, precision=, compile=, quantize=, backend=)`` loads a model (``load_model``).
    Several predictors may share one model, in one thread each."""

    def __init__(self, sam_model: SAM2Model, mask_threshold: float = 0.0,
                 max_hole_area: float = 0.0, max_sprinkle_area: float = 0.0):
        """sam_model: a SAM2Model (``sam2kit.build_sam2``). Masks are logits > mask_threshold.
        max_hole_area / max_sprinkle_area > 0 fill holes / remove islands up to that area
        (in low-res mask pixels) before upscaling."""
        self.model = sam_model
        self.mask_threshold = mask_threshold
        self.max_hole_area = max_hole_area
        self.max_sprinkle_area = max_sprinkle_area
        self.reset_predictor()

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ---- images ------------------------------------------------------------------------

    @torch.inference_mode()
    def set_image(self, image) -> None:
        """Embed one image: an HxWx3 uint8 RGB numpy array or a PIL image."""
        self.reset_predictor()
        arr = as_rgb_array(image)
        self._set_features([arr])

    @torch.inference_mode()
    def set_image_batch(self, image_list: list) -> None:
        """Embed several images (HxWx3 uint8 RGB arrays, any sizes) for ``predict_batch``."""
        self.reset_predictor()
        if not isinstance(image_list, (list, tuple)) or not image_list:
            raise ValueError("image_list must be a non-empty list of HxWx3 uint8 RGB arrays")
        arrays = [as_rgb_array(img, f"image_list[{i}]") for i, img in enumerate(image_list)]
        self._set_features(arrays)
        self._is_batch = True

    def _set_features(self, arrays: list[np.ndarray]) -> None:
        m = self.model
        batch = preprocess(arrays, m.image_size, m.pixel_mean, m.pixel_std, self.device)
        feats = m.encode_image(batch)
        self._features = feats
        self._image_embed = m.image_embedding(feats)
        self._orig_hw = [tuple(a.shape[:2]) for a in arrays]
        self._is_image_set = True

    @property
    def embedding(self) -> ImageEmbedding:
        """The set image's features, embedding and size, to keep and ``set_embedding`` later."""
        self._require_image("to read its embedding")
        return ImageEmbedding(self._features, self._image_embed, list(self._orig_hw))

    def set_embedding(self, embedding: ImageEmbedding) -> None:
        """Use an image embedded earlier (``predictor.embedding``, maybe of another predictor on
        the same model) instead of encoding it again."""
        if not isinstance(embedding, ImageEmbedding):
            raise TypeError(f"expected an ImageEmbedding (predictor.embedding), got {type(embedding).__name__}")
        self.reset_predictor()
        self._features, self._image_embed = embedding.features, embedding.image_embed
        self._orig_hw = list(embedding.orig_hw)
        self._is_batch = len(self._orig_hw) > 1
        self._is_image_set = True

    def get_image_embedding(self) -> torch.Tensor:
        """The image embedding [B, 256, S/16, S/16] of the set image(s)."""
        self._require_image("to generate an embedding")
        return self._image_embed

    @property
    def features(self) -> ImageFeatures:
        self._require_image("to read its features")
        return self._features

    def reset_predictor(self) -> None:
        self._is_image_set = False
        self._features: ImageFeatures | None = None
        self._image_embed: torch.Tensor | None = None
        self._orig_hw: list[tuple[int, int]] | None = None
        self._is_batch = False

    # ---- prediction --------------------------------------------------------------------

    def predict(self, point_coords=None, point_labels=None, box=None, mask_input=None,
                multimask_output: bool = True, return_logits: bool = False,
                normalize_coords: bool = True):
        """Predict masks for the set image.

        point_coords: Nx2 (x, y) in image pixels (or BxNx2 for B prompts at once);
        point_labels: N (or BxN), 1 foreground, 0 background; box: XYXY, 4 (or Bx4);
        mask_input: 1xhxw (or Bx1xhxw) low-res logits from an earlier call (h = w = S/4, 256
        at the default size). With normalize_coords=False coordinates are already in [0, 1].

        Returns (masks CxHxW, scores C, low_res_logits Cxhxw) as float32 numpy arrays, with a
        leading B for batched prompts; C is 3 with multimask_output, else 1. masks are 0/1,
        or logits with return_logits.
        """
        if self._is_batch:
            raise RuntimeError("images were set with set_image_batch(...); use predict_batch(...)")
        self._require_image("before mask prediction")
        return self._predict_one(0, point_coords, point_labels, box, mask_input,
                                 multimask_output, return_logits, normalize_coords)

    def predict_batch(self, point_coords_batch=None, point_labels_batch=None, box_batch=None,
                      mask_input_batch=None, multimask_output: bool = True,
                      return_logits: bool = False, normalize_coords: bool = True):
        """``predict`` for every image set with ``set_image_batch``: each argument is a list
        with one entry per image (or None). Returns three lists."""
        if not self._is_image_set or not self._is_batch:
            raise RuntimeError("images must be set with .set_image_batch(...) before predict_batch(...)")
        n = len(self._orig_hw)
        args = [point_coords_batch, point_labels_batch, box_batch, mask_input_batch]
        names = ["point_coords_batch", "point_labels_batch", "box_batch", "mask_input_batch"]
        for name, a in zip(names, args):
            if a is not None and len(a) != n:
                raise ValueError(f"{name} has {len(a)} entries for {n} images")
        outs = [self._predict_one(i, *[a[i] if a is not None else None for a in args],
                                  multimask_output, return_logits, normalize_coords) for i in range(n)]
        return [o[0] for o in outs], [o[1] for o in outs], [o[2] for o in outs]

    def predict_many(self, prompts, multimask_output: bool = True, return_logits: bool = False,
                     batch_size: int = 16, progress=None) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Predict each of many prompts of the set image, as ``predict`` would for it alone.

        prompts: a sequence of mappings (or objects) with ``points`` (Nx2 (x, y) image pixels,
        or None/empty), ``labels`` (N: 1 foreground, 0 background) and ``box`` (XYXY or None).
        Prompts of the same shape (a grid's single clicks, several boxes) go through the
        decoder together, ``batch_size`` at a time: the results equal one-at-a-time calls up to
        float rounding. progress: an optional callable(done, total). Returns one (masks CxHxW,
        scores C, low_res_logits Cxhxw) per prompt, in order.
        """
        if self._is_batch:
            raise RuntimeError("images were set with set_image_batch(...); use predict_batch(...)")
        self._require_image("before mask prediction")
        return _predict_many(
            lambda coords, labels, box: self._predict_one(0, coords, labels, box, None, multimask_output,
                                                          return_logits, True),
            prompts, batch_size, progress)

    @torch.inference_mode()
    def _predict_one(self, img_idx, point_coords, point_labels, box, mask_input,
                     multimask_output, return_logits, normalize_coords):
        points, mask = self._prep_prompts(point_coords, point_labels, box, mask_input,
                                          normalize_coords, img_idx)
        masks, iou, low_res = self._predict(points, mask, multimask_output, return_logits, img_idx)
        return (masks.squeeze(0).float().cpu().numpy(), iou.squeeze(0).float().cpu().numpy(),
                low_res.squeeze(0).float().cpu().numpy())

    def _predict(self, points, mask_input, multimask_output, return_logits, img_idx=0):
        """points: ([B, N, 2] model-input pixels, [B, N] labels) or None; returns torch
        masks [B, C, H, W], scores [B, C], low-res logits [B, C, h, w]."""
        m = self.model
        out = m.decode_masks(self._image_embed[img_idx: img_idx + 1],
                             tuple(f[img_idx: img_idx + 1] for f in self._features.high_res),
                             points, mask_input, multimask_output)
        low_res = out.masks
        cleaned = fill_holes_and_remove_sprinkles(low_res, self.mask_threshold, self.max_hole_area,
                                                  self.max_sprinkle_area)
        masks = resize_masks(cleaned, self._orig_hw[img_idx])
        if not return_logits:
            masks = masks > self.mask_threshold
        return masks, out.iou, torch.clamp(low_res, -32.0, 32.0)

    def _prep_prompts(self, point_coords, point_labels, box, mask_input, normalize_coords, img_idx):
        """Validate prompts and turn them into model-input tensors: box corners (labels 2, 3)
        come first, then points; returns (points or None, mask_input or None)."""
        dev = self.device
        h, w = self._orig_hw[img_idx]
        size = self.model.image_size
        points = None
        if point_coords is not None or point_labels is not None:
            coords, labels = _check_points(point_coords, point_labels)
            coords = torch.as_tensor(coords, dtype=torch.float, device=dev)
            points = (_to_input_frame(coords, normalize_coords, h, w, size),
                      torch.as_tensor(labels, dtype=torch.int, device=dev))
        if box is not None:
            b = np.asarray(box, dtype=np.float32)
            if b.shape[-1:] != (4,) or b.ndim > 2:
                raise ValueError(f"box must be XYXY with shape (4,) or (B, 4), got {b.shape}")
            if not np.all(np.isfinite(b)):
                raise ValueError("box contains NaN or infinite values; give finite pixel coordinates")
            corners = torch.as_tensor(b, device=dev).reshape(-1, 2, 2)
            corners = _to_input_frame(corners, normalize_coords, h, w, size)
            corner_labels = torch.tensor([[2, 3]], dtype=torch.int, device=dev).repeat(corners.shape[0], 1)
            if points is not None:
                if points[0].shape[0] != corners.shape[0]:
                    raise ValueError(f"{corners.shape[0]} boxes but {points[0].shape[0]} point prompts: "
                                     "give one box per prompt")
                points = (torch.cat([corners, points[0]], 1), torch.cat([corner_labels, points[1]], 1))
            else:
                points = (corners, corner_labels)
        mask = None
        if mask_input is not None:
            mask = torch.as_tensor(np.asarray(mask_input), dtype=torch.float, device=dev)
            if not torch.isfinite(mask).all():
                raise ValueError("mask_input contains NaN or infinite values: pass the low-res "
                                 "logits of an earlier prediction")
            if mask.ndim == 3:
                mask = mask[None]
            expect = self.model.sam_prompt_encoder.mask_input_size
            if mask.ndim != 4 or mask.shape[1] != 1 or tuple(mask.shape[2:]) != expect:
                raise ValueError(f"mask_input must have shape 1x{expect[0]}x{expect[1]} (or Bx1x"
                                 f"{expect[0]}x{expect[1]}): the low-res logits of an earlier "
                                 f"prediction; got {tuple(mask.shape)}")
            if points is not None and mask.shape[0] not in (1, points[0].shape[0]):
                raise ValueError("mask_input and point/box prompts have different batch sizes")
            if points is not None and mask.shape[0] == 1 and points[0].shape[0] > 1:
                mask = mask.expand(points[0].shape[0], -1, -1, -1)
        return points, mask

    def _require_image(self, what: str) -> None:
        if not self._is_image_set:
            raise RuntimeError(f"An image must be set with .set_image(...) {what}.")


def _to_input_frame(coords: torch.Tensor, normalize: bool, h: int, w: int, size: int) -> torch.Tensor:
    """(x, y) in image pixels (or in [0, 1] when not normalize) -> model-input pixels."""
    if normalize:
        coords = coords.clone()
        coords[..., 0] = coords[..., 0] / w
        coords[..., 1] = coords[..., 1] / h
    return coords * size
