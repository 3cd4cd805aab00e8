"""OnnxVideoPredictor: SAM2VideoPredictor's calls and returns on an exported model, with ONNX
Runtime and NumPy only.

The state machine is the torch predictor's (``sam2kit.video.predictor``): the same prompts,
conditioning and propagated results, the same choice of memories and pointers
(``sam2kit.video.tracking``), memories stored as bf16 values as the torch session stores them,
and the same flat memory: propagated results farther than the memory window from the frame
being tracked go to a temporary folder and come back when needed.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sam2kit.video import tracking as rules
from sam2kit.video.state_machine import TrackingSteps
from sam2kit.image.arrays import resize_frame
from sam2kit.onnx import arrays
from sam2kit.onnx.model import Features, OnnxSAM2


@dataclass
class Result:
    """One object's result on one frame: pred_masks [1, 1, S/4, S/4] low-res logits (holes
    filled), obj_ptr [1, 256], object_score_logits [1, 1], maskmem_features [1, 64, h, w]
    (bf16 values) or None before the memory encoder ran. While spilled, the two large arrays
    live in ``spill_path``."""

    pred_masks: np.ndarray | None
    obj_ptr: np.ndarray
    object_score_logits: np.ndarray
    maskmem_features: np.ndarray | None
    spill_path: Path | None = None


@dataclass
class ObjectTrack:
    obj_id: int
    point_inputs: dict = field(default_factory=dict)
    mask_inputs: dict = field(default_factory=dict)
    cond: dict = field(default_factory=dict)
    non_cond: dict = field(default_factory=dict)
    temp_cond: dict = field(default_factory=dict)
    temp_non_cond: dict = field(default_factory=dict)
    frames_tracked: dict = field(default_factory=dict)

    def output(self, frame_idx: int, is_cond: bool | None = None) -> Result | None:
        temps = [self.temp_cond, self.temp_non_cond] if is_cond is None else \
            [self.temp_cond if is_cond else self.temp_non_cond]
        for d in temps + [self.cond, self.non_cond]:
            if frame_idx in d:
                return d[frame_idx]
        return None


class OnnxVideoState:
    """One video's tracking state (``init_state``'s return): frames, objects, cached features,
    the spill folder. ``close()`` (or ``with``) frees it."""

    def __init__(self, frames, window: int, feature_cache_size: int):
        self.frames = frames
        self.num_frames = len(frames)
        self.video_height, self.video_width = frames.height, frames.width
        self.objects: list[ObjectTrack] = []
        self.maskmem_pos: np.ndarray | None = None
        self.window = window
        self._features: OrderedDict[int, Features] = OrderedDict()
        self._feature_cache_size = feature_cache_size
        self._spill_dir = Path(tempfile.mkdtemp(prefix="sam2kit-onnx-"))
        self._spills = 0

    @property
    def obj_ids(self) -> list:
        return [o.obj_id for o in self.objects]

    def object_scores(self, frame_idx: int) -> list[float | None]:
        """Each object's object-score logit on ``frame_idx`` (> 0: the object is visible), in
        ``obj_ids`` order; None for an object without a result there (as VideoSession's)."""
        scores = []
        for obj in self.objects:
            r = obj.output(frame_idx)
            scores.append(None if r is None else float(r.object_score_logits.reshape(-1)[0]))
        return scores

    def obj_idx(self, obj_id, create: bool = False) -> int | None:
        for i, o in enumerate(self.objects):
            if o.obj_id == obj_id:
                return i
        if not create:
            return None
        self.objects.append(ObjectTrack(obj_id))
        return len(self.objects) - 1

    def obj(self, obj_id, create: bool = False) -> ObjectTrack | None:
        idx = self.obj_idx(obj_id, create)
        return None if idx is None else self.objects[idx]

    def drop_object(self, idx: int) -> None:
        obj = self.objects.pop(idx)
        for d in (obj.cond, obj.non_cond, obj.temp_cond, obj.temp_non_cond):
            for r in d.values():
                self.discard(r)

    def clear(self) -> None:
        for idx in range(len(self.objects) - 1, -1, -1):
            self.drop_object(idx)

    def load(self, r: Result) -> Result:
        if r.pred_masks is None and r.spill_path is not None:
            with np.load(r.spill_path) as data:
                r.pred_masks = data["pred_masks"]
                r.maskmem_features = data["maskmem_features"] if "maskmem_features" in data else None
        return r

    def trim(self, frame_idx: int) -> None:
        """Spill propagated results farther than the memory window from ``frame_idx``."""
        for obj in self.objects:
            for t, r in obj.non_cond.items():
                if abs(t - frame_idx) > self.window and r.pred_masks is not None:
                    if r.spill_path is None:
                        self._spills += 1
                        r.spill_path = self._spill_dir / f"{self._spills}.npz"
                        data = {"pred_masks": r.pred_masks}
                        if r.maskmem_features is not None:
                            data["maskmem_features"] = r.maskmem_features
                        np.savez(r.spill_path, **data)
                    r.pred_masks = r.maskmem_features = None

    @staticmethod
    def discard(r: Result) -> None:
        if r.spill_path is not None:
            r.spill_path.unlink(missing_ok=True)
            r.spill_path = None

    def close(self) -> None:
        self.clear()
        self._features.clear()
        close = getattr(self.frames, "close", None)
        if close is not None:
            close()
        shutil.rmtree(self._spill_dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        spill = getattr(self, "_spill_dir", None)
        if spill is not None:
            shutil.rmtree(spill, ignore_errors=True)


class OnnxVideoPredictor(TrackingSteps):
    """``init_state``, ``add_new_points_or_box``, ``add_new_mask``, ``propagate_in_video``
    (forward and reverse), ``clear_all_prompts_in_frame``, ``remove_object``, ``reset_state``
    as ``SAM2VideoPredictor``; masks are NumPy float32 logits [num_objects, 1, H, W].
    folder: what ``sam2kit export`` wrote; providers: ONNX Runtime execution providers (None:
    CPU); the other options as SAM2VideoPredictor's."""

    def __init__(self, folder: str | Path | OnnxSAM2, providers: list | None = None, fill_hole_area: int = 8,
                 non_overlap_masks: bool = False, clear_non_cond_mem_around_input: bool = False,
                 add_all_frames_to_correct_as_cond: bool = False,
                 binarize_mask_from_pts_for_mem_enc: bool = True, max_cond_frames_in_attn: int = -1,
                 memory_temporal_stride_for_eval: int = 1, feature_cache_size: int = 2,
                 dynamic_multimask_via_stability: bool = True):
        self.model = folder if isinstance(folder, OnnxSAM2) else OnnxSAM2(folder, providers)
        self.fill_hole_area = fill_hole_area
        self.non_overlap_masks = non_overlap_masks
        self.clear_non_cond_mem_around_input = clear_non_cond_mem_around_input
        self.add_all_frames_to_correct_as_cond = add_all_frames_to_correct_as_cond
        self.binarize_mask_from_pts_for_mem_enc = binarize_mask_from_pts_for_mem_enc
        self.max_cond_frames_in_attn = max_cond_frames_in_attn
        self.memory_temporal_stride_for_eval = memory_temporal_stride_for_eval
        self.feature_cache_size = feature_cache_size
        self.dynamic_multimask_via_stability = dynamic_multimask_via_stability
        cfg = self.model.config
        self.num_maskmem = int(cfg["num_maskmem"])
        self.max_obj_ptrs_in_encoder = int(cfg["max_obj_ptrs_in_encoder"])

    @property
    def image_size(self) -> int:
        return self.model.image_size

    # ---- sessions ----------------------------------------------------------------------------

    def init_state(self, video_path, offload_video_to_cpu: bool = False, offload_state_to_cpu: bool = False,
                   async_loading_frames: bool = False) -> OnnxVideoState:
        """Open a video file, a folder of JPEG/PNG frames or a sequence of HxWx3 uint8 frames
        (``sam2kit.video.io.open_frames``; frames are decoded when needed)."""
        from sam2kit.video.io import open_frames

        state = OnnxVideoState(open_frames(video_path), self.num_maskmem * self.memory_temporal_stride_for_eval,
                               self.feature_cache_size)
        self._features(state, 0)
        return state

    def reset_state(self, inference_state: OnnxVideoState) -> None:
        """Remove every object, prompt and result."""
        inference_state.clear()

    def _features(self, s: OnnxVideoState, frame_idx: int) -> Features:
        f = s._features.get(frame_idx)
        if f is None:
            m = self.model
            small = resize_frame(s.frames.get(frame_idx), m.image_size)
            f = m.encode(arrays.preprocess_frame(small, m.mean, m.std))
            s._features[frame_idx] = f
            while len(s._features) > s._feature_cache_size:
                s._features.popitem(last=False)
        s._features.move_to_end(frame_idx)
        return f

    # ---- prompts -----------------------------------------------------------------------------

    def add_new_points_or_box(self, inference_state: OnnxVideoState, frame_idx: int, obj_id, points=None,
                              labels=None, clear_old_points: bool = True, normalize_coords: bool = True,
                              box=None):
        """Clicks (Nx2 (x, y) pixels, labels 1/0) and/or a box (XYXY) for ``obj_id`` on
        ``frame_idx``. Returns (frame_idx, obj_ids, masks [num_objects, 1, H, W] logits)."""
        s = inference_state
        self._check_frame(s, frame_idx)
        if (points is None) != (labels is None):
            raise ValueError("points and labels must be provided together")
        if points is None and box is None:
            raise ValueError("at least one of points or box must be provided as input")
        coords, labs = _as_points(points, labels)
        if box is not None:
            if not clear_old_points:
                raise ValueError("cannot add a box without clearing old points (a box must come "
                                 "before any point): use clear_old_points=True")
            b = np.asarray(box, dtype=np.float32).reshape(-1)
            if b.size != 4 or not np.all(np.isfinite(b)):
                raise ValueError("box must be XYXY: 4 finite pixel coordinates")
            coords = np.concatenate([b.reshape(1, 2, 2), coords], 1)
            labs = np.concatenate([np.array([[2, 3]], np.int32), labs], 1)
        if normalize_coords:
            coords = coords / np.array([s.video_width, s.video_height], np.float32)
        coords = (coords * np.float32(self.image_size)).astype(np.float32)
        obj = s.obj(obj_id, create=True)
        old = obj.point_inputs.get(frame_idx) if not clear_old_points else None
        if old is not None:
            coords, labs = np.concatenate([old[0], coords], 1), np.concatenate([old[1], labs], 1)
        obj.point_inputs[frame_idx] = (coords, labs)
        obj.mask_inputs.pop(frame_idx, None)
        return self._prompt_frame(s, obj, frame_idx, (coords, labs), None)

    add_new_points = add_new_points_or_box

    def add_new_mask(self, inference_state: OnnxVideoState, frame_idx: int, obj_id, mask):
        """``obj_id``'s mask (HxW, bool or 0/1, any size) on ``frame_idx``."""
        s = inference_state
        self._check_frame(s, frame_idx)
        m = np.asarray(mask).astype(bool)
        if m.ndim != 2:
            raise ValueError(f"mask must be a 2-D HxW array, got shape {m.shape}")
        m = m[None, None].astype(np.float32)
        size = self.image_size
        if m.shape[-2:] != (size, size):
            m = (arrays.resize(m, (size, size), antialias=True) >= 0.5).astype(np.float32)
        obj = s.obj(obj_id, create=True)
        obj.mask_inputs[frame_idx] = m
        obj.point_inputs.pop(frame_idx, None)
        return self._prompt_frame(s, obj, frame_idx, None, m)

    @staticmethod
    def _prompt_logits(s, r: Result) -> np.ndarray:
        return np.clip(r.pred_masks, -32.0, 32.0)

    # ---- one frame, one object -----------------------------------------------------------------

    def _run_frame(self, s, obj, frame_idx, is_init, points, mask, reverse, run_mem_encoder, prev_logits=None):
        m = self.model
        f = self._features(s, frame_idx)
        if mask is not None:
            head = m.mask_as_output(f, mask)
        else:
            memories, ptrs = ([], []) if is_init else self._gather_memory(s, obj, frame_idx, reverse)
            pix = m.condition_on_memory(f, memories, s.maskmem_pos, ptrs,
                                        min(s.num_frames, self.max_obj_ptrs_in_encoder))
            n_pts = 0 if points is None else points[1].shape[1]
            cfg = m.config
            multimask = rules.use_multimask(n_pts, cfg["multimask_min_pt_num"], cfg["multimask_max_pt_num"])
            head = m.sam_heads(pix, f.high_res, points, prev_logits, multimask, self.dynamic_multimask_via_stability)
        mem = None
        if run_mem_encoder:
            mem = self._encode_memory(s, f, head.high_res_masks, head.object_score_logits, points is not None)
        low_res = head.low_res_masks
        if self.fill_hole_area > 0:
            low_res = arrays.fill_small_holes(low_res, self.fill_hole_area)
        return Result(low_res, head.obj_ptr, head.object_score_logits, mem), low_res

    def _encode_memory(self, s, f, high_res_masks, object_score_logits, from_points: bool) -> np.ndarray:
        binarize = self.binarize_mask_from_pts_for_mem_enc and from_points
        mem, pos = self.model.encode_memory(f, high_res_masks, object_score_logits, binarize)
        if s.maskmem_pos is None:
            s.maskmem_pos = pos[0:1].copy()
        return arrays.round_bf16(mem)  # stored as the torch session stores memories

    def _gather_memory(self, s, obj, frame_idx, reverse):
        slots, ptrs = rules.gather_memory(frame_idx, reverse, obj.cond, obj.non_cond, s.num_frames,
                                          self.num_maskmem, min(s.num_frames, self.max_obj_ptrs_in_encoder),
                                          self.max_cond_frames_in_attn, self.memory_temporal_stride_for_eval,
                                          bool(self.model.config["use_signed_tpos_enc_to_obj_ptrs"]))
        memories = [(t_pos, s.load(r).maskmem_features) for t_pos, r in slots]
        return memories, [(offset, r.obj_ptr) for offset, r in ptrs]

    # ---- propagation ---------------------------------------------------------------------------

    def propagate_in_video_preflight(self, inference_state: OnnxVideoState) -> None:
        """Encode the memories of newly prompted frames and move them to the kept results."""
        self._preflight(inference_state)

    def _encode_prompt_memory(self, s, frame_idx: int, out: Result) -> None:
        high_res = arrays.resize(out.pred_masks, (self.image_size, self.image_size))
        out.maskmem_features = self._encode_memory(s, self._features(s, frame_idx), high_res,
                                                   out.object_score_logits, True)

    def propagate_in_video(self, inference_state: OnnxVideoState, start_frame_idx: int | None = None,
                           max_frame_num_to_track: int | None = None, reverse: bool = False):
        """Yields (frame_idx, obj_ids, masks [num_objects, 1, H, W] float32 logits)."""
        s = inference_state
        for frame_idx in self._propagation_order(s, start_frame_idx, max_frame_num_to_track, reverse):
            yield frame_idx, s.obj_ids, self._track_frame(s, frame_idx, reverse)

    @staticmethod
    def _resident_logits(s, r: Result) -> np.ndarray:
        return r.pred_masks

    @staticmethod
    def _concat(masks: list) -> np.ndarray:
        return np.concatenate(masks, 0)

    # ---- editing -------------------------------------------------------------------------------

    def clear_all_prompts_in_frame(self, inference_state: OnnxVideoState, frame_idx: int, obj_id,
                                   need_output: bool = True):
        """Remove ``obj_id``'s prompts on ``frame_idx``."""
        return self._clear_prompts(inference_state, frame_idx, obj_id, need_output)

    def remove_object(self, inference_state: OnnxVideoState, obj_id, strict: bool = False,
                      need_output: bool = True):
        """Remove an object. Returns (obj_ids, [(frame_idx, masks) of its prompted frames])."""
        return self._remove_object(inference_state, obj_id, strict, need_output)

    # ---- outputs -------------------------------------------------------------------------------

    def _consolidate(self, s, frame_idx, is_cond) -> np.ndarray:
        out = np.full((len(s.objects), 1, s.video_height, s.video_width), self.model.no_obj_score, np.float32)
        for i, obj in enumerate(s.objects):
            r = obj.output(frame_idx, is_cond)
            if r is not None:
                out[i: i + 1] = arrays.resize(s.load(r).pred_masks, out.shape[-2:])
        return out

    def _video_res(self, s, masks: np.ndarray) -> np.ndarray:
        if masks.shape[-2:] != (s.video_height, s.video_width):
            masks = arrays.resize(masks, (s.video_height, s.video_width))
        if self.non_overlap_masks:
            masks = arrays.non_overlapping(masks)
        return masks


def _as_points(points, labels) -> tuple[np.ndarray, np.ndarray]:
    """(coords [1, N, 2] float32, labels [1, N] int32), checked as the torch predictor checks."""
    if points is None:
        return np.zeros((1, 0, 2), np.float32), np.zeros((1, 0), np.int32)
    p = np.asarray(points, dtype=np.float32)
    lab = np.asarray(labels).astype(np.int32)
    p = p[None] if p.ndim == 2 else p
    lab = lab[None] if lab.ndim == 1 else lab
    if p.ndim != 3 or p.shape[0] != 1 or p.shape[-1] != 2:
        raise ValueError(f"points must be Nx2 (x, y), got shape {p.shape}")
    if lab.shape != p.shape[:2]:
        raise ValueError(f"labels must have one entry per point: {p.shape[:2]} expected, got {lab.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("points contain NaN or infinite values; give finite pixel coordinates")
    if not np.all(np.isin(lab, (0, 1))):
        raise ValueError("labels must be 1 (foreground) or 0 (background)")
    return p, lab
