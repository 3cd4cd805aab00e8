"""SAM2VideoPredictor on a small random model: behaviour, bounded state, exact spilling, errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from small_model import SMALL
from sam2kit import SAM2VideoPredictor, VideoSession
from sam2kit.build import build_model
from sam2kit.modeling.sam2 import MemoryFrame

SMALL21 = dataclasses.replace(SMALL, name="test-small-2.1", no_obj_embed_spatial=True,
                              add_tpos_enc_to_obj_ptrs=True, proj_tpos_enc_in_obj_ptrs=True,
                              use_signed_tpos_enc_to_obj_ptrs=True)


def make_model(config=SMALL21):
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():  # objects present, as with real weights
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(8.0)
    return model


def moving_frames(n: int, h: int = 72, w: int = 96) -> list[np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w]
    frames = []
    for i in range(n):
        img = np.full((h, w, 3), 90, np.uint8)
        img[((xx - 20 - 2 * i) ** 2 + (yy - 36) ** 2) < 150] = (230, 40, 40)
        img[(xx // 8 + yy // 8) % 2 == 0] += 20
        frames.append(img)
    return frames


@pytest.fixture(scope="module")
def predictor():
    return SAM2VideoPredictor(make_model())


def collect(gen):
    return {f: (ids, m.clone()) for f, ids, m in gen}


def test_two_objects_track_and_state_stays_bounded(predictor):
    frames = moving_frames(30)
    s = predictor.init_state(frames)
    assert isinstance(s, VideoSession) and s["num_frames"] == 30 and s["video_height"] == 72
    f, ids, masks = predictor.add_new_points_or_box(s, 0, 1, points=[[20, 36]], labels=[1])
    assert (f, ids, masks.shape) == (0, [1], (1, 1, 72, 96))
    f, ids, masks = predictor.add_new_points_or_box(s, 2, "b", box=[5, 5, 40, 60])
    assert ids == [1, "b"] and masks.shape == (2, 1, 72, 96)
    out = collect(predictor.propagate_in_video(s, progress=False))
    assert sorted(out) == list(range(30))
    assert all(m.shape == (2, 1, 72, 96) for _, m in out.values())
    # kept in memory: prompted frames and the memory window; the rest lives on disk
    assert s.resident_outputs <= 2 * (s.window + 2) + 2
    assert len(s.cached_feature_frames) <= 2
    spilled = [o for obj in s.objects for o in obj.non_cond.values() if o.spilled]
    assert len(spilled) >= 2 * (30 - s.window - 4)
    assert all(o.spill_path.exists() for o in spilled)
    root = s.spill.root
    assert root.is_dir() and s.spill.nbytes == sum(o.spill_path.stat().st_size for o in spilled)
    s.close()
    assert not root.exists()


def test_propagation_hands_free_heap_memory_back_when_asked(predictor, monkeypatch):
    """With release_memory_every=N the heap's free pages go back to the system every N frames
    and at close, so a long video's RSS does not creep up with fragmentation; without it (the
    library's default) the host process's heap is left alone."""
    import sam2kit.video.session
    import sam2kit.video.predictor

    calls = []
    monkeypatch.setattr(sam2kit.video.predictor, "release_free_memory", lambda: calls.append("frame"))
    monkeypatch.setattr(sam2kit.video.session, "release_free_memory", lambda: calls.append("close"))
    for every, expected in ((4, ["frame"] * 4 + ["close"]), (None, [])):  # before frames 4, 8, 12, 16
        calls.clear()
        with predictor.init_state(moving_frames(18), release_memory_every=every) as s:
            predictor.add_new_points_or_box(s, 0, 1, points=[[20, 36]], labels=[1])
            assert len(collect(predictor.propagate_in_video(s, progress=False))) == 18
        assert calls == expected


def test_spilling_changes_no_result(predictor):
    """Forward, correction, reverse: the same masks whether old memories go to disk or not."""
    frames = moving_frames(24)

    def run(window):
        s = predictor.init_state(frames)
        s.window = window
        predictor.add_new_points_or_box(s, 0, 1, points=[[20, 36]], labels=[1])
        a = collect(predictor.propagate_in_video(s, progress=False))
        predictor.add_new_points_or_box(s, 20, 1, points=[[70, 10]], labels=[0], clear_old_points=False)
        b = collect(predictor.propagate_in_video(s, start_frame_idx=16, reverse=True, progress=False))
        predictor.add_new_points_or_box(s, 9, 2, points=[[60, 30]], labels=[1])
        c = collect(predictor.propagate_in_video(s, progress=False))
        s.close()
        return a, b, c

    spilled, kept = run(window=7), run(window=10_000)
    for x, y in zip(spilled, kept):
        assert x.keys() == y.keys()
        for f in x:
            assert x[f][0] == y[f][0]
            torch.testing.assert_close(x[f][1], y[f][1], rtol=0, atol=0)


def test_video_file_and_png_frames_give_identical_results(predictor, tmp_path):
    import av

    from clips import write_clip

    frames = moving_frames(12)
    path = write_clip(tmp_path / "clip.mp4", frames, 10)
    pngs = tmp_path / "pngs"
    pngs.mkdir()
    with av.open(str(path)) as c:
        for i, fr in enumerate(c.decode(video=0)):
            Image.fromarray(fr.to_ndarray(format="rgb24")).save(pngs / f"{i}.png")

    def run(src):
        s = predictor.init_state(str(src))
        predictor.add_new_points_or_box(s, 3, 1, points=[[26, 36]], labels=[1])
        out = collect(predictor.propagate_in_video(s, progress=False))
        out.update({-f - 1: v for f, v in collect(
            predictor.propagate_in_video(s, start_frame_idx=3, reverse=True, progress=False)).items()})
        s.close()
        return out

    a, b = run(path), run(pngs)
    assert a.keys() == b.keys() and len(a) == 9 + 4  # frames 3..11, then 3..0
    for f in a:
        assert torch.equal(a[f][1], b[f][1]), f


def test_editing_api(predictor):
    s = predictor.init_state(moving_frames(10))
    mask = np.zeros((72, 96), bool)
    mask[20:50, 10:40] = True
    f, ids, m = predictor.add_new_mask(s, 1, 5, mask)
    assert ids == [5] and ((m[0, 0] > 0).numpy() == mask).mean() > 0.95  # the mask is the output
    predictor.add_new_points_or_box(s, 4, 6, points=[[60, 30]], labels=[1])
    out = collect(predictor.propagate_in_video(s, progress=False))
    assert sorted(out) == list(range(1, 10))
    # an object added after tracking, tracked on the next pass
    predictor.add_new_points_or_box(s, 6, 7, points=[[30, 30]], labels=[1])
    out = collect(predictor.propagate_in_video(s, progress=False))
    assert out[6][0] == [5, 6, 7]
    f, ids, m = predictor.clear_all_prompts_in_frame(s, 4, 6)
    assert f == 4 and m.shape == (3, 1, 72, 96)
    assert 4 not in s.objects[1].cond and 4 in s.objects[1].non_cond
    ids, updated = predictor.remove_object(s, 5)
    assert ids == [6, 7] and [f for f, _ in updated] == [1]
    assert predictor.remove_object(s, 99) == ([6, 7], [])
    with pytest.raises(RuntimeError, match="doesn't exist"):
        predictor.remove_object(s, 99, strict=True)
    predictor.reset_state(s)
    assert s.obj_ids == [] and s.resident_outputs == 0
    with pytest.raises(RuntimeError, match="No input points or masks"):
        list(predictor.propagate_in_video(s, progress=False))
    s.close()


def test_non_overlap_and_offload():
    p = SAM2VideoPredictor(make_model(), non_overlap_masks=True)
    s = p.init_state(moving_frames(4), offload_state_to_cpu=True)
    assert s.storage_device.type == "cpu"
    p.add_new_points_or_box(s, 0, 1, points=[[20, 36]], labels=[1])
    _, _, m = p.add_new_points_or_box(s, 0, 2, points=[[22, 36]], labels=[1])
    assert not ((m[0] > 0) & (m[1] > 0)).any()
    for _, _, m in p.propagate_in_video(s, progress=False):
        assert not ((m[0] > 0) & (m[1] > 0)).any()
    s.close()


@pytest.mark.parametrize("call,match", [
    (lambda p, s: p.add_new_points_or_box(s, 10, 1, points=[[1, 1]], labels=[1]), "outside the video"),
    (lambda p, s: p.add_new_points_or_box(s, -1, 1, points=[[1, 1]], labels=[1]), "outside the video"),
    (lambda p, s: p.add_new_points_or_box(s, 0, 1, points=[[1, 1]]), "together"),
    (lambda p, s: p.add_new_points_or_box(s, 0, 1), "at least one of points or box"),
    (lambda p, s: p.add_new_points_or_box(s, 0, 1, points=[[1, 1]], labels=[3]), "1 \\(foreground\\) or 0"),
    (lambda p, s: p.add_new_points_or_box(s, 0, 1, points=[1, 1, 1], labels=[1]), "Nx2"),
    (lambda p, s: p.add_new_points_or_box(s, 0, 1, box=[1, 2, 3]), "XYXY"),
    (lambda p, s: p.add_new_points_or_box(s, 0, 1, box=[1, 2, 3, 4], clear_old_points=False), "clear_old_points"),
    (lambda p, s: p.add_new_mask(s, 0, 1, np.zeros((2, 3, 4))), "2-D"),
    (lambda p, s: list(p.propagate_in_video(s, start_frame_idx=12)), "outside the video"),
])
def test_bad_calls(predictor, call, match):
    s = predictor.init_state(moving_frames(10))
    predictor.add_new_points_or_box(s, 0, 9, points=[[1, 1]], labels=[1])
    with pytest.raises(ValueError, match=match):
        call(predictor, s)
    s.close()


def test_every_video_parameter_is_used():
    """One tracking step with memories and pointers reaches every parameter the image path
    does not (the image test covers the rest)."""
    model = make_model().train(False)
    feats = model.encode_image(torch.randn(1, 3, 256, 256))
    mask = torch.zeros(1, 1, 256, 256)
    mask[..., 50:150, 60:200] = 1
    cond = model.mask_as_output(feats, mask)
    mem, pos = model.encode_memory(feats, cond.high_res_masks, cond.object_score_logits, binarize=False)
    absent_mem, _ = model.encode_memory(feats, cond.high_res_masks, -cond.object_score_logits, binarize=True)
    memories = [MemoryFrame(mem, pos, 0), MemoryFrame(absent_mem, pos, 3)]
    pix = model.condition_on_memory(feats, memories, [(0, cond.obj_ptr), (2, cond.obj_ptr)], 16)
    head = model.sam_heads(pix, feats.high_res, None, None, True)
    empty = model.mask_as_output(feats, torch.zeros_like(mask))  # an absent object's pointer
    loss = head.low_res_masks.sum() + head.obj_ptr.sum() + pix.sum() + empty.obj_ptr.sum()
    loss.backward()
    video_only = ("memory_attention.", "memory_encoder.", "maskmem_tpos_enc", "no_obj_ptr",
                  "mask_downsample.", "obj_ptr_proj.", "obj_ptr_tpos_proj.", "no_obj_embed_spatial")
    unused = sorted(n for n, p in model.named_parameters()
                    if n.startswith(video_only) and (p.grad is None or not p.grad.abs().sum() > 0))
    assert not unused, unused
    # no_mem_pos_enc is in the checkpoints but SAM 2 reads it only when no_mem_embed is not
    # added directly, which no official config does
    assert model.no_mem_pos_enc.grad is None
