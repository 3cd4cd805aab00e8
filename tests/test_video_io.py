"""Frame sources (sam2kit.video.io): videos made here with PyAV, PNG/JPEG folders, arrays."""

from __future__ import annotations

import random
import sys
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from clips import write_audio_only, write_clip, write_no_frames
from sam2kit.video.io import FrameSource, open_frames

av = pytest.importorskip("av")

N, W, H, FPS, GOP = 30, 64, 48, 25, 10


def frame_image(i: int, w: int = W, h: int = H) -> np.ndarray:
    """Frame i: its index in the colours and in the width of a white bar, so frames differ."""
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = (i * 8) % 256
    img[..., 1] = 255 - (i * 8) % 256
    img[:, : (2 * i) % w + 2, 2] = 255
    return img


def has_encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
        return True
    except Exception:
        return False


def write_video(path, codec, n=N, w=W, h=H, gop=GOP, options=None):
    # 2 Mbit/s: enough that frames stay recognisable
    return write_clip(path, (frame_image(i, w, h) for i in range(n)), FPS, codec, gop=gop,
                      bit_rate=2_000_000, options=options)


def decode_all(path) -> list[np.ndarray]:
    """The reference: a plain sequential decode of the whole file."""
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


# name, codec, encoder options: B-frames (decode order != presentation order), open GOPs
# (frames before a keyframe decoded after it), and keyframes every GOP frames.
VIDEOS = [
    ("clip.mp4", "libx264", {"bf": "2"}),
    ("clip.mkv", "libx264", {"x264-params": "keyint=10:min-keyint=10:open-gop=1:bframes=3:scenecut=0"}),
    ("clip_vp9.webm", "libvpx-vp9", {}),
    ("clip_vp8.webm", "libvpx", {}),
    ("clip.mov", "mpeg4", {"bf": "2"}),
    ("clip.avi", "mpeg4", {"bf": "2"}),  # AVI seeks by dts: exercises the dts fallback
]


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("videos")


@pytest.fixture(params=VIDEOS, ids=[v[0] for v in VIDEOS])
def video(request, video_dir):
    name, codec, options = request.param
    if not has_encoder(codec):
        pytest.skip(f"this PyAV build has no {codec} encoder")
    path = video_dir / name
    if not path.exists():
        write_video(path, codec, options=options)
    return path


# --- video files ---------------------------------------------------------------------------

def test_video_metadata(video):
    with open_frames(video) as src:
        assert (len(src), src.height, src.width) == (N, H, W)
        assert src.fps == pytest.approx(FPS)
        assert isinstance(src, FrameSource)
        assert len(src._keys) >= 3  # several GOPs, so seeking is exercised
    if video.suffix in (".mkv", ".webm"):
        with av.open(str(video)) as c:
            assert c.streams.video[0].frames == 0  # len() did not rely on the stored count


@pytest.mark.parametrize("cache_bytes", [0, 5 * W * H * 3, 64 * 2**20], ids=["nocache", "5frames", "default"])
def test_video_frames_identical_in_any_order(video, cache_bytes):
    ref = decode_all(video)
    assert len(ref) == N
    # decoded frame i is the frame written i-th (the mapping index -> pts is right)
    for i, frame in enumerate(ref):
        errors = [np.abs(frame.astype(int) - frame_image(j)).mean() for j in range(N)]
        assert int(np.argmin(errors)) == i
    orders = {"forward": list(range(N)), "backward": list(range(N - 1, -1, -1)),
              "random": random.Random(0).sample(range(N), N),
              "strided": list(range(0, N, 7)) + list(range(N - 1, 0, -4)) + [0, N - 1, 0]}
    with open_frames(video, cache_bytes=cache_bytes) as src:
        for name, order in orders.items():
            for i in order:
                got = src.get(i)
                assert got.dtype == np.uint8 and got.shape == (H, W, 3)
                assert np.array_equal(got, ref[i]), f"{name} order, frame {i}"


def test_video_sequential_reads_do_not_seek(video):
    with open_frames(video, cache_bytes=0) as src:
        opened = src.n_decoded  # opening decodes frame 0 (to check the file), then rewinds
        for i in range(N):
            src.get(i)
        assert src.n_seeks == 0 and src.n_decoded - opened == N
        for i in range(0, N, 2):  # small forward jumps decode on, or seek to a keyframe
            src.get(i)
        assert src.n_seeks <= 1 + len(src._keys) and src.n_decoded - opened <= 2 * N


