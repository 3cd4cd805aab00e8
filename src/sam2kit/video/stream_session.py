"""Live video in flat memory: a session fed one frame at a time, and ``track_stream``.

A ``StreamSession`` is a ``VideoSession`` whose frames arrive by ``push`` (or ``add_frame``
then ``track``) and whose past is forgotten as it goes: it keeps the newest ``window`` frames
(the memory window, ``num_maskmem`` frames), the prompted frames, the memories of the
window's frames and the object pointers of the frames the model still reads (the last
``max_obj_ptrs_in_encoder``); everything older is dropped, nothing goes to disk. Each frame
is tracked by the same step as ``propagate_in_video``, so with the same prompts the masks equal
those of the same frames tracked from a file (exactly).

One difference from a file: the reference scales object-pointer offsets by the video's length
when it is under ``max_obj_ptrs_in_encoder`` (16) frames (SAM 2.1 models). A stream has no
length, so its offsets are scaled as in any video of 16 frames or more.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from sam2kit.devices import release_free_memory
from sam2kit.video.session import VideoSession
from sam2kit.video.sources import DEFAULT_TIMEOUT_S, FrameFeed, check_frame, open_stream

STREAM_LENGTH = 2**62  # what a stream session reports as num_frames: no known end


class RecentFrames:
    """The frames a stream session keeps: the newest ``keep`` and the ``pinned`` ones (the
    prompted frames). ``get(i)`` as a FrameSource's; ``newest``: the last frame's index."""

    fps = None

    def __init__(self, keep: int):
        self.keep = keep
        self.newest = -1
        self.height = self.width = None
        self._frames: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return STREAM_LENGTH

    def __contains__(self, index) -> bool:
        return index in self._frames

    @property
    def kept(self) -> list[int]:
        return sorted(self._frames)

    def append(self, frame) -> int:
        arr = check_frame(frame, f"frame {self.newest + 1}")
        if self.height is None:
            self.height, self.width = arr.shape[:2]
        elif arr.shape[:2] != (self.height, self.width):
            raise ValueError(f"frame {self.newest + 1} is {arr.shape[0]}x{arr.shape[1]} (HxW) but the "
                             f"stream's first frame is {self.height}x{self.width}; all frames must "
                             "have the same size (resize them first)")
        self.newest += 1
        self._frames[self.newest] = arr
        return self.newest

    def get(self, index: int) -> np.ndarray:
        try:
            return self._frames[index]
        except KeyError:
            raise ValueError(f"frame {index} is no longer kept: a stream keeps its newest {self.keep} "
                             "frames and its prompted frames") from None

    def trim(self, pinned) -> None:
        oldest = self.newest - self.keep + 1
        for t in [t for t in self._frames if t < oldest and t not in pinned]:
            del self._frames[t]

    def close(self) -> None:
        self._frames.clear()


class StreamSession(VideoSession):
    """Tracking state of a live stream (``SAM2VideoPredictor.init_stream``).

    ``push(frame)`` adds an HxWx3 uint8 RGB frame (array or PIL image) and tracks every object
    on it: returns ``(obj_ids, masks [num_objects, 1, H, W] logits)`` (no objects yet: an empty
    list and a [0, 1, H, W] tensor). ``add_frame(frame)`` then ``track()`` do the same in two
    steps, so that the frame can be prompted before it is tracked. Prompts
    (``add_new_points_or_box``, ``add_new_mask``: the predictor's arguments without the state)
    go on frames still kept: the newest ``window`` frames and the prompted ones; objects may be
    added on any later frame. A prompt on an already tracked frame is a correction, as with a
    file: it takes effect on the next frame tracked. ``frame_idx`` is the newest frame's
    index (-1 before the first)."""

    def __init__(self, predictor, storage_device: torch.device, release_memory_every: int | None = None):
        model = predictor.model
        window = model.config.num_maskmem * predictor.memory_temporal_stride_for_eval
        super().__init__(RecentFrames(window), predictor.image_size, predictor.device, storage_device, window,
                         predictor.feature_cache_size, release_memory_every=release_memory_every)
        self.predictor = predictor
        self.num_frames = STREAM_LENGTH
        self.ptr_horizon = max(window, model.config.max_obj_ptrs_in_encoder)
        self.frames_tracked = 0

    @property
    def frame_idx(self) -> int:
        return self.frames.newest

    # ---- frames --------------------------------------------------------------------------

    def add_frame(self, frame) -> int:
        """Add the next frame without tracking it; returns its index."""
        self._check_open()
        idx = self.frames.append(frame)
        self.video_height, self.video_width = self.frames.height, self.frames.width
        return idx

    @torch.inference_mode()
    def track(self):
        """Track every object on the newest frame: ``(obj_ids, masks)`` as ``push``."""
        self._check_open()
        f = self.frames.newest
        if f < 0:
            raise RuntimeError("no frame yet: add one with push(frame) or add_frame(frame)")
        if not self.objects:
            self.trim(f)
            return [], torch.empty(0, 1, self.video_height, self.video_width, device=self.device)
        every = self.release_memory_every
        if every and self.frames_tracked and self.frames_tracked % every == 0 and self.device.type == "cpu":
            release_free_memory()
        self.predictor.propagate_in_video_preflight(self)
        masks = self.predictor._track_frame(self, f, reverse=False)
        self.frames_tracked += 1
        return self.obj_ids, masks

    def push(self, frame):
        """Add ``frame`` and track every object on it (see the class docstring)."""
        self.add_frame(frame)
        return self.track()

    def trim(self, frame_idx: int) -> None:
        """Forget what the model will not read again: memories and masks older than the
        window, object pointers older than ``ptr_horizon`` frames, frames older than the
        window (prompted frames stay)."""
        oldest_mem, oldest_ptr = frame_idx - self.window, frame_idx - self.ptr_horizon
        pinned = set()
        for obj in self.objects:
            pinned.update(obj.cond, obj.temp_cond, obj.temp_non_cond)
            for t in [t for t in obj.non_cond if t < oldest_mem]:
                out = obj.non_cond[t]
                if t < oldest_ptr:
                    del obj.non_cond[t]
                    self.discard(out)
                elif out.pred_masks is not None:
                    out.pred_masks = out.maskmem_features = None
                    out.key_cache.clear()
            for t in [t for t in obj.frames_tracked if t < oldest_mem and t not in obj.cond]:
                del obj.frames_tracked[t]
        self.frames.trim(pinned)

    # ---- prompts -------------------------------------------------------------------------

    def _check_prompt_frame(self, frame_idx) -> None:
        self._check_open()
        if not isinstance(frame_idx, (int, np.integer)) or frame_idx not in self.frames:
            kept = self.frames.kept
            raise ValueError(f"frame {frame_idx} cannot be prompted: a stream session prompts frames it "
                             f"still keeps (now {kept[:3] + ['...'] if len(kept) > 3 else kept} and up to "
                             f"{self.frames.newest}): the newest {self.window} and the prompted ones")

    def add_new_points_or_box(self, frame_idx: int, obj_id, points=None, labels=None,
                              clear_old_points: bool = True, normalize_coords: bool = True, box=None):
        """As ``SAM2VideoPredictor.add_new_points_or_box`` on a kept frame."""
        self._check_prompt_frame(frame_idx)
        return self.predictor.add_new_points_or_box(self, frame_idx, obj_id, points, labels,
                                                    clear_old_points, normalize_coords, box)

    def add_new_mask(self, frame_idx: int, obj_id, mask):
        """As ``SAM2VideoPredictor.add_new_mask`` on a kept frame."""
        self._check_prompt_frame(frame_idx)
        return self.predictor.add_new_mask(self, frame_idx, obj_id, mask)

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("the stream session is closed")

    @property
    def stored_outputs(self) -> int:
        """How many per-frame results the session holds (for tests and benchmarks)."""
        return sum(len(d) for o in self.objects for d in (o.cond, o.non_cond, o.temp_cond, o.temp_non_cond))


def apply_prompt(session: StreamSession, frame_idx: int, prompt: dict):
    """One prompt dict (``obj_id``, ``points``/``labels``, ``box``, ``mask``) on a kept frame."""
    unknown = set(prompt) - {"frame", "obj_id", "points", "labels", "box", "mask", "clear_old_points"}
    if unknown or "obj_id" not in prompt:
        raise ValueError(f"a prompt is a dict with obj_id and points/labels, box or mask (and frame); "
                         f"got keys {sorted(prompt)}")
    if prompt.get("mask") is not None:
        return session.add_new_mask(frame_idx, prompt["obj_id"], prompt["mask"])
    return session.add_new_points_or_box(frame_idx, prompt["obj_id"], prompt.get("points"), prompt.get("labels"),
                                         prompt.get("clear_old_points", True), box=prompt.get("box"))


def track_stream(predictor, source, prompts=(), *, realtime: bool | None = None, max_frames: int | None = None,
                 timeout: float | None = DEFAULT_TIMEOUT_S, reconnect: int = 0,
                 idle_timeout: float = DEFAULT_TIMEOUT_S, stats: dict | None = None,
                 offload_state_to_cpu: bool = False, release_memory_every: int | None = None):
    """Track objects through a live source; yields ``(frame_idx, obj_ids, masks)`` per frame
    as ``propagate_in_video`` (masks [num_objects, 1, H, W] logits), frame_idx counting the
    source's frames from 0.

    source: what ``sam2kit.video.sources.open_stream`` opens (a URL, ``"-"``, ``/dev/video0``, a file,
    a folder being filled, an iterable of frames) or a LiveSource. prompts: dicts with
    ``frame`` (default 0), ``obj_id`` and ``points`` + ``labels``, ``box`` or ``mask``, applied
    to their frame before it is tracked (to the next frame tracked, if theirs was dropped);
    frames before the first prompted one are read and skipped. realtime: drop the oldest
    waiting frames when tracking falls behind (default: on for cameras and network streams);
    the numbers of dropped frames go to ``stats["dropped"]`` (a dict of yours, also given
    ``frames_read``). max_frames: stop after tracking that many frames. timeout: a source
    silent for that long raises ``StreamError`` (as does one that breaks); a folder's stream
    ends instead after ``idle_timeout`` seconds without a new frame."""
    if not prompts:
        raise ValueError("give at least one prompt (a dict with obj_id and points/labels, box or mask)")
    pending = sorted((int(p.get("frame", 0)), k) for k, p in enumerate(prompts))
    first = pending[0][0]
    src = open_stream(source, timeout=timeout, reconnect=reconnect, idle_timeout=idle_timeout)
    feed = FrameFeed(src, src.live if realtime is None else realtime,
                     stall_timeout=src.stall_limit(timeout))
    stats = {} if stats is None else stats
    session = predictor.init_stream(offload_state_to_cpu=offload_state_to_cpu,
                                    release_memory_every=release_memory_every)
    tracked = 0
    try:
        while max_frames is None or tracked < max_frames:
            item = feed.get()
            if item is None:
                break
            index, frame, _ = item
            if index < first:
                continue  # before the first prompted frame
            f = session.add_frame(frame)
            while pending and pending[0][0] <= index:
                apply_prompt(session, f, prompts[pending.pop(0)[1]])
            obj_ids, masks = session.track()
            tracked += 1
            stats.update(dropped=list(feed.dropped), frames_read=feed.frames_read, frames_tracked=tracked)
            yield index, obj_ids, masks
    finally:
        feed.close()
        session.close()
        stats.update(dropped=list(feed.dropped), frames_read=feed.frames_read, frames_tracked=tracked,
                     finished=time.monotonic())
