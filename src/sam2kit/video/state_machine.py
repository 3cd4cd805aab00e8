"""The video predictors' state machine, written once for the PyTorch predictor
(``sam2kit.video.predictor.SAM2VideoPredictor``) and the ONNX runtime
(``sam2kit.onnx.video.OnnxVideoPredictor``): where a prompt's result goes (temporary until
propagation, then conditioning or propagated), what propagation does on each frame, and how
clearing a frame's prompts or removing an object edits the results. No PyTorch here.

A predictor built on ``TrackingSteps`` supplies the arithmetic, on its own arrays:

- ``_run_frame(s, obj, frame_idx, is_init, points, mask, reverse, run_mem_encoder, prev_logits)``
  -> (the stored result, its low-res logits): one object on one frame;
- ``_prompt_logits(s, out)``: a stored result's low-res logits as the next click's mask input
  (clipped to [-32, 32]);
- ``_resident_logits(s, out)``: a stored result's low-res logits where the model computes;
- ``_encode_prompt_memory(s, frame_idx, out)``: give a prompted frame's result its memory
  features (at propagation, from its low-res logits);
- ``_concat(masks)``: the objects' masks stacked on the first axis;
- ``_consolidate(s, frame_idx, is_cond)`` and ``_video_res(s, masks)``: all objects' masks on a
  frame, at video resolution;
- ``num_maskmem``, ``memory_temporal_stride_for_eval``, ``add_all_frames_to_correct_as_cond``,
  ``clear_non_cond_mem_around_input``.

and a session with ``objects`` (each with ``point_inputs``, ``mask_inputs``, ``cond``,
``non_cond``, ``temp_cond``, ``temp_non_cond``, ``frames_tracked``, ``output()``), ``obj_ids``,
``obj_idx(obj_id, create)``, ``load``, ``discard``, ``trim``, ``drop_object``, ``clear``,
``num_frames``.
"""

from __future__ import annotations

import numpy as np

from sam2kit.video.tracking import track_order