def test_video_reverse_iteration_decodes_each_gop_about_once(video):
    with open_frames(video) as src:
        start = src.n_decoded
        for i in reversed(range(N)):
            src.get(i)
        assert src.n_decoded - start <= 2 * N  # not a GOP per frame (that would be ~N * GOP / 2)
        assert src.n_seeks <= len(src._keys) + 1


def test_video_cache_stays_within_budget(tmp_path):
    w, h, n = 320, 240, 200
    path = write_video(tmp_path / "long.mp4", "libx264", n=n, w=w, h=h, gop=12,
                       options={"preset": "ultrafast"})
    frame_bytes = w * h * 3
    order = list(range(n)) + list(range(n - 1, n - 40, -1)) + random.Random(1).sample(range(n), 30)
    tracemalloc.start()  # numpy reports its buffers to tracemalloc
    try:
        with open_frames(path, cache_bytes=4 * frame_bytes) as src:
            assert len(src) == n
            for i in order:
                frame = src.get(i)
                assert frame.shape == (h, w, 3)
                assert src.cached_frames <= 4
                assert src._cache.nbytes <= 4 * frame_bytes
                del frame
            peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # the cache's 4 frames + the one returned (+ small change): never a GOP or the video
    assert peak < 5.5 * frame_bytes, f"peak {peak / frame_bytes:.2f} frames"


def test_video_case_insensitive_extension_and_str_path(tmp_path):
    path = write_video(tmp_path / "CLIP.MP4", "libx264", n=5)
    with open_frames(str(path)) as src:
        assert len(src) == 5


def test_close_and_context_manager(video):
    src = open_frames(video)
    with src as same:
        assert same is src
        src.get(3)
    assert src._container is None and src.cached_frames == 0
    with pytest.raises(ValueError, match="closed"):
        src.get(0)
    src.close()  # twice is fine


def test_returned_frames_are_copies(video):
    with open_frames(video) as src:
        a = src.get(2)
        a[:] = 0
        assert src.get(2).any()


@pytest.mark.parametrize("bad", [-1, N, N + 5])
def test_video_index_out_of_range(video, bad):
    with open_frames(video) as src:
        with pytest.raises(IndexError, match="out of range"):
            src.get(bad)
        with pytest.raises(TypeError):
            src.get(1.0)
        assert np.array_equal(src.get(np.int64(1)), src.get(1))


# --- video errors --------------------------------------------------------------------------

def test_truncated_video(tmp_path):
    full = write_video(tmp_path / "full.mp4", "libx264")
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cannot decode video .*cut\.mp4.*complete video file"):
        open_frames(cut)


def test_not_a_video(tmp_path):
    junk = tmp_path / "junk.mkv"
    junk.write_bytes(b"this is not a video\n" * 50)
    with pytest.raises(ValueError, match="cannot decode video"):
        open_frames(junk)


def test_audio_only_file(tmp_path):
    path = write_audio_only(tmp_path / "sound.mkv")
    with pytest.raises(ValueError, match="no video stream"):
        open_frames(path)


def test_video_with_zero_frames(tmp_path):
    path = write_no_frames(tmp_path / "empty.mkv", W, H, FPS)  # a video stream that never gets a packet
    with pytest.raises(ValueError, match="has no frames"):
        open_frames(path)


