"""OnnxImagePredictor: SAM2ImagePredictor's calls and returns on an exported model, with ONNX
Runtime and NumPy only."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sam2kit.image.arrays import as_rgb_array, check_points, predict_many
from sam2kit.onnx import arrays
from sam2kit.onnx.model import Features, OnnxSAM2


class OnnxImagePredictor:
    """``set_image`` / ``set_image_batch``, then ``predict`` / ``predict_many`` / ``predict_batch`` as
    ``SAM2ImagePredictor`` (masks CxHxW float32 0/1 or logits, scores C, low-res logits
    Cx(S/4)x(S/4)). folder: what ``sam2kit export`` wrote; providers: ONNX Runtime execution
    providers (None: CPU). Masks are logits > mask_threshold; max_hole_area /
    max_sprinkle_area as in SAM2ImagePredictor."""

    def __init__(self, folder: str | Path | OnnxSAM2, providers: list | None = None,
                 mask_threshold: float = 0.0, max_hole_area: float = 0.0, max_sprinkle_area: float = 0.0):
        self.model = folder if isinstance(folder, OnnxSAM2) else OnnxSAM2(folder, providers)
        self.mask_threshold = mask_threshold
        self.max_hole_area = max_hole_area
        self.max_sprinkle_area = max_sprinkle_area
        self.reset_predictor()

    def reset_predictor(self) -> None:
        self._features: list[Features] = []
        self._orig_hw: list[tuple[int, int]] = []
        self._is_batch = False

    @property
    def _is_image_set(self) -> bool:
        return bool(self._features)

    def set_image(self, image) -> None:
        """Embed one image: an HxWx3 uint8 RGB numpy array or a PIL image."""
        self.reset_predictor()
        self._embed([as_rgb_array(image)])

    def set_image_batch(self, image_list: list) -> None:
        """Embed several images (each HxWx3 uint8 RGB) for ``predict_batch``."""
        self.reset_predictor()
        if not isinstance(image_list, (list, tuple)) or not image_list:
            raise ValueError("image_list must be a non-empty list of HxWx3 uint8 images")
        self._embed([as_rgb_array(img, f"image_list[{i}]") for i, img in enumerate(image_list)])
        self._is_batch = True

    def _embed(self, images: list[np.ndarray]) -> None:
        m = self.model
        for img in images:
            self._features.append(m.encode(arrays.preprocess_image(img, m.image_size, m.mean, m.std)))
            self._orig_hw.append(img.shape[:2])

    def get_image_embedding(self) -> np.ndarray:
        """[1, 256, S/16, S/16] the embedding the decoder reads (features + no-memory token)."""
        self._require_image("to get the embedding")
        return self._features[0].image_embed

    def predict(self, point_coords=None, point_labels=None, box=None, mask_input=None,
                multimask_output: bool = True, return_logits: bool = False, normalize_coords: bool = True):
        """As ``SAM2ImagePredictor.predict``: point_coords Nx2 (x, y) pixels (or BxNx2),
        point_labels N (1 fg, 0 bg), box XYXY (4 or Bx4), mask_input 1x(S/4)x(S/4) low-res
        logits. Returns (masks, scores, low_res_logits) float32 arrays."""
        if self._is_batch:
            raise RuntimeError("images were set with set_image_batch(...); use predict_batch(...)")
        self._require_image("before mask prediction")
        return self._predict(0, point_coords, point_labels, box, mask_input, multimask_output,
                             return_logits, normalize_coords)

    def predict_many(self, prompts, multimask_output: bool = True, return_logits: bool = False,
                     batch_size: int = 16, progress=None) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """As ``SAM2ImagePredictor.predict_many``: each of many prompts (mappings or objects with
        ``points``, ``labels``, ``box``) of the set image, those of one shape decoded together
        ``batch_size`` at a time. Returns one (masks, scores, low_res_logits) per prompt."""
        if self._is_batch:
            raise RuntimeError("images were set with set_image_batch(...); use predict_batch(...)")
        self._require_image("before mask prediction")
        return predict_many(
            lambda coords, labels, box: self._predict(0, coords, labels, box, None, multimask_output,
                                                      return_logits, True),
            prompts, batch_size, progress)

    def predict_batch(self, point_coords_batch=None, point_labels_batch=None, box_batch=None,
                      mask_input_batch=None, multimask_output: bool = True, return_logits: bool = False,
                      normalize_coords: bool = True):
        """One prompt (or batch of prompts) per image set with set_image_batch: lists of
        masks, scores and low-res logits."""
        if not self._is_batch:
            raise RuntimeError("predict_batch needs images set with set_image_batch(...)")
        n = len(self._features)

        def pick(x, i):
            return None if x is None else x[i]
        out = [self._predict(i, pick(point_coords_batch, i), pick(point_labels_batch, i), pick(box_batch, i),
                             pick(mask_input_batch, i), multimask_output, return_logits, normalize_coords)
               for i in range(n)]
        return [o[0] for o in out], [o[1] for o in out], [o[2] for o in out]

    def _predict(self, idx, point_coords, point_labels, box, mask_input, multimask_output, return_logits,
                 normalize_coords):
        coords, labels, mask = self._prompts(idx, point_coords, point_labels, box, mask_input, normalize_coords)
        f = self._features[idx]
        masks, iou, single, single_iou, _, _ = self.model.decode(f.image_embed, f.high_res, coords, labels, mask)
        low, scores = (masks[:, 1:], iou[:, 1:]) if multimask_output else (single, single_iou)
        cleaned = arrays.fill_holes_and_remove_sprinkles(low, self.mask_threshold, self.max_hole_area,
                                                         self.max_sprinkle_area)
        full = arrays.resize(cleaned, self._orig_hw[idx])
        if not return_logits:
            full = (full > self.mask_threshold).astype(np.float32)
        low = np.clip(low, -32.0, 32.0)
        if coords.shape[0] == 1:  # one prompt: no leading batch axis, as SAM2ImagePredictor
            return full[0], scores[0], low[0]
        return full, scores, low

    def _prompts(self, idx, point_coords, point_labels, box, mask_input, normalize_coords):
        """(coords [B, N, 2] model-input pixels with box corners first and the padding point
        appended when there are points, labels [B, N] int32, mask_input [B, 1, h, w] or None)."""
        h, w = self._orig_hw[idx]
        size = np.float32(self.model.image_size)
        scale = np.array([w, h], np.float32) if normalize_coords else np.ones(2, np.float32)
        parts_c, parts_l = [], []
        if box is not None:
            b = np.asarray(box, dtype=np.float32)
            if b.shape[-1:] != (4,) or b.ndim > 2:
                raise ValueError(f"box must be XYXY with shape (4,) or (B, 4), got {b.shape}")
            if not np.all(np.isfinite(b)):
                raise ValueError("box contains NaN or infinite values; give finite pixel coordinates")
            corners = b.reshape(-1, 2, 2)
            parts_c.append(corners / scale * size)
            parts_l.append(np.tile(np.array([[2, 3]], np.int32), (corners.shape[0], 1)))
        if point_coords is not None or point_labels is not None:
            c, lab = check_points(point_coords, point_labels)
            parts_c.append(c / scale * size)
            parts_l.append(lab)
        if len(parts_c) == 2 and parts_c[0].shape[0] != parts_c[1].shape[0]:
            raise ValueError(f"{parts_c[0].shape[0]} boxes but {parts_c[1].shape[0]} point prompts: "
                             "give one box per prompt")
        mask = None
        if mask_input is not None:
            mask = np.asarray(mask_input, dtype=np.float32)
            if not np.all(np.isfinite(mask)):
                raise ValueError("mask_input contains NaN or infinite values: pass the low-res "
                                 "logits of an earlier prediction")
            mask = mask[None] if mask.ndim == 3 else mask
            s4 = self.model.image_size // 4
            if mask.ndim != 4 or mask.shape[1:] != (1, s4, s4):
                raise ValueError(f"mask_input must have shape 1x{s4}x{s4} (or Bx1x{s4}x{s4}): the "
                                 f"low-res logits of an earlier prediction; got {mask.shape}")
        if parts_c:
            coords = np.concatenate(parts_c, 1).astype(np.float32)
            labels = np.concatenate(parts_l, 1).astype(np.int32)
            b = coords.shape[0]
            coords = np.concatenate([coords, np.zeros((b, 1, 2), np.float32)], 1)  # the padding point
            labels = np.concatenate([labels, -np.ones((b, 1), np.int32)], 1)
        else:
            b = 1 if mask is None else mask.shape[0]
            coords, labels = np.zeros((b, 0, 2), np.float32), np.zeros((b, 0), np.int32)
        if mask is not None and mask.shape[0] != b:
            if mask.shape[0] != 1:
                raise ValueError("mask_input and point/box prompts have different batch sizes")
            mask = np.repeat(mask, b, axis=0)
        return coords, labels, mask

    def _require_image(self, what: str) -> None:
        if not self._is_image_set:
            raise RuntimeError(f"An image must be set with .set_image(...) {what}.")
