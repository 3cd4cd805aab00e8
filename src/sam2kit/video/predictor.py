"""SAM2VideoPredictor: prompt objects on any frame of a video and track them through it.

A drop-in for the reference's ``sam2.sam2_video_predictor.SAM2VideoPredictor``: the same
methods, arguments and return values, with the state in a typed ``VideoSession`` and in
memory that does not grow with the video's length.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from sam2kit.build import FromPretrained, build_sam2
from sam2kit.devices import release_free_memory
from sam2kit.modeling.sam2 import NO_OBJ_SCORE, ImageFeatures, MemoryFrame, SAM2Model
from sam2kit.image.postprocess import fill_small_holes
from sam2kit.video.session import FrameOutput, ObjectState, VideoSession
from sam2kit.video.state_machine import TrackingSteps
from sam2kit.video.tracking import gather_memory, select_closest_cond_frames, track_order, use_multimask  # noqa: F401

if TYPE_CHECKING:
    from sam2kit.video.stream_session import StreamSession
from sam2kit.image.transforms import frame_to_input


class SAM2VideoPredictor(FromPretrained, TrackingSteps):
    """Prompt objects on any frame of a video and track them (``init_state``,
    ``add_new_points_or_box``, ``propagate_in_video``, ...). The state of each video is a
    ``VideoSession``; one predictor (and one model) may serve many sessions, each session one
    thread at a time. ``SAM2VideoPredictor.from_pretrained(model_id, device=, image_size=,
    revision=, checkpoint=, precision=, compile=, quantize=, backend=, **options)`` loads a model."""

    def __init__(self, sam_model: SAM2Model, fill_hole_area: int = 8, non_overlap_masks: bool = False,
                 clear_non_cond_mem_around_input: bool = False,
                 add_all_frames_to_correct_as_cond: bool = False,
                 binarize_mask_from_pts_for_mem_enc: bool = True, max_cond_frames_in_attn: int = -1,
                 memory_temporal_stride_for_eval: int = 1, feature_cache_size: int = 2,
                 dynamic_multimask_via_stability: bool = True):
        """sam_model: a SAM2Model. The defaults are those of the reference's
        ``build_sam2_video_predictor``: holes up to ``fill_hole_area`` low-res pixels are
        filled, masks from clicks are binarised for the memory, and a prompt asking for one
        mask falls back to the best of three when that one is unstable. Its
        ``apply_postprocessing=False`` (how Meta's tools/vos_inference.py evaluates) is
        ``fill_hole_area=0, binarize_mask_from_pts_for_mem_enc=False,
        dynamic_multimask_via_stability=False``."""
        self.model = sam_model
        self.fill_hole_area = fill_hole_area
        self.non_overlap_masks = non_overlap_masks
        self.clear_non_cond_mem_around_input = clear_non_cond_mem_around_input
        self.add_all_frames_to_correct_as_cond = add_all_frames_to_correct_as_cond
        self.binarize_mask_from_pts_for_mem_enc = binarize_mask_from_pts_for_mem_enc
        self.max_cond_frames_in_attn = max_cond_frames_in_attn
        self.memory_temporal_stride_for_eval = memory_temporal_stride_for_eval
        self.feature_cache_size = feature_cache_size
        self.dynamic_multimask_via_stability = dynamic_multimask_via_stability

    @property
    def image_size(self) -> int:
        return self.model.image_size

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def num_maskmem(self) -> int:
        return self.model.config.num_maskmem

    # ---- sessions ------------------------------------------------------------------------

    @torch.inference_mode()
    def init_state(self, video_path, offload_video_to_cpu: bool = False, offload_state_to_cpu: bool = False,
                   async_loading_frames: bool = False, spill_dir: str | Path | None = None,
                   spill_limit_bytes: int | None = None,
                   release_memory_every: int | None = None) -> VideoSession:
        """Open a video: a video file (mp4, mov, mkv, avi, webm), a folder of JPEG/PNG frames
        in numeric order, or a sequence of HxWx3 uint8 RGB frames. Frames are decoded when
        needed, so ``offload_video_to_cpu`` and ``async_loading_frames`` change nothing.

        spill_dir / spill_limit_bytes: where results far from the tracked frame go on disk
        (default: the temporary folder) and the disk budget for them (None: none);
        release_memory_every: hand the process heap's free pages back to the system every that
        many tracked frames (``sam2kit.release_free_memory``; process-wide, so off unless
        asked). Close the session (``with``, or ``close()``) to free it at once."""
        from sam2kit.video.io import open_frames

        frames = open_frames(video_path)
        storage = torch.device("cpu") if offload_state_to_cpu else self.device
        window = self.model.config.num_maskmem * self.memory_temporal_stride_for_eval
        session = VideoSession(frames, self.image_size, self.device, storage, window,
                               self.feature_cache_size, spill_dir, spill_limit_bytes, release_memory_every)
        try:
            self._features(session, 0)  # warm up on the first frame, as the reference does
        except BaseException:
            session.close()
            raise
        return session

    def init_stream(self, offload_state_to_cpu: bool = False,
                    release_memory_every: int | None = None) -> "StreamSession":
        """A session for a live stream that the caller feeds frame by frame: ``obj_ids, masks =
        session.push(frame)``, prompts with ``session.add_new_points_or_box(frame_idx, obj_id,
        ...)`` on frames it still keeps (``sam2kit.video.stream_session``). Memory stays flat however
        long the stream; close it (``with``, or ``close()``) when done."""
        from sam2kit.video.stream_session import StreamSession

        storage = torch.device("cpu") if offload_state_to_cpu else self.device
        return StreamSession(self, storage, release_memory_every)

    def track_stream(self, source, prompts, **options):
        """Track objects through a live source (a URL, ``"-"``, a camera, a file, a folder being
        filled, an iterable of frames): yields ``(frame_idx, obj_ids, masks)`` as frames arrive.
        ``prompts``: dicts with ``frame``, ``obj_id`` and ``points``/``labels``, ``box`` or
        ``mask``. Options: see ``sam2kit.video.stream_session.track_stream``."""
        from sam2kit.video.stream_session import track_stream

        return track_stream(self, source, prompts, **options)

    @torch.inference_mode()
    def reset_state(self, inference_state: VideoSession) -> None:
        """Remove every object, prompt and result."""
        inference_state.clear()

    def _features(self, s: VideoSession, frame_idx: int) -> ImageFeatures:
        feats = s.cached_features(frame_idx)
        if feats is None:
            image = frame_to_input(s.frames.get(frame_idx), self.image_size, self.model.pixel_mean,
                                   self.model.pixel_std, s.device)
            feats = self.model.encode_image(image)
            s.cache_features(frame_idx, feats)
        return feats

    # ---- prompts -------------------------------------------------------------------------

    @torch.inference_mode()
    def add_new_points_or_box(self, inference_state: VideoSession, frame_idx: int, obj_id, points=None,
                              labels=None, clear_old_points: bool = True, normalize_coords: bool = True,
                              box=None):
        """Add clicks (Nx2 (x, y) pixels, labels 1/0) and/or a box (XYXY) for ``obj_id`` on
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
            b = torch.as_tensor(np.asarray(box, dtype=np.float32)).reshape(-1)
            if b.numel() != 4:
                raise ValueError(f"box must be XYXY with 4 numbers, got {b.numel()}")
            if not torch.isfinite(b).all():
                raise ValueError("box contains NaN or infinite values; give finite pixel coordinates")
            coords = torch.cat([b.reshape(1, 2, 2), coords], dim=1)
            labs = torch.cat([torch.tensor([[2, 3]], dtype=torch.int32), labs], dim=1)
        if normalize_coords:
            coords = coords / torch.tensor([s.video_width, s.video_height])
        coords = (coords * self.image_size).to(s.device)
        labs = labs.to(s.device)

        obj = s.objects[s.obj_idx(obj_id, create=True)]
        old = obj.point_inputs.get(frame_idx) if not clear_old_points else None
        if old is not None:
            coords, labs = torch.cat([old[0], coords], 1), torch.cat([old[1], labs], 1)
        obj.point_inputs[frame_idx] = (coords, labs)
        obj.mask_inputs.pop(frame_idx, None)
        return self._prompt_frame(s, obj, frame_idx, (coords, labs), None)

    add_new_points = add_new_points_or_box

    @torch.inference_mode()
    def add_new_mask(self, inference_state: VideoSession, frame_idx: int, obj_id, mask):
        """Give ``obj_id``'s mask (HxW, bool or 0/1, any size) on ``frame_idx``."""
        s = inference_state
        self._check_frame(s, frame_idx)
        m = torch.as_tensor(np.asarray(mask)).to(torch.bool)
        if m.dim() != 2:
            raise ValueError(f"mask must be a 2-D HxW array, got shape {tuple(m.shape)}")
        m = m[None, None].float().to(s.device)
        size = self.image_size
        if m.shape[-2:] != (size, size):
            m = F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            m = (m >= 0.5).float()
        obj = s.objects[s.obj_idx(obj_id, create=True)]
        obj.mask_inputs[frame_idx] = m
        obj.point_inputs.pop(frame_idx, None)
        return self._prompt_frame(s, obj, frame_idx, None, m)

    def _prompt_logits(self, s: VideoSession, out: FrameOutput) -> torch.Tensor:
        return torch.clamp(out.pred_masks.to(s.device), -32.0, 32.0)

    # ---- one frame, one object -----------------------------------------------------------

    def _run_frame(self, s: VideoSession, obj: ObjectState, frame_idx: int, is_init: bool, points,
                   mask, reverse: bool, run_mem_encoder: bool, prev_logits=None):
        """The tracking step. Returns the stored result and the low-res logits on device."""
        m = self.model
        feats = self._features(s, frame_idx)
        if mask is not None:
            head = m.mask_as_output(feats, mask)
        else:
            memories, ptrs = ([], []) if is_init else self._gather_memory(s, obj, frame_idx, reverse)
            pix = m.condition_on_memory(feats, memories, ptrs, min(s.num_frames, m.config.max_obj_ptrs_in_encoder),
                                        s.memory_cache)
            n_pts = 0 if points is None else points[1].shape[1]
            cfg = m.config
            multimask = use_multimask(n_pts, cfg.multimask_min_pt_num, cfg.multimask_max_pt_num)
            head = m.sam_heads(pix, feats.high_res, points, prev_logits, multimask,
                               self.dynamic_multimask_via_stability)
        mem = None
        if run_mem_encoder:
            mem = self._encode_memory(s, feats, head.high_res_masks, head.object_score_logits,
                                      from_points=points is not None)
        low_res = head.low_res_masks
        if self.fill_hole_area > 0:
            low_res = fill_small_holes(low_res, self.fill_hole_area)
        out = s.store(FrameOutput(low_res, head.obj_ptr, head.object_score_logits, mem))
        return out, low_res

    def _encode_memory(self, s: VideoSession, feats: ImageFeatures, high_res_masks, object_score_logits,
                       from_points: bool) -> torch.Tensor:
        binarize = self.binarize_mask_from_pts_for_mem_enc and from_points
        mem, pos = self.model.encode_memory(feats, high_res_masks, object_score_logits, binarize)
        if s.maskmem_pos is None:
            s.maskmem_pos = pos[0:1].clone()
        return mem

    def _gather_memory(self, s: VideoSession, obj: ObjectState, frame_idx: int, reverse: bool):
        """Memories and object pointers for tracking ``obj`` on ``frame_idx`` (the reference's
        choice: the conditioning frames, the num_maskmem-1 frames before, pointers of up to
        max_obj_ptrs_in_encoder frames)."""
        cfg = self.model.config
        slots, ptr_outs = gather_memory(frame_idx, reverse, obj.cond, obj.non_cond, s.num_frames, cfg.num_maskmem,
                                        min(s.num_frames, cfg.max_obj_ptrs_in_encoder),
                                        self.max_cond_frames_in_attn, self.memory_temporal_stride_for_eval,
                                        cfg.use_signed_tpos_enc_to_obj_ptrs)
        memories = []
        for t_pos, out in slots:
            s.load(out)
            pos = s.maskmem_pos.to(s.device)
            memories.append(MemoryFrame(out.maskmem_features.to(s.device), pos, t_pos, out.key_cache))
        used = [out for _, out in slots]
        for out in obj.key_cached:  # frames that left this object's memory: free their keys
            if not any(out is u for u in used):
                out.key_cache.clear()
        obj.key_cached = used
        ptrs = [(offset, out.obj_ptr.to(s.device)) for offset, out in ptr_outs]
        return memories, ptrs

    # ---- propagation ---------------------------------------------------------------------

    @torch.inference_mode()
    def propagate_in_video_preflight(self, inference_state: VideoSession) -> None:
        """Encode the memories of newly prompted frames and move them to the kept results."""
        self._preflight(inference_state)

    def _encode_prompt_memory(self, s: VideoSession, frame_idx: int, out: FrameOutput) -> None:
        high_res = F.interpolate(out.pred_masks.to(s.device), size=(self.image_size,) * 2,
                                 mode="bilinear", align_corners=False)
        feats = self._features(s, frame_idx)
        mem = self._encode_memory(s, feats, high_res, out.object_score_logits.to(s.device), from_points=True)
        out.maskmem_features = mem.to(torch.bfloat16).to(s.storage_device)
        out.key_cache.clear()

    @torch.inference_mode()
    def propagate_in_video(self, inference_state: VideoSession, start_frame_idx: int | None = None,
                           max_frame_num_to_track: int | None = None, reverse: bool = False,
                           progress: bool = True):
        """Track every object from ``start_frame_idx`` (default: the first prompted frame)
        forward, or backward with ``reverse``, over at most ``max_frame_num_to_track`` more
        frames. Yields (frame_idx, obj_ids, masks [num_objects, 1, H, W] logits)."""
        s = inference_state
        order = self._propagation_order(s, start_frame_idx, max_frame_num_to_track, reverse)
        for step, frame_idx in enumerate(tqdm(order, desc="propagate in video", disable=not progress, leave=False)):
            every = s.release_memory_every
            if every and step and step % every == 0 and s.device.type == "cpu":
                release_free_memory()  # the holes the last frames' activations left
            yield frame_idx, s.obj_ids, self._track_frame(s, frame_idx, reverse)

    def _resident_logits(self, s: VideoSession, out: FrameOutput) -> torch.Tensor:
        return out.pred_masks.to(s.device)

    @staticmethod
    def _concat(masks: list) -> torch.Tensor:
        return torch.cat(masks, dim=0)

    # ---- editing ---------------------------------------------------------------------------

    @torch.inference_mode()
    def clear_all_prompts_in_frame(self, inference_state: VideoSession, frame_idx: int, obj_id,
                                   need_output: bool = True):
        """Remove ``obj_id``'s prompts on ``frame_idx``; a prompted frame becomes an ordinary
        tracked one."""
        return self._clear_prompts(inference_state, frame_idx, obj_id, need_output)

    @torch.inference_mode()
    def remove_object(self, inference_state: VideoSession, obj_id, strict: bool = False,
                      need_output: bool = True):
        """Remove an object. Returns (obj_ids, [(frame_idx, masks) of its prompted frames])."""
        return self._remove_object(inference_state, obj_id, strict, need_output)

    # ---- outputs ---------------------------------------------------------------------------

    @torch.inference_mode()
    def frame_masks(self, inference_state: VideoSession, frame_idx: int):
        """Every object's current mask on ``frame_idx``, as the last prompt or propagation left
        it: (obj_ids, masks [num_objects, 1, H, W] logits; objects without a result there are
        all NO_OBJ_SCORE), or None when no object has a result on that frame."""
        s = inference_state
        self._check_frame(s, frame_idx)
        if not any(o.output(frame_idx) is not None for o in s.objects):
            return None
        return s.obj_ids, self._video_res(s, self._consolidate(s, frame_idx, None))


    def _consolidate(self, s: VideoSession, frame_idx: int, is_cond: bool | None) -> torch.Tensor:
        """All objects' masks on a frame at video resolution [num_objects, 1, H, W]."""
        out = torch.full((len(s.objects), 1, s.video_height, s.video_width), NO_OBJ_SCORE,
                         dtype=torch.float32, device=s.storage_device)
        for i, obj in enumerate(s.objects):
            res = obj.output(frame_idx, is_cond)
            if res is None:
                continue
            out[i: i + 1] = F.interpolate(s.load(res).pred_masks, size=out.shape[-2:], mode="bilinear",
                                          align_corners=False)
        return out

    def _video_res(self, s: VideoSession, masks: torch.Tensor) -> torch.Tensor:
        masks = masks.to(s.device)
        if masks.shape[-2:] != (s.video_height, s.video_width):
            masks = F.interpolate(masks, size=(s.video_height, s.video_width), mode="bilinear",
                                  align_corners=False)
        if self.non_overlap_masks:
            masks = apply_non_overlapping_constraints(masks)
        return masks


def _as_points(points, labels) -> tuple[torch.Tensor, torch.Tensor]:
    if points is None:
        return torch.zeros(1, 0, 2), torch.zeros(1, 0, dtype=torch.int32)
    p = torch.as_tensor(np.asarray(points, dtype=np.float32))
    lab = torch.as_tensor(np.asarray(labels)).to(torch.int32)
    if p.dim() == 2:
        p = p.unsqueeze(0)
    if lab.dim() == 1:
        lab = lab.unsqueeze(0)
    if p.dim() != 3 or p.shape[0] != 1 or p.shape[-1] != 2:
        raise ValueError(f"points must be Nx2 (x, y), got shape {tuple(p.shape)}")
    if lab.shape != p.shape[:2]:
        raise ValueError(f"labels must have one entry per point: {tuple(p.shape[:2])} expected, "
                         f"got {tuple(lab.shape)}")
    if not torch.isfinite(p).all():
        raise ValueError("points contain NaN or infinite values; give finite pixel coordinates")
    if not torch.isin(lab, torch.tensor([0, 1], dtype=torch.int32)).all():
        raise ValueError("labels must be 1 (foreground) or 0 (background)")
    return p, lab


def apply_non_overlapping_constraints(masks: torch.Tensor) -> torch.Tensor:
    """Keep each pixel only in the highest-scoring object: others are clamped to <= -10."""
    if masks.shape[0] == 1:
        return masks
    best = torch.argmax(masks, dim=0, keepdim=True)
    keep = best == torch.arange(masks.shape[0], device=masks.device)[:, None, None, None]
    return torch.where(keep, masks, torch.clamp(masks, max=-10.0))


def build_sam2_video_predictor(name: str, checkpoint: str | Path | None = None, device="cpu",
                               image_size: int | None = None, revision: str | None = None, *,
                               precision: str = "fp32", compile: bool = False, quantize: str | None = None,
                               backend: str = "torch", **kwargs) -> SAM2VideoPredictor:
    """A ``SAM2VideoPredictor`` for ``name`` (as ``build_sam2``); other keyword arguments go to
    the predictor (``fill_hole_area``, ``non_overlap_masks``, ...)."""
    model = build_sam2(name, checkpoint, device, image_size, revision, precision=precision,
                       compile=compile, quantize=quantize, backend=backend)
    return SAM2VideoPredictor(model, **kwargs)
