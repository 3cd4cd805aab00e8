"""The rules of video tracking that do not depend on a tensor library (pure Python).

Shared by the PyTorch video predictor (``sam2kit.video.predictor``) and the ONNX runtime
(``sam2kit.onnx.video``), so that both choose the same memories and pointers: which
conditioning frames a frame attends to, which earlier frames fill the memory slots, which
frames' object pointers it reads and with what temporal offsets, and when a prompt asks for
several candidate masks. Results are any objects (a torch ``FrameOutput``, a NumPy record).
"""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def select_closest_cond_frames(frame_idx: int, cond: dict, max_cond_frames: int):
    """Up to ``max_cond_frames`` conditioning frames nearest ``frame_idx`` (the closest before,
    the closest after, then the nearest others); returns (selected, unselected) dicts."""
    if max_cond_frames == -1 or len(cond) <= max_cond_frames:
        return cond, {}
    if max_cond_frames < 2:
        raise ValueError("max_cond_frames_in_attn must be -1 or at least 2")
    selected = {}
    before = max((t for t in cond if t < frame_idx), default=None)
    if before is not None:
        selected[before] = cond[before]
    after = min((t for t in cond if t >= frame_idx), default=None)
    if after is not None:
        selected[after] = cond[after]
    rest = sorted((t for t in cond if t not in selected), key=lambda t: abs(t - frame_idx))
    selected.update((t, cond[t]) for t in rest[: max_cond_frames - len(selected)])
    return selected, {t: v for t, v in cond.items() if t not in selected}


def memory_slot_frames(frame_idx: int, reverse: bool, num_maskmem: int, stride: int = 1) -> list[tuple[int, int]]:
    """The earlier frames that fill memory slots 1..num_maskmem-1 when tracking ``frame_idx``:
    [(slot t_pos, frame index)] (slot num_maskmem-1 is the previous frame; "earlier" is later
    in reverse). Frames outside the video or without a result are skipped by the caller."""
    out = []
    for t_pos in range(1, num_maskmem):
        t_rel = num_maskmem - t_pos
        if t_rel == 1:
            prev = frame_idx + t_rel if reverse else frame_idx - t_rel
        elif not reverse:
            prev = ((frame_idx - 2) // stride) * stride - (t_rel - 2) * stride
        else:
            prev = -(-(frame_idx + 2) // stride) * stride + (t_rel - 2) * stride
        out.append((t_pos, prev))
    return out


def gather_memory(frame_idx: int, reverse: bool, cond: dict[int, T], non_cond: dict[int, T],
                  num_frames: int, num_maskmem: int, max_obj_ptrs: int, max_cond_frames: int = -1,
                  stride: int = 1, signed_offsets: bool = False
                  ) -> tuple[list[tuple[int, T]], list[tuple[int, T]]]:
    """What tracking one object on ``frame_idx`` attends to (the reference's choice).

    cond / non_cond: the object's results on prompted / propagated frames by frame index.
    Returns (memories [(slot t_pos, result)]: the selected conditioning frames in slot 0, then
    the num_maskmem-1 frames before; pointers [(temporal offset, result)]: the selected
    conditioning frames not after ``frame_idx`` (not before in reverse), then up to
    ``max_obj_ptrs``-1 frames before). ``max_obj_ptrs`` is min(num_frames,
    max_obj_ptrs_in_encoder); offsets are signed (SAM 2.1) or absolute."""
    selected, unselected = select_closest_cond_frames(frame_idx, cond, max_cond_frames)

    def lookup(t: int):
        return non_cond.get(t, unselected.get(t))

    memories = [(0, out) for out in selected.values()]
    for t_pos, prev in memory_slot_frames(frame_idx, reverse, num_maskmem, stride):
        out = lookup(prev)
        if out is not None:
            memories.append((t_pos, out))
    sign = -1 if reverse else 1
    past = {t: o for t, o in selected.items() if (t >= frame_idx if reverse else t <= frame_idx)}
    ptrs = [((frame_idx - t) * sign if signed_offsets else abs(frame_idx - t), o) for t, o in past.items()]
    for t_diff in range(1, max_obj_ptrs):
        t = frame_idx + t_diff if reverse else frame_idx - t_diff
        if t < 0 or t >= num_frames:
            break
        out = lookup(t)
        if out is not None:
            ptrs.append((t_diff, out))
    return memories, ptrs


def pointer_offset_scale(max_obj_ptrs: int) -> int:
    """The divisor of pointer offsets before their temporal encoding: max(max_obj_ptrs - 1, 1)."""
    return max(max_obj_ptrs - 1, 1)


def use_multimask(num_points: int, min_points: int, max_points: int) -> bool:
    """Whether a tracking prompt with ``num_points`` points (box corners included) asks for
    three candidate masks (and keeps the best): the config's multimask_{min,max}_pt_num."""
    return min_points <= num_points <= max_points


def track_order(start_frame_idx: int, max_frame_num_to_track: int, num_frames: int, reverse: bool) -> range:
    """The frames ``propagate_in_video`` visits, in order."""
    if reverse:
        end = max(start_frame_idx - max_frame_num_to_track, 0)
        return range(start_frame_idx, end - 1, -1) if start_frame_idx > 0 else range(0)
    end = min(start_frame_idx + max_frame_num_to_track, num_frames - 1)
    return range(start_frame_idx, end + 1)