def test_missing_pyav(video, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` raise ImportError
    with pytest.raises(ImportError, match="PyAV is needed to read video files: pip install av"):
        open_frames(video)


# --- folders of frames ---------------------------------------------------------------------

def write_folder(folder, ext, n=13, names=None):
    """Frames 0..n-1 as unpadded names (1.png, 10.png, 2.png ...), written out of order."""
    folder.mkdir()
    order = random.Random(2).sample(range(n), n)
    for i in order:
        name = names(i) if names else f"{i}{ext}"
        Image.fromarray(frame_image(i)).save(folder / name)
    return folder


def test_png_folder_numeric_order(tmp_path):
    folder = write_folder(tmp_path / "png", ".png")
    (folder / "notes.txt").write_text("not a frame")
    (folder / ".hidden.png").write_bytes(b"")  # ignored
    with open_frames(folder) as src:
        assert src.cached_frames == 1  # only the first frame is read up front (to check it)
        assert (len(src), src.height, src.width, src.fps) == (13, H, W, None)
        assert [p.name for p in src.files][:4] == ["0.png", "1.png", "2.png", "3.png"]
        for i in [12, 0, 10, 2, 1, 11]:
            assert np.array_equal(src.get(i), frame_image(i))  # PNG is lossless


def test_jpeg_folder_mixed_case_and_padding(tmp_path):
    folder = write_folder(tmp_path / "jpg", ".jpg", names=lambda i: f"{i:05d}.JPG" if i % 2 else f"{i}.jpeg")
    with open_frames(folder, cache_bytes=2 * W * H * 3) as src:
        assert len(src) == 13
        for i in list(range(13)) + list(range(12, -1, -1)):
            expected = np.asarray(Image.open(src.files[i]).convert("RGB"))
            assert np.array_equal(src.get(i), expected)
            assert int(src.files[i].stem) == i
            assert src.cached_frames <= 2


def test_mixed_png_jpeg_and_prefixed_names(tmp_path):
    folder = write_folder(tmp_path / "mix", "", names=lambda i: f"frame_{i}.{'png' if i % 3 else 'jpg'}")
    with open_frames(folder) as src:
        assert [p.name for p in src.files][:3] == ["frame_0.jpg", "frame_1.png", "frame_2.png"]
        assert np.array_equal(src.get(1), frame_image(1))


def test_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="no JPEG or PNG frames"):
        open_frames(empty)

    unnamed = write_folder(tmp_path / "unnamed", ".png", n=3)
    Image.fromarray(frame_image(0)).save(unnamed / "cover.png")
    with pytest.raises(ValueError, match="'cover.png' has no number"):
        open_frames(unnamed)

    dup = write_folder(tmp_path / "dup", ".png", n=3)
    Image.fromarray(frame_image(1)).save(dup / "1.jpg")
    with pytest.raises(ValueError, match="same number"):
        open_frames(dup)

    sizes = write_folder(tmp_path / "sizes", ".png", n=3)
    Image.fromarray(frame_image(3, w=32)).save(sizes / "3.png")
    with open_frames(sizes) as src:
        src.get(2)
        with pytest.raises(ValueError, match=r"3\.png.*same size"):
            src.get(3)

    broken = write_folder(tmp_path / "broken", ".png", n=2)
    (broken / "2.png").write_bytes(b"not a png")
    with open_frames(broken) as src, pytest.raises(ValueError, match=r"cannot read frame image .*2\.png"):
        src.get(2)


# --- sequences -----------------------------------------------------------------------------

def test_sequences():
    frames = [frame_image(i) for i in range(5)]
    for source in (frames, tuple(Image.fromarray(f) for f in frames), np.stack(frames)):
        with open_frames(source) as src:
            assert (len(src), src.height, src.width, src.fps) == (5, H, W, None)
            for i in (4, 0, 3):
                assert np.array_equal(src.get(i), frames[i])
            with pytest.raises(IndexError):
                src.get(5)
            with pytest.raises(IndexError):
                src.get(-1)
    src = open_frames(frames)
    src.get(1)[:] = 0  # a copy: the caller's frames are untouched
    assert np.array_equal(frames[1], frame_image(1))
    assert open_frames(src) is src


@pytest.mark.parametrize("source, match", [
    ([], "empty"),
    (np.zeros((0, H, W, 3), np.uint8), "empty"),
    (np.zeros((H, W, 3), np.uint8), "NxHxWx3"),
    ([np.zeros((H, W, 3), np.float32)], "uint8"),
    ([np.zeros((H, W), np.uint8)], "HxWx3"),
    ([np.zeros((H, W, 4), np.uint8)], "HxWx3"),
    ([np.zeros((H, W, 3), np.uint8), np.zeros((H, W + 1, 3), np.uint8)], "same size"),
    ([np.zeros((H, W, 3), np.uint8), "frame.png"], "numpy array or a PIL image"),
])
def test_sequence_errors(source, match):
    with pytest.raises(ValueError, match=match):
        open_frames(source)


# --- paths and arguments -------------------------------------------------------------------

def test_path_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such video file or frame folder"):
        open_frames(tmp_path / "nope.mp4")
    gif = tmp_path / "anim.gif"
    gif.write_bytes(b"GIF89a")
    with pytest.raises(ValueError, match=r"cannot read .*anim\.gif as a video.*FFmpeg reads.*ffmpeg -i"):
        open_frames(gif)
    img = tmp_path / "one.jpg"
    Image.fromarray(frame_image(0)).save(img)
    with pytest.raises(ValueError, match="single image"):
        open_frames(img)
    with pytest.raises(TypeError, match="cannot read frames from a int"):
        open_frames(42)
    with pytest.raises(ValueError, match="cache_bytes"):
        open_frames([frame_image(0)], cache_bytes=-1)
