"""Live streams from Python: the push API and track_stream equal file tracking, in flat memory;
sources (a folder being filled, a file in any container, a camera that does not exist), the
real-time feed's dropping, and clear errors."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from small_model import SMALL
from test_video import SMALL21, make_model, moving_frames
from sam2kit import SAM2VideoPredictor
from sam2kit.video.sources import FolderSource, FrameFeed, IndexRanges, IterSource, StreamError, open_stream


@pytest.fixture(scope="module")
def predictor():
    return SAM2VideoPredictor(make_model(SMALL21))


@pytest.fixture(scope="module")
def predictor20():
    """SAM 2.0: object-pointer offsets are not scaled by the video's length, so a stream equals
    a file of any length (with SAM 2.1, of 16 frames or more)."""
    return SAM2VideoPredictor(make_model(SMALL))


def file_masks(predictor, frames, prompts):
    """The masks of tracking ``frames`` as a video with the normal predictor, each prompt added
    when tracking reaches its frame (as a stream gets them: a stream cannot know a later
    prompt, which a file's propagation would use on earlier frames too)."""
    out = {}
    with predictor.init_state(frames) as s:
        starts = sorted({p["frame"] for p in prompts})
        for k, start in enumerate(starts):
            for p in prompts:
                if p["frame"] == start:
                    predictor.add_new_points_or_box(s, start, p["obj_id"], p.get("points"), p.get("labels"),
                                                    box=p.get("box"))
            end = starts[k + 1] - 1 if k + 1 < len(starts) else s.num_frames - 1
            for f, ids, m in predictor.propagate_in_video(s, start, end - start, progress=False):
                out[f] = (list(ids), m.clone())
    return out


PROMPTS = [{"frame": 0, "obj_id": 1, "points": [[20, 36]], "labels": [1]},
           {"frame": 5, "obj_id": 2, "box": [50, 10, 90, 60]},
           {"frame": 9, "obj_id": 1, "points": [[40, 36], [80, 10]], "labels": [1, 0]}]


def test_track_stream_equals_file_tracking(predictor):
    """A SAM 2.1 model (object-pointer offsets scaled by the video's length), 20 frames, a
    second object added on frame 5 and a correction on frame 9: the same masks, exactly."""
    frames = moving_frames(20)
    expected = file_masks(predictor, frames, PROMPTS)
    stats = {}
    got = {f: (ids, m.clone()) for f, ids, m in predictor.track_stream(iter(frames), PROMPTS, stats=stats)}
    assert sorted(got) == sorted(expected) == list(range(20))
    for f in expected:
        assert got[f][0] == expected[f][0], f
        torch.testing.assert_close(got[f][1], expected[f][1], rtol=0, atol=0)
    assert stats["dropped"] == [] and stats["frames_read"] == 20 and stats["frames_tracked"] == 20


def test_push_api_equals_file_tracking_and_stays_flat(predictor):
    """push, then prompt the frame just pushed (the first one, and a later one for a new object):
    the file's masks; what the session holds stops growing after the window fills."""
    frames = moving_frames(40)
    expected = file_masks(predictor, frames, PROMPTS[:2])
    sizes = []
    with predictor.init_stream() as s:
        assert s.push(frames[0])[0] == [] and s.frame_idx == 0
        _, ids, m0 = s.add_new_points_or_box(0, 1, points=[[20, 36]], labels=[1])
        torch.testing.assert_close(m0, expected[0][1], rtol=0, atol=0)
        for f in range(1, 40):
            if f == 5:  # a new object prompted on the frame before it is tracked
                s.add_frame(frames[f])
                s.add_new_points_or_box(5, 2, box=[50, 10, 90, 60])
                ids, masks = s.track()
            else:
                ids, masks = s.push(frames[f])
            assert ids == expected[f][0]
            torch.testing.assert_close(masks, expected[f][1], rtol=0, atol=0)
            sizes.append((s.stored_outputs, s.resident_outputs, len(s.frames.kept),
                          sum(len(o.frames_tracked) for o in s.objects), len(s.cached_feature_frames)))
        assert s.spill.root is None  # nothing ever went to disk
        # two objects: pointers of 17 frames each and the prompted frame, memories of 7 frames
        stored, resident, kept, tracked, feats = sizes[-1]
        assert stored <= 2 * (s.ptr_horizon + 2) and resident <= 2 * (s.window + 2)
        assert kept <= s.window + 2 and tracked <= 2 * (s.window + 2) and feats <= 2
        assert sizes[-1] == sizes[-10]  # flat
        with pytest.raises(ValueError, match="cannot be prompted"):
            s.add_new_points_or_box(20, 1, points=[[1, 1]], labels=[1])  # left the window
        s.add_new_points_or_box(38, 3, points=[[60, 30]], labels=[1])  # a kept frame: fine
        with pytest.raises(ValueError, match="same size"):
            s.push(frames[0][:10])
    with pytest.raises(RuntimeError, match="closed"):
        s.push(frames[0])


def test_push_rejects_bad_frames(predictor):
    with predictor.init_stream() as s:
        with pytest.raises(ValueError, match="HxWx3 uint8"):
            s.push(np.zeros((8, 8), np.uint8))
        with pytest.raises(RuntimeError, match="no frame yet"):
            s.track()
        ids, masks = s.push(Image.fromarray(moving_frames(1)[0]))  # a PIL image works
        assert ids == [] and masks.shape == (0, 1, 72, 96)
    with pytest.raises(ValueError, match="at least one prompt"):
        next(predictor.track_stream(moving_frames(2), []))


def test_folder_followed_while_a_writer_fills_it(predictor20, tmp_path):
    """A writer thread saves PNG frames (non-atomically, in pieces) while track_stream follows the
    folder: every frame is tracked, in order, with the masks of tracking the finished folder."""
    frames = moving_frames(8)
    folder = tmp_path / "incoming"
    folder.mkdir()

    def writer():
        for i, f in enumerate(frames):
            data = _png_bytes(f)
            with open(folder / f"frame_{i:04d}.png", "wb") as fh:
                fh.write(data[: len(data) // 2])
                fh.flush()
                time.sleep(0.05)  # half a file on disk for a while
                fh.write(data[len(data) // 2:])
            time.sleep(0.1)

    t = threading.Thread(target=writer)
    t.start()
    src = open_stream(folder, idle_timeout=1.5)
    got = {f: m.clone() for f, _, m in predictor20.track_stream(src, PROMPTS[:1])}
    t.join()
    expected = file_masks(predictor20, folder, PROMPTS[:1])
    assert sorted(got) == list(range(8))
    for f in got:
        torch.testing.assert_close(got[f], expected[f][1], rtol=0, atol=0)


def _png_bytes(arr):
    import io
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_any_container_is_judged_by_opening(tmp_path):
    from clips import write_clip
    from sam2kit.video.io import open_frames

    frames = moving_frames(6)
    path = write_clip(tmp_path / "clip.ts", frames, 10, container="mpegts")
    with open_frames(path) as src:  # a file: random access as any video
        assert len(src) == 6 and (src.height, src.width) == (72, 96)
        decoded = [src.get(i) for i in range(6)]
    with open_stream(path) as live:  # the same file read as a stream: the same frames
        assert live.kind == "file" and not live.live
        streamed = list(live)
    assert len(streamed) == 6 and all(np.array_equal(a, b) for a, b in zip(decoded, streamed))
    junk = tmp_path / "notes.ts"
    junk.write_bytes(b"this is not a video" * 50)
    with pytest.raises(ValueError, match="cannot"):
        open_frames(junk)
    with pytest.raises(ValueError, match="cannot read a video"):
        open_stream(junk)


def test_camera_that_does_not_exist():
    with pytest.raises(ValueError, match=r"camera /dev/video97 does not exist"):
        open_stream("/dev/video97")
    with pytest.raises(ValueError, match=r"/dev/video98 does not exist"):
        open_stream(camera=98)


def test_realtime_feed_drops_the_oldest_waiting_frames():
    """A source faster than its consumer: a real-time feed keeps the newest frames and lists the
    dropped ones; without real time every frame comes, in order."""
    def fast():
        for i in range(30):
            yield np.full((4, 4, 3), i, np.uint8)

    feed = FrameFeed(IterSource(fast()), realtime=True, max_waiting=2)
    got = []
    while (item := feed.get()) is not None:
        got.append(item[0])
        time.sleep(0.02)
    feed.close()
    assert got[-1] == 29 and sorted(got + feed.dropped) == list(range(30))
    assert len(feed.dropped) > 0 and got == sorted(got)
    feed = FrameFeed(IterSource(fast()), realtime=False, max_waiting=2)
    got = []
    while (item := feed.get()) is not None:
        got.append(int(item[1][0, 0, 0]))
    assert got == list(range(30)) and feed.dropped == []


def test_index_ranges_hold_numbers_compactly_and_boundedly():
    r = IndexRanges(limit=None)
    order = np.random.default_rng(0).permutation(60)[:40]
    for i in order:
        r.append(int(i))
    assert list(r) == sorted(order.tolist()) and len(r) == 40 and r.complete
    assert all(i in r for i in order) and not any(i in r for i in set(range(60)) - set(order.tolist()))
    capped = IndexRanges(limit=2)
    for i in (1, 2, 3, 7, 9, 10, 20, 4, 8):  # 9 and 10 make a third range: counted, not listed
        capped.append(i)
    assert capped.ranges() == [[1, 4], [7, 8]] and len(capped) == 9 and not capped.complete
    feed = FrameFeed(IterSource(np.zeros((5, 4, 4, 3), np.uint8)), realtime=True, max_waiting=1,
                     dropped=IndexRanges())
    while feed.frames_read < 5:  # the reader runs ahead: frames 0-3 dropped
        time.sleep(0.01)
    assert feed.get()[0] == 4 and feed.get() is None
    assert isinstance(feed.dropped, IndexRanges) and len(feed.dropped) == 4 and feed.dropped.ranges() == [[0, 3]]


@pytest.mark.parametrize("follow", ["notify", "poll"])
def test_folder_counts_late_frames(tmp_path, follow):
    """A frame that appears numbered at or below one already taken is skipped and counted once,
    however often the folder is listed afterwards (or, with notifications, whatever events it
    brings); the same with OS notifications and with polling."""
    def put(i):
        Image.fromarray(np.full((8, 8, 3), i * 10, np.uint8)).save(tmp_path / f"{i:05d}.png")

    for i in (0, 1, 2, 4):
        put(i)
    src = FolderSource(tmp_path, idle_timeout=0.5, settle=0.05, follow=follow)
    assert src.follow_mode == follow
    it = iter(src)
    assert [int(next(it)[0, 0, 0]) // 10 for _ in range(4)] == [0, 1, 2, 4]
    put(3)
    put(5)
    assert int(next(it)[0, 0, 0]) // 10 == 5
    assert next(it, None) is None  # (the folder listed again and again until idle)
    assert len(src.late) == 1 and src.late.ranges() == [[3, 3]]


def test_folder_idle_time_does_not_count_a_busy_consumer(tmp_path):
    """A consumer busy for longer than idle_timeout (a model loading, a slow frame) does not end
    the stream: idle time counts from when it asks for the next frame."""
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "00000.png")
    src = FolderSource(tmp_path, idle_timeout=2.0, settle=0.05)
    it = iter(src)
    next(it)
    time.sleep(2.5)  # busy
    writer = threading.Timer(0.2, lambda: Image.fromarray(np.ones((8, 8, 3), np.uint8)).save(tmp_path / "00001.png"))
    writer.start()
    frame = next(it, None)
    writer.join()
    assert frame is not None and frame[0, 0, 0] == 1


def test_stalled_and_broken_sources_raise_stream_error():
    def stalls():
        yield np.zeros((4, 4, 3), np.uint8)
        time.sleep(3)

    feed = FrameFeed(IterSource(stalls()), realtime=False, stall_timeout=0.5)
    assert feed.get()[0] == 0
    with pytest.raises(StreamError, match="stalled: no frame for 0.5 s") as e:
        feed.get()
    assert e.value.stalled

    def breaks():
        yield np.zeros((4, 4, 3), np.uint8)
        raise OSError("connection reset by peer")

    feed = FrameFeed(IterSource(breaks()), realtime=False, stall_timeout=5)
    assert feed.get()[0] == 0
    with pytest.raises(StreamError, match="broke: connection reset") as e:
        feed.get()
    assert not e.value.stalled


def test_sam20_short_stream_equals_file(predictor20, predictor):
    """SAM 2.0: a stream equals a file of any length, here 6 frames; SAM 2.1 on so short a
    file scales pointer offsets by its length (5), a stream as for 16 frames or more (15)."""
    frames = moving_frames(6)
    expected = file_masks(predictor20, frames, PROMPTS[:1])
    got = {f: m for f, _, m in predictor20.track_stream(frames, PROMPTS[:1])}
    for f in expected:
        torch.testing.assert_close(got[f], expected[f][1], rtol=0, atol=0)
    expected = file_masks(predictor, frames, PROMPTS[:1])
    got = {f: m for f, _, m in predictor.track_stream(frames, PROMPTS[:1])}
    assert not torch.equal(got[3], expected[3][1])
    torch.testing.assert_close(got[3], expected[3][1], rtol=0, atol=1e-3)