class TrackingSteps:
    """Prompts, propagation and editing over a session's results (see the module's doc)."""

    # ---- prompts ---------------------------------------------------------------------------

    def _prompt_frame(self, s, obj, frame_idx: int, points, mask):
        """Run a new prompt of ``obj`` on ``frame_idx`` and keep its result as temporary (a
        conditioning one on a frame not tracked yet, or with add_all_frames_to_correct_as_cond).
        Returns (frame_idx, obj_ids, every object's masks on the frame at video resolution)."""
        is_init = frame_idx not in obj.frames_tracked
        reverse = False if is_init else obj.frames_tracked[frame_idx]
        is_cond = is_init or self.add_all_frames_to_correct_as_cond
        prev_logits = None
        if points is not None:
            prev = obj.output(frame_idx, is_cond)
            if prev is not None:
                prev_logits = self._prompt_logits(s, s.load(prev))
        out, _ = self._run_frame(s, obj, frame_idx, is_init, points, mask, reverse,
                                 run_mem_encoder=False, prev_logits=prev_logits)
        temp = obj.temp_cond if is_cond else obj.temp_non_cond
        if frame_idx in temp:
            s.discard(temp[frame_idx])
        temp[frame_idx] = out
        return frame_idx, s.obj_ids, self._video_res(s, self._consolidate(s, frame_idx, is_cond))

    # ---- propagation -------------------------------------------------------------------------

    def _preflight(self, s) -> None:
        """Encode the memories of newly prompted frames and move them to the kept results."""
        if not s.objects:
            raise RuntimeError("No input points or masks are provided for any object; please add inputs first.")
        for obj in s.objects:
            for is_cond in (False, True):
                temp = obj.temp_cond if is_cond else obj.temp_non_cond
                kept = obj.cond if is_cond else obj.non_cond
                for frame_idx, out in temp.items():
                    if out.maskmem_features is None:
                        self._encode_prompt_memory(s, frame_idx, out)
                    if frame_idx in kept and kept[frame_idx] is not out:
                        s.discard(kept[frame_idx])
                    kept[frame_idx] = out
                    if self.clear_non_cond_mem_around_input:
                        self._clear_non_cond_mem_around(s, frame_idx)
                temp.clear()
            if not obj.cond:
                raise RuntimeError(f"No input points or masks are provided for object id {obj.obj_id}; "
                                   "please add inputs first.")
            for frame_idx in obj.cond:
                dropped = obj.non_cond.pop(frame_idx, None)
                if dropped is not None:
                    s.discard(dropped)

    def _propagation_order(self, s, start_frame_idx: int | None, max_frame_num_to_track: int | None,
                           reverse: bool) -> list[int]:
        """After the preflight: the frames ``propagate_in_video`` visits, in order (from the
        first prompted frame by default, over at most ``max_frame_num_to_track`` more)."""
        self._preflight(s)
        if start_frame_idx is None:
            start_frame_idx = min(t for o in s.objects for t in o.cond)
        self._check_frame(s, start_frame_idx)
        if max_frame_num_to_track is None:
            max_frame_num_to_track = s.num_frames
        return track_order(start_frame_idx, max_frame_num_to_track, s.num_frames, reverse)

    def _track_frame(self, s, frame_idx: int, reverse: bool):
        """One propagation step: every object on ``frame_idx`` (a prompted frame gives its
        prompt's result), then the session's ``trim``. Returns masks [num_objects, 1, H, W]
        logits at video resolution. Shared by ``propagate_in_video`` and live streams."""
        per_obj = []
        for obj in s.objects:
            if frame_idx in obj.cond:
                low_res = self._resident_logits(s, s.load(obj.cond[frame_idx]))
                if self.clear_non_cond_mem_around_input:
                    self._clear_non_cond_mem_around(s, frame_idx)
            else:
                out, low_res = self._run_frame(s, obj, frame_idx, False, None, None, reverse,
                                               run_mem_encoder=True)
                if frame_idx in obj.non_cond:
                    s.discard(obj.non_cond[frame_idx])
                obj.non_cond[frame_idx] = out
            obj.frames_tracked[frame_idx] = reverse
            per_obj.append(low_res)
        s.trim(frame_idx)
        return self._video_res(s, self._concat(per_obj))

    def _clear_non_cond_mem_around(self, s, frame_idx: int) -> None:
        r = self.memory_temporal_stride_for_eval * self.num_maskmem
        for obj in s.objects:
            for t in range(frame_idx - r, frame_idx + r + 1):
                dropped = obj.non_cond.pop(t, None)
                if dropped is not None:
                    s.discard(dropped)

    # ---- editing -------------------------------------------------------------------------------

    def _clear_prompts(self, s, frame_idx: int, obj_id, need_output: bool = True):
        """Remove ``obj_id``'s prompts on ``frame_idx``; a prompted frame becomes an ordinary
        tracked one. Returns (frame_idx, obj_ids, masks) or None without ``need_output``."""
        obj = s.objects[s.obj_idx(obj_id, create=True)]
        obj.point_inputs.pop(frame_idx, None)
        obj.mask_inputs.pop(frame_idx, None)
        for temp in (obj.temp_cond, obj.temp_non_cond):
            dropped = temp.pop(frame_idx, None)
            if dropped is not None:
                s.discard(dropped)
        out = obj.cond.pop(frame_idx, None)
        if out is not None:
            if frame_idx in obj.non_cond:
                s.discard(obj.non_cond[frame_idx])
            obj.non_cond[frame_idx] = out
            obj.frames_tracked.pop(frame_idx, None)
        if not need_output:
            return None
        is_cond = any(frame_idx in o.temp_cond for o in s.objects)
        return frame_idx, s.obj_ids, self._video_res(s, self._consolidate(s, frame_idx, is_cond))

    def _remove_object(self, s, obj_id, strict: bool = False, need_output: bool = True):
        """Remove an object. Returns (obj_ids, [(frame_idx, masks) of its prompted frames])."""
        idx = s.obj_idx(obj_id)
        if idx is None:
            if not strict:
                return s.obj_ids, []
            raise RuntimeError(f"Cannot remove object id {obj_id} as it doesn't exist. "
                               f"All existing object ids: {s.obj_ids}.")
        if len(s.objects) == 1:
            s.clear()
            return s.obj_ids, []
        obj = s.objects[idx]
        frames = set(obj.point_inputs) | set(obj.mask_inputs)
        for frame_idx in frames:
            self._clear_prompts(s, frame_idx, obj_id, need_output=False)
        s.drop_object(idx)
        updated = []
        if need_output:
            for frame_idx in frames:
                is_cond = any(frame_idx in o.temp_cond for o in s.objects)
                updated.append((frame_idx, self._video_res(s, self._consolidate(s, frame_idx, is_cond))))
        return s.obj_ids, updated

    @staticmethod
    def _check_frame(s, frame_idx: int) -> None:
        if not isinstance(frame_idx, (int, np.integer)) or not 0 <= frame_idx < s.num_frames:
            raise ValueError(f"frame_idx {frame_idx} is outside the video: it has {s.num_frames} frames "
                             f"(0..{s.num_frames - 1})")
