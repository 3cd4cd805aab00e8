"""SAM2AutomaticMaskGenerator: segment everything in an image from a grid of point prompts.

A drop-in for the reference's ``sam2.automatic_mask_generator.SAM2AutomaticMaskGenerator``:
the same parameters, defaults and records, and the same masks and scores. Each grid point is
a single foreground click; its candidate masks are filtered by predicted IoU and stability
score, cut-off masks at crop edges are dropped, duplicates removed with box NMS (within a crop,
then between crops, preferring smaller crops).

Where it differs from the reference in how (never in what): the decoder's low-res masks are
filtered by predicted IoU before they are upscaled (upscaling is per mask, so the survivors'
logits are the same), the upscaled logits are thresholded and run-length encoded a few masks at
a time, so a batch never holds more than a few full-size float masks; NMS and RLE need neither
torchvision nor pycocotools.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from sam2kit.image import amg
from sam2kit.build import FromPretrained
from sam2kit.modeling.sam2 import SAM2Model
from sam2kit.image.postprocess import fill_holes_and_remove_sprinkles
from sam2kit.image.predictor import SAM2ImagePredictor
from sam2kit.image.transforms import as_rgb_array

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")
UPSCALE_CHUNK = 16  # full-size float masks in memory at once


@dataclass
class MaskData:
    """The surviving masks of a crop or image, N of them: RLE counts (column-major, of the
    full image), XYXY inclusive boxes [N, 4] int64, predicted IoU [N], stability [N], points
    [N, 2] (x, y) in image pixels (float32), crop boxes [N, 4] XYXY int64."""
    rles: list = field(default_factory=list)
    boxes: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 4, dtype=torch.long))
    iou_preds: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    stability: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    points: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 2))
    crop_boxes: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 4, dtype=torch.long))

    def select(self, idx: torch.Tensor) -> "MaskData":
        idx = torch.as_tensor(idx).cpu()
        if idx.dtype == torch.bool:
            idx = idx.nonzero().flatten()
        return MaskData([self.rles[i] for i in idx.tolist()], self.boxes[idx], self.iou_preds[idx],
                        self.stability[idx], self.points[idx], self.crop_boxes[idx])

    @staticmethod
    def cat(parts: list["MaskData"]) -> "MaskData":
        if not parts:
            return MaskData()
        return MaskData([r for p in parts for r in p.rles], torch.cat([p.boxes for p in parts]),
                        torch.cat([p.iou_preds for p in parts]), torch.cat([p.stability for p in parts]),
                        torch.cat([p.points for p in parts]), torch.cat([p.crop_boxes for p in parts]))


class SAM2AutomaticMaskGenerator(FromPretrained):
    def __init__(self, model: SAM2Model, points_per_side: int | None = 32, points_per_batch: int = 64,
                 pred_iou_thresh: float = 0.8, stability_score_thresh: float = 0.95,
                 stability_score_offset: float = 1.0, mask_threshold: float = 0.0,
                 box_nms_thresh: float = 0.7, crop_n_layers: int = 0, crop_nms_thresh: float = 0.7,
                 crop_overlap_ratio: float = 512 / 1500, crop_n_points_downscale_factor: int = 1,
                 point_grids: list[np.ndarray] | None = None, min_mask_region_area: int = 0,
                 output_mode: str = "binary_mask", use_m2m: bool = False,
                 multimask_output: bool = True) -> None:
        """model: a SAM2Model (``sam2kit.build_sam2``).

        points_per_side: an n x n grid of single-click prompts (or None with ``point_grids``:
        one [K, 2] array of (x, y) in [0, 1] per crop layer); points_per_batch: prompts decoded
        at once. A candidate mask is kept if its predicted IoU > pred_iou_thresh and its
        stability score (IoU of the masks at mask_threshold +- stability_score_offset) >=
        stability_score_thresh (0 turns a filter off). box_nms_thresh / crop_nms_thresh: box
        IoU above which the lower-scored of two masks goes, within a crop / between crops.
        crop_n_layers: layer i adds (2**i)**2 overlapping crops (overlap crop_overlap_ratio of
        the short side in layer 1), with points_per_side / crop_n_points_downscale_factor**i
        points a side. min_mask_region_area > 0: holes and islands of up to that many pixels of
        the low-res (256x256) mask are filled / removed before upscaling, as the reference's
        predictor does. output_mode: "binary_mask" (HxW bool), "uncompressed_rle" or
        "coco_rle" (the COCO compressed string). use_m2m: refine each candidate once, feeding
        its low-res mask back with its point. multimask_output: three candidates per point.
        """
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("exactly one of points_per_side or point_grids must be given")
        if points_per_side is not None:
            if int(points_per_side) < 1:
                raise ValueError(f"points_per_side must be at least 1, got {points_per_side}")
            if int(crop_n_layers) < 0:
                raise ValueError(f"crop_n_layers must be 0 or more, got {crop_n_layers}")
            if int(crop_n_points_downscale_factor) < 1:
                raise ValueError("crop_n_points_downscale_factor must be at least 1, got "
                                 f"{crop_n_points_downscale_factor}")
            factor = int(crop_n_points_downscale_factor)
            if int(points_per_side / factor ** int(crop_n_layers)) < 1:
                raise ValueError(f"points_per_side={points_per_side} leaves no points in crop layer "
                                 f"{crop_n_layers} with crop_n_points_downscale_factor="
                                 f"{crop_n_points_downscale_factor}")
            grids = amg.build_all_layer_point_grids(int(points_per_side), int(crop_n_layers), factor)
        else:
            grids = [np.asarray(g, dtype=np.float64) for g in point_grids]
            if len(grids) < crop_n_layers + 1 or any(g.ndim != 2 or g.shape[1] != 2 for g in grids):
                raise ValueError(f"point_grids must hold one [K, 2] array of (x, y) in [0, 1] per crop "
                                 f"layer ({crop_n_layers + 1} for crop_n_layers={crop_n_layers})")
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"unknown output_mode {output_mode!r}; use one of {', '.join(OUTPUT_MODES)}")
        if int(points_per_batch) < 1:
            raise ValueError(f"points_per_batch must be at least 1, got {points_per_batch}")
        self.point_grids = grids
        self.predictor = SAM2ImagePredictor(model, max_hole_area=min_mask_region_area,
                                            max_sprinkle_area=min_mask_region_area)
        self.points_per_batch = int(points_per_batch)
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.mask_threshold = mask_threshold
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = int(crop_n_layers)
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.crop_n_points_downscale_factor = crop_n_points_downscale_factor
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.use_m2m = use_m2m
        self.multimask_output = multimask_output
        self.progress = None  # optional callable(done_batches, total_batches), for progress bars

    # ---- the pipeline --------------------------------------------------------------------

    @torch.inference_mode()
    def generate(self, image) -> list[dict]:
        """Masks of everything in ``image`` (HxWx3 uint8 RGB array or PIL image), as records:
        segmentation (per output_mode), area (pixels), bbox (XYWH), predicted_iou,
        point_coords ([[x, y]]), stability_score, crop_box (XYWH)."""
        image = as_rgb_array(image)
        size = list(image.shape[:2])
        data = self.generate_mask_data(image)
        records = []
        for i, rle in enumerate(data.rles):
            uncompressed = {"size": size, "counts": rle.tolist()}
            if self.output_mode == "coco_rle":
                seg = amg.coco_encode_rle(uncompressed)
            elif self.output_mode == "binary_mask":
                seg = amg.rle_to_mask(uncompressed)
            else:
                seg = uncompressed
            records.append({
                "segmentation": seg,
                "area": int(rle[1::2].sum()),
                "bbox": amg.box_xyxy_to_xywh(data.boxes[i].float().tolist()),
                "predicted_iou": float(data.iou_preds[i]),
                "point_coords": [data.points[i].tolist()],
                "stability_score": float(data.stability[i]),
                "crop_box": amg.box_xyxy_to_xywh(data.crop_boxes[i].float().tolist()),
            })
        return records

    @torch.inference_mode()
    def generate_mask_data(self, image) -> MaskData:
        """The surviving masks of ``image`` as a MaskData (RLE counts, no records)."""
        image = as_rgb_array(image)
        h, w = image.shape[:2]
        crop_boxes, layers = amg.generate_crop_boxes((h, w), self.crop_n_layers, self.crop_overlap_ratio)
        self._batches_total = sum(-(-len(self.point_grids[k]) // self.points_per_batch) for k in layers)
        self._batches_done = 0
        data = MaskData.cat([self._process_crop(image, box, layer) for box, layer in zip(crop_boxes, layers)])
        if len(crop_boxes) > 1 and len(data.rles):
            # duplicates between crops: prefer masks from smaller crops
            cb = data.crop_boxes
            scores = 1 / ((cb[:, 2] - cb[:, 0]) * (cb[:, 3] - cb[:, 1]))
            data = data.select(amg.box_nms(data.boxes.float(), scores, self.crop_nms_thresh))
        return data

    def _process_crop(self, image: np.ndarray, crop_box: list[int], layer: int) -> MaskData:
        x0, y0, x1, y1 = crop_box
        crop = image[y0:y1, x0:x1]
        ch, cw = crop.shape[:2]
        self.predictor.set_image(crop)
        points = self.point_grids[layer] * np.array([[cw, ch]])  # float64, as the reference
        parts = []
        for start in range(0, len(points), self.points_per_batch):
            batch = points[start:start + self.points_per_batch]
            parts.append(self._process_batch(batch, (ch, cw), crop_box, image.shape[:2]))
            self._batches_done += 1
            if self.progress is not None:
                self.progress(self._batches_done, self._batches_total)
        self.predictor.reset_predictor()
        data = MaskData.cat(parts)
        if not len(data.rles):
            return data
        data = data.select(amg.box_nms(data.boxes.float(), data.iou_preds, self.box_nms_thresh))
        offset = torch.tensor([x0, y0, x0, y0])
        data.boxes = data.boxes + offset
        data.points = data.points + offset[:2]
        data.crop_boxes = torch.tensor([crop_box] * len(data.rles), dtype=torch.long).reshape(-1, 4)
        return data

    def _decode(self, points: torch.Tensor, mask_input: torch.Tensor | None, multimask: bool):
        """points [B, 2] model-input pixels, one foreground click each -> (raw low-res logits
        [B, C, h, w], the same after the predictor's hole/island clean-up, IoU [B, C])."""
        pred = self.predictor
        labels = torch.ones(points.shape[0], 1, dtype=torch.int, device=points.device)
        out = pred.model.decode_masks(pred.get_image_embedding(), pred.features.high_res,
                                      (points[:, None, :], labels), mask_input, multimask)
        raw = out.masks.float()
        low = fill_holes_and_remove_sprinkles(raw, pred.mask_threshold, pred.max_hole_area,
                                              pred.max_sprinkle_area)
        return raw, low, out.iou

    def _process_batch(self, points_np: np.ndarray, im_size: tuple[int, int], crop_box: list[int],
                       orig_size: tuple[int, int]) -> MaskData:
        dev = self.predictor.device
        ch, cw = im_size
        size = self.predictor.model.image_size
        points = torch.as_tensor(points_np, dtype=torch.float32, device=dev)
        in_points = points / torch.tensor([cw, ch], device=dev) * size
        raw, low, iou = self._decode(in_points, None, self.multimask_output)
        c = low.shape[1]
        low, iou = low.flatten(0, 1), iou.flatten(0, 1)  # [B*C, h, w], [B*C]
        points = points.repeat_interleave(c, dim=0)
        if self.use_m2m:  # the raw (not cleaned) logits go back in, clamped as the predictor's
            low, iou = self._refine_m2m(in_points.repeat_interleave(c, dim=0),
                                        raw.flatten(0, 1).clamp(-32.0, 32.0))
        keep = iou > self.pred_iou_thresh if self.pred_iou_thresh > 0.0 else torch.ones_like(iou, dtype=torch.bool)
        idx = keep.nonzero().flatten()
        masks, stab = self._upscale_filter(low[idx], im_size)
        sel = idx[stab[1]]
        boxes = amg.masks_to_boxes(masks)
        orig_h, orig_w = orig_size
        near = amg.is_box_near_crop_edge(boxes, crop_box, [0, 0, orig_w, orig_h])
        masks, boxes, sel, stability = masks[~near], boxes[~near], sel[~near.to(sel.device)], stab[0][~near]
        x0, y0, x1, y1 = crop_box
        if (x0, y0, x1, y1) != (0, 0, orig_w, orig_h):
            masks = F.pad(masks, (x0, orig_w - x1, y0, orig_h - y1), value=False)
        return MaskData(amg.masks_to_rle_counts(masks), boxes.cpu(), iou[sel].float().cpu(),
                        stability.float().cpu(), points[sel].cpu(),
                        torch.zeros(len(sel), 4, dtype=torch.long))

    def _upscale_filter(self, low: torch.Tensor, im_size: tuple[int, int]):
        """Low-res logits [K, h, w] -> (bool masks [K', H, W], (stability [K'], kept indices
        [K'])): upscaled a few at a time, filtered by stability, thresholded."""
        masks, stabs, kept = [], [], []
        for s in range(0, low.shape[0], UPSCALE_CHUNK):
            logits = F.interpolate(low[s:s + UPSCALE_CHUNK, None], size=im_size, mode="bilinear",
                                   align_corners=False)[:, 0]
            stab = amg.stability_score(logits, self.mask_threshold, self.stability_score_offset)
            ok = (stab >= self.stability_score_thresh if self.stability_score_thresh > 0.0
                  else torch.ones_like(stab, dtype=torch.bool))
            ok_idx = ok.nonzero().flatten()
            masks.append(logits[ok_idx] > self.mask_threshold)
            stabs.append(stab[ok_idx])
            kept.append(ok_idx + s)
        if not masks:
            h, w = im_size
            empty = torch.zeros(0, dtype=torch.long, device=low.device)
            return torch.zeros(0, h, w, dtype=torch.bool, device=low.device), (empty.float(), empty)
        return torch.cat(masks), (torch.cat(stabs), torch.cat(kept))

    def _refine_m2m(self, in_points: torch.Tensor, low: torch.Tensor):
        """One refinement step: each candidate's clamped low-res logits [N, h, w] go back in
        with its point (in batches of points_per_batch); returns the new [N, h, w], IoU [N]."""
        lows, ious = [], []
        for s in range(0, in_points.shape[0], self.points_per_batch):
            sl = slice(s, s + self.points_per_batch)
            _, new, iou = self._decode(in_points[sl], low[sl, None], False)
            lows.append(new[:, 0])
            ious.append(iou[:, 0])
        return torch.cat(lows), torch.cat(ious)


def coco_annotations(records: list[dict], image_id: int = 1, first_id: int = 1) -> list[dict]:
    """The generator's records (``output_mode="uncompressed_rle"`` or ``"coco_rle"``) as COCO
    annotations: ``id`` (from ``first_id``), ``image_id``, ``category_id`` 1, ``iscrowd`` 0,
    ``segmentation`` (COCO compressed RLE), ``area``, ``bbox`` [x, y, w, h], and SAM's
    ``predicted_iou``, ``stability_score``, ``point_coords``, ``crop_box``."""
    out = []
    for k, r in enumerate(records):
        seg = r["segmentation"]
        if not isinstance(seg, dict):
            raise ValueError("coco_annotations needs RLE records: use output_mode='uncompressed_rle' or 'coco_rle'")
        if not isinstance(seg["counts"], str):
            seg = amg.coco_encode_rle(seg)
        out.append({"id": first_id + k, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                    "segmentation": seg, "area": r["area"], "bbox": r["bbox"],
                    "predicted_iou": round(float(r["predicted_iou"]), 6),
                    "stability_score": round(float(r["stability_score"]), 6),
                    "point_coords": r["point_coords"], "crop_box": r["crop_box"]})
    return out
