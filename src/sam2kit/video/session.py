"""The video session: a typed object holding one video's tracking state.

What the model reads again stays in memory at full size: conditioning (prompted) frames,
the non-conditioning frames within ``num_maskmem`` of the frame being tracked, and every
object pointer and object score (a few hundred bytes a frame). Older frames' memories and
low-res masks move to a spill folder on disk and come back when tracking reaches them again
(a correction click, a second pass, reverse tracking), so results equal those of keeping
everything, in memory that does not grow with the video. Image features are cached for a
few frames only, and frames are decoded when needed.

A session is closed with ``close()``, by leaving a ``with`` block, or when it is garbage
collected; its spill folder goes with it (``sam2kit.video.spill``).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sam2kit.devices import release_free_memory
from sam2kit.modeling.sam2 import ImageFeatures
from sam2kit.video.spill import DiskBudget, SpillStore

_uid = itertools.count()


@dataclass
class FrameOutput:
    """One object's result on one frame.

    pred_masks: [1, 1, S/4, S/4] float32 low-res logits (holes filled); obj_ptr: [1, 256];
    object_score_logits: [1, 1]; maskmem_features: [1, 64, S/16, S/16] bfloat16, or None
    before the memory encoder has run. While spilled, the two large tensors live on disk.
    key_cache: what memory attention derived from maskmem_features while this frame is in
    an object's memory (see MemoryFrame.cache); emptied when the features change or leave.
    """

    pred_masks: torch.Tensor | None
    obj_ptr: torch.Tensor
    object_score_logits: torch.Tensor
    maskmem_features: torch.Tensor | None
    spill_path: Path | None = None
    key_cache: dict = field(default_factory=dict, repr=False)

    @property
    def spilled(self) -> bool:
        return self.pred_masks is None and self.spill_path is not None


@dataclass
class ObjectState:
    """Prompts and results of one object. ``cond``/``non_cond`` map frame index to results
    of prompted and propagated frames; ``temp_*`` hold results of prompts not yet
    propagated; ``frames_tracked`` maps frame index to whether it was tracked in reverse."""

    obj_id: int
    uid: int = field(default_factory=lambda: next(_uid))
    point_inputs: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    mask_inputs: dict[int, torch.Tensor] = field(default_factory=dict)
    # results whose key_cache the last tracking step filled (its memory frames)
    key_cached: list[FrameOutput] = field(default_factory=list)
    cond: dict[int, FrameOutput] = field(default_factory=dict)
    non_cond: dict[int, FrameOutput] = field(default_factory=dict)
    temp_cond: dict[int, FrameOutput] = field(default_factory=dict)
    temp_non_cond: dict[int, FrameOutput] = field(default_factory=dict)
    frames_tracked: dict[int, bool] = field(default_factory=dict)

    def output(self, frame_idx: int, is_cond: bool | None = None) -> FrameOutput | None:
        """The newest result on a frame: temporary (of the given kind, or either), then
        conditioning, then propagated."""
        temps = [self.temp_cond, self.temp_non_cond] if is_cond is None else \
            [self.temp_cond if is_cond else self.temp_non_cond]
        for d in temps + [self.cond, self.non_cond]:
            if frame_idx in d:
                return d[frame_idx]
        return None


class VideoSession:
    """State of one video for ``SAM2VideoPredictor`` (the reference's ``inference_state``).

    device: where the model computes; storage_device: where kept results live (the CPU
    with ``offload_state_to_cpu``). spill_dir: where the spill folder goes (default: the
    temporary folder); spill_limit_bytes: its disk budget, in bytes or a ``DiskBudget`` shared
    with other sessions (None: none; past it, tracking raises ``SpillLimitError``); a spilled result costs about 768 KiB per frame and object at
    1024 px (192 KiB at 512). release_memory_every: hand the process heap's free pages back
    to the system every that many tracked frames and at close (process-wide; off by default).
    ``memory_cache``: what memory attention keeps of this video's memories between frames.
    Reading ``session["num_frames"]`` and the other keys scripts commonly read from the
    reference's dict works too. Use it as a context manager, or call ``close()``.
    """

    def __init__(self, frames, image_size: int, device: torch.device, storage_device: torch.device,
                 window: int, feature_cache_size: int = 2, spill_dir: str | Path | None = None,
                 spill_limit_bytes: "int | DiskBudget | None" = None, release_memory_every: int | None = None):
        if release_memory_every is not None and release_memory_every < 1:
            raise ValueError(f"release_memory_every must be a positive number of frames or None, "
                             f"got {release_memory_every}")
        self.spill = SpillStore(spill_dir, spill_limit_bytes)
        self.frames = frames
        self.num_frames = len(frames)
        self.video_height, self.video_width = frames.height, frames.width
        self.image_size = image_size
        self.device = device
        self.storage_device = storage_device
        self.window = window
        self.release_memory_every = release_memory_every
        self.objects: list[ObjectState] = []
        self.maskmem_pos: torch.Tensor | None = None  # [1, 64, h, w], the same for every memory
        self.memory_cache: dict = {}
        self._features: OrderedDict[int, ImageFeatures] = OrderedDict()
        self._feature_cache_size = feature_cache_size
        self.closed = False

    # ---- objects ---------------------------------------------------------------------

    @property
    def obj_ids(self) -> list:
        return [o.obj_id for o in self.objects]

    def obj_idx(self, obj_id, create: bool = False) -> int | None:
        for i, o in enumerate(self.objects):
            if o.obj_id == obj_id:
                return i
        if not create:
            return None
        self.objects.append(ObjectState(obj_id))
        return len(self.objects) - 1

    @property
    def tracked_frames(self) -> list[int]:
        """Frames on which some object has a result (prompted or tracked), in order."""
        frames = set()
        for o in self.objects:
            for d in (o.cond, o.non_cond, o.temp_cond, o.temp_non_cond):
                frames.update(d)
        return sorted(frames)

    def object_scores(self, frame_idx: int) -> list[float | None]:
        """Each object's object-score logit on ``frame_idx`` (> 0: the object is visible), in
        ``obj_ids`` order; None for an object without a result there."""
        scores = []
        for obj in self.objects:
            out = obj.output(frame_idx)
            scores.append(None if out is None else float(out.object_score_logits.reshape(-1)[0]))
        return scores

    def drop_object(self, idx: int) -> None:
        obj = self.objects.pop(idx)
        for d in (obj.cond, obj.non_cond, obj.temp_cond, obj.temp_non_cond):
            for out in d.values():
                self.discard(out)

    def clear(self) -> None:
        for idx in range(len(self.objects) - 1, -1, -1):
            self.drop_object(idx)

    # ---- image features --------------------------------------------------------------

    def cached_features(self, frame_idx: int) -> ImageFeatures | None:
        feats = self._features.get(frame_idx)
        if feats is not None:
            self._features.move_to_end(frame_idx)
        return feats

    def cache_features(self, frame_idx: int, feats: ImageFeatures) -> None:
        self._features[frame_idx] = feats
        self._features.move_to_end(frame_idx)
        while len(self._features) > self._feature_cache_size:
            self._features.popitem(last=False)

    @property
    def cached_feature_frames(self) -> list[int]:
        return list(self._features)

    # ---- results kept for later: in memory near the current frame, else on disk -------

    def store(self, out: FrameOutput) -> FrameOutput:
        """Move a fresh result to the storage device (memory features as bfloat16)."""
        dev = self.storage_device
        out.pred_masks = out.pred_masks.to(dev)
        out.obj_ptr = out.obj_ptr.to(dev)
        out.object_score_logits = out.object_score_logits.to(dev)
        if out.maskmem_features is not None:
            out.maskmem_features = out.maskmem_features.to(torch.bfloat16).to(dev)
        out.key_cache.clear()
        return out

    def load(self, out: FrameOutput) -> FrameOutput:
        """Bring a spilled result back into memory (it stays on disk too until replaced)."""
        if out.spilled:
            data = self.spill.load(out.spill_path, self.storage_device)
            out.pred_masks = data["pred_masks"]
            out.maskmem_features = data.get("maskmem_features")
        return out

    def spill_out(self, obj: ObjectState, frame_idx: int, out: FrameOutput) -> None:
        """Move a result's large tensors to the spill folder (written once, kept until the
        result is replaced)."""
        if out.spilled or out.pred_masks is None:
            return
        if out.spill_path is None:
            data = {"pred_masks": out.pred_masks}
            if out.maskmem_features is not None:
                data["maskmem_features"] = out.maskmem_features
            out.spill_path = self.spill.save(f"{obj.uid}-{frame_idx}-{next(_uid)}.pt", data)
        out.pred_masks = None
        out.maskmem_features = None
        out.key_cache.clear()

    def discard(self, out: FrameOutput) -> None:
        if out.spill_path is not None:
            self.spill.remove(out.spill_path)
            out.spill_path = None

    def trim(self, frame_idx: int) -> None:
        """Spill propagated results farther than the memory window from ``frame_idx``."""
        for obj in self.objects:
            for t, out in obj.non_cond.items():
                if abs(t - frame_idx) > self.window and not out.spilled:
                    self.spill_out(obj, t, out)

    @property
    def resident_outputs(self) -> int:
        """How many results hold their large tensors in memory (for tests and benchmarks)."""
        return sum(out.pred_masks is not None for o in self.objects
                   for d in (o.cond, o.non_cond, o.temp_cond, o.temp_non_cond) for out in d.values())

    def close(self) -> None:
        """Release everything: results, cached features, the frame reader, the spill folder.
        Closing twice is harmless."""
        if self.closed:
            return
        self.closed = True
        self.clear()
        self._features.clear()
        self.memory_cache.clear()
        self.maskmem_pos = None
        close = getattr(self.frames, "close", None)
        if close is not None:
            close()
        self.spill.close()
        if self.release_memory_every:
            release_free_memory()  # what the session's tensors and frames occupied

    def __enter__(self) -> "VideoSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- the reference's dict keys, read-only ------------------------------------------

    _KEYS = {"num_frames", "video_height", "video_width", "obj_ids", "device", "storage_device"}

    def __getitem__(self, key: str):
        if key in self._KEYS:
            return getattr(self, key)
        raise KeyError(f"{key!r}: the session is a VideoSession object; see its attributes")
