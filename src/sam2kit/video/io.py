"""Frame sources for the video predictor: decode frames on demand, in bounded memory.

``open_frames(source)`` gives a :class:`FrameSource`: ``len(src)`` frames, each read with
``src.get(i)`` as an HxWx3 uint8 RGB array at the video's own size (a fresh array the caller
may modify). Nothing but a frame folder's first frame is decoded up front; recently read frames are kept in an LRU cache of
at most ``cache_bytes`` bytes (``src.cached_frames`` tells how many it holds now).

Sources:

* a video file in any container FFmpeg reads (.mp4 .mov .mkv .avi .webm .ts .flv ...: judged by
  opening it) read with PyAV. Opening demuxes the packets once
  (no decoding) to list the frames' timestamps: frame ``i`` is the frame with the i-th smallest
  pts, so ``len`` is exact even where the container stores no frame count. Reading forward
  (i, i+1, ...) keeps decoding; any other access seeks to the last keyframe at or before the
  frame and decodes forward, caching the frames on the way, so reading backwards decodes
  each GOP about once. A frame reads the same (bit for bit) whatever the order of access.
  Rotation metadata (phone videos) and non-square pixels are not applied: frames come as
  stored. A frame whose size differs from the first one is resized to it.
* a folder of .jpg/.jpeg/.png frames (mixed is fine), ordered by the number at the end of the
  file name (``1.png, 2.png, 10.png`` or ``frame_0001.jpg ...``); a name with no number or two
  files with the same number is an error, since the order would be a guess. Hidden files
  (".name") are ignored. EXIF orientation is not applied. The first frame is decoded when the
  folder is opened (it sets the size; a damaged one is named at once); the others when asked for.
* a list/tuple of HxWx3 uint8 RGB arrays or PIL images, or an NxHxWx3 uint8 array.

``get`` holds a lock: reads from several threads (say a prefetch thread) are serialised.
"""

from __future__ import annotations

import bisect
import re
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


class _LRUCache:
    """index -> frame array, least recently used dropped first, at most ``budget`` bytes."""

    def __init__(self, budget: int):
        self.budget, self.nbytes, self._d = budget, 0, OrderedDict()

    def get(self, key):
        arr = self._d.get(key)
        if arr is not None:
            self._d.move_to_end(key)
        return arr

    def put(self, key, arr: np.ndarray) -> None:
        if arr.nbytes > self.budget or key in self._d:
            return
        self._d[key] = arr
        self.nbytes += arr.nbytes
        while self.nbytes > self.budget:
            self.nbytes -= self._d.popitem(last=False)[1].nbytes

    def __contains__(self, key):
        return key in self._d

    def __len__(self):
        return len(self._d)

    def clear(self):
        self._d.clear()
        self.nbytes = 0


class FrameSource:
    """N frames, each an HxWx3 uint8 RGB array of size ``height`` x ``width``.

    ``fps`` is the frame rate of a video file, None for folders and sequences.
    ``cached_frames`` is how many decoded frames the LRU cache holds now (never more than
    ``cache_bytes // (height * width * 3)``). Use as a context manager or call ``close()``.
    """

    height: int
    width: int
    fps: float | None = None

    def __init__(self, cache_bytes: int):
        self._cache = _LRUCache(cache_bytes)
        self._lock = threading.Lock()
        self._closed = False

    def __len__(self) -> int:
        raise NotImplementedError

    def _load(self, index: int) -> np.ndarray:
        """Read frame ``index`` (not in the cache); put what it reads in the cache."""
        raise NotImplementedError

    @property
    def cached_frames(self) -> int:
        return len(self._cache)

    def get(self, index: int) -> np.ndarray:
        """Frame ``index`` (0 <= index < len) as a new HxWx3 uint8 RGB array."""
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"frame index must be an int, got {type(index).__name__}")
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"frame index {index} out of range for {len(self)} frames "
                             "(valid: 0..N-1, negative indices are not allowed)")
        with self._lock:
            if self._closed:
                raise ValueError(f"{type(self).__name__} is closed")
            arr = self._cache.get(index)
            if arr is None:
                arr = self._load(index)
            return arr.copy() if index in self._cache else arr

    def __iter__(self):
        return (self.get(i) for i in range(len(self)))

    def close(self) -> None:
        self._closed = True
        self._cache.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        fps = f", fps={self.fps:g}" if self.fps else ""
        return f"{type(self).__name__}({len(self)} frames, {self.height}x{self.width}{fps})"


class VideoFileSource(FrameSource):
    """Frames of a video file decoded with PyAV (see the module docstring for the strategy).

    ``n_decoded`` and ``n_seeks`` count decoder output frames and seeks, for diagnostics."""

    def __init__(self, path: Path, cache_bytes: int):
        super().__init__(cache_bytes)
        try:
            import av
        except ImportError:
            raise ImportError("PyAV is needed to read video files: pip install av") from None
        self.path, self._av = path, av
        self._container, self._frames, self.n_decoded, self.n_seeks = None, None, 0, 0
        self._size = None  # (width, height) of frame 0, once decoded
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise ValueError(f"{path} has no video stream (audio only?); pass a video "
                                     "with a picture track")
                stream = container.streams.video[0]
                rate = stream.average_rate or stream.guessed_rate
                self.fps = float(rate) if rate else None
                pts, keys = set(), {}
                for packet in container.demux(stream):
                    ts = packet.pts if packet.pts is not None else packet.dts
                    if packet.size == 0 or ts is None or packet.is_discard:
                        continue
                    pts.add(ts)
                    if packet.is_keyframe:
                        keys[ts] = packet.dts if packet.dts is not None else ts
            self._pts = sorted(pts)  # frame index -> pts (presentation order)
            if not self._pts:
                raise ValueError(f"video {path} has no frames; is it a complete video file?")
            self._index = {p: i for i, p in enumerate(self._pts)}
            self._keys = sorted(self._index[k] for k in keys)  # indices of keyframes
            self._key_dts = {self._index[k]: d for k, d in keys.items()}
            self._seek_by_dts = False  # AVI & co. find keyframes by dts, not pts
            self._restart(None)
            first = self._load(0)  # proves the video decodes; fixes the frame size
            if 0 not in self._cache:  # no room to keep it: rewind, so reading 0 needs no seek
                self._restart(None)
        except (av.error.FFmpegError, RuntimeError) as e:
            self.close()
            raise ValueError(f"cannot decode video {path}: {e}; is it a complete video "
                             "file?") from e
        except BaseException:
            self.close()
            raise
        self.height, self.width = first.shape[:2]

    def __len__(self) -> int:
        return len(self._pts)

    def _restart(self, key: int | None) -> None:
        """Position the decoder at keyframe index ``key``, or reopen the file (None)."""
        if key is None or self._container is None:
            if self._container is not None:
                self._container.close()
            self._container = self._av.open(str(self.path))
            self._stream = self._container.streams.video[0]
        if key is not None:
            ts = self._key_dts[key] if self._seek_by_dts else self._pts[key]
            self._container.seek(ts, stream=self._stream, backward=True, any_frame=False)
            self.n_seeks += 1
        self._frames = self._decode()
        # Frames before the keyframe may be garbage (open GOP): drop them; the first frame
        # kept must then be the keyframe itself, or the seek landed too late.
        self._pos, self._expect = (-1, None) if key is None else (key - 1, key)
        self._late = False

    def _decode(self):
        for packet in self._container.demux(self._stream):
            for frame in packet.decode():
                self.n_decoded += 1
                yield frame.pts if frame.pts is not None else frame.dts, frame

    def _advance_to(self, index: int) -> np.ndarray | None:
        """Decode on to frame ``index``, caching the frames passed; None if it never came."""
        for pts, frame in self._frames:
            i = self._index.get(pts)
            if i is None or i <= self._pos:
                continue
            if self._expect is not None and i != self._expect:
                self._late = True  # the seek landed after the keyframe asked for
                break
            self._expect = None
            if self._size is None:
                self._size = (frame.width, frame.height)
            if (frame.width, frame.height) != self._size:  # a size change mid-stream
                arr = frame.to_ndarray(format="rgb24", width=self._size[0], height=self._size[1])
            else:
                arr = frame.to_ndarray(format="rgb24")
            # to_ndarray gives a view of PyAV's (row-padded) buffer: own a compact copy, so
            # the cache counts its bytes exactly and PyAV's frame is freed at once.
            arr = np.array(arr, order="C")
            self._pos = i
            self._cache.put(i, arr)
            if i >= index:
                return arr if i == index else None
        self._frames = None
        return None

    def _load(self, index: int) -> np.ndarray:
        k = bisect.bisect_right(self._keys, index) - 1
        key = self._keys[k] if k >= 0 else None
        # Go on decoding when no keyframe lies between here and the frame, else seek.
        continuing = self._frames is not None and self._pos < index and (
            key is None or key <= self._pos + 1)
        try:
            if not continuing:
                self._restart(key)
            arr = self._advance_to(index)
            if arr is None and self._late and not self._seek_by_dts:
                self._seek_by_dts = True  # seeking by pts overshoots here: seek by dts
                self._restart(key)
                arr = self._advance_to(index)
            if arr is None and (continuing or key is not None):
                # A seek that missed its keyframe, or a frame that never came: decode from
                # the start, as a plain sequential read would.
                self._restart(None)
                arr = self._advance_to(index)
        except self._av.error.FFmpegError as e:
            self._frames = None
            if self._size is None:
                raise
            raise RuntimeError(f"cannot decode frame {index} of video {self.path}: {e}") from e
        if arr is None:
            self._frames = None
            raise RuntimeError(f"frame {index} (pts {self._pts[index]}) of video {self.path} "
                               "could not be decoded; is the file damaged?")
        return arr

    def close(self) -> None:
        super().close()
        self._frames = None
        if self._container is not None:
            self._container.close()
            self._container = None


def _frame_number(p: Path) -> int:
    m = re.search(r"(\d+)$", p.stem)
    if m is None:
        raise ValueError(f"cannot order the frames in {p.parent}: {p.name!r} has no number at "
                         "the end of its name; name the frames 00000.jpg, 00001.jpg, ...")
    return int(m.group(1))


class ImageFolderSource(FrameSource):
    """JPEG/PNG frames in a folder, read with PIL when asked for; ``files`` in frame order."""

    def __init__(self, folder: Path, cache_bytes: int):
        super().__init__(cache_bytes)
        files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS
                 and not p.name.startswith(".") and p.is_file()]
        if not files:
            raise ValueError(f"no JPEG or PNG frames in folder {folder}; extract them with "
                             f"e.g. `ffmpeg -i video.mp4 {folder}/%05d.jpg`")
        numbered = sorted((_frame_number(p), p.name, p) for p in files)
        for (a, name_a, _), (b, name_b, _) in zip(numbered, numbered[1:]):
            if a == b:
                raise ValueError(f"frames {name_a!r} and {name_b!r} in {folder} have the same "
                                 "number, so their order is ambiguous; remove one")
        self.files = [p for _, _, p in numbered]
        from PIL import Image
        self._Image = Image
        first = self.files[0]
        try:  # the first frame sets the size: decode it now, so a damaged one is named here
            with Image.open(first) as im:
                self.width, self.height = im.size
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise ValueError(_unreadable(first, e)) from None
        self.get(0)

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, index: int) -> np.ndarray:
        p = self.files[index]
        try:
            with self._Image.open(p) as im:
                if im.size != (self.width, self.height):
                    raise ValueError(f"frame {p} is {im.size[0]}x{im.size[1]} (WxH) but the "
                                     f"first frame is {self.width}x{self.height}; all frames "
                                     "must have the same size")
                arr = np.asarray(im.convert("RGB"))
        except (OSError, SyntaxError, self._Image.DecompressionBombError) as e:
            raise ValueError(_unreadable(p, e)) from None  # (UnidentifiedImageError is an OSError)
        self._cache.put(index, arr)
        return arr


def _unreadable(path: Path, e: BaseException) -> str:
    why = " ".join(str(e).split()) or type(e).__name__
    return (f"cannot read frame image {path}: {why}; the file is damaged or not a JPEG/PNG image: "
            "replace it, or remove it from the folder")


def frame_size(frame, what: str = "frame") -> tuple[int, int]:
    """(H, W) of an HxWx3 uint8 RGB array or a PIL image, without copying a pixel; a clear
    ValueError for anything else."""
    from PIL import Image

    if isinstance(frame, Image.Image):
        return frame.size[1], frame.size[0]
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"{what} must be an HxWx3 uint8 numpy array or a PIL image, got "
                         f"{type(frame).__name__}")
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8 or 0 in frame.shape:
        raise ValueError(f"{what} must be an HxWx3 uint8 RGB array, got shape {tuple(frame.shape)} "
                         f"dtype {frame.dtype} (floats in [0, 1]: (x * 255).round().astype(np.uint8); "
                         "RGBA: x[..., :3])")
    return frame.shape[0], frame.shape[1]


class SequenceSource(FrameSource):
    """Frames already in memory (arrays or PIL images); ``get`` returns copies."""

    def __init__(self, frames):
        super().__init__(0)  # nothing to cache: the frames are in memory already
        self._frames = frames
        if len(frames) == 0:
            raise ValueError("no frames: the sequence is empty")
        for i, f in enumerate(frames):  # checks shapes only: no pixel is copied here
            size = frame_size(f, f"frame {i}")
            if i == 0:
                self.height, self.width = size
            elif size != (self.height, self.width):
                raise ValueError(f"frame {i} is {size[0]}x{size[1]} (HxW) but frame 0 is "
                                 f"{self.height}x{self.width}; all frames must have the same size")

    def __len__(self) -> int:
        return len(self._frames)

    def _load(self, index: int) -> np.ndarray:
        f = self._frames[index]
        return np.array(f.convert("RGB")) if not isinstance(f, np.ndarray) else f.copy()


def open_frames(source, cache_bytes: int = 64 * 2**20) -> FrameSource:
    """A :class:`FrameSource` for a video file, a folder of JPEG/PNG frames, a list/tuple of
    HxWx3 uint8 RGB arrays or PIL images, or an NxHxWx3 uint8 array (a FrameSource is
    returned as is). ``cache_bytes`` bounds the memory of decoded frames kept for re-use."""
    if isinstance(source, FrameSource):
        return source
    if isinstance(cache_bytes, bool) or not isinstance(cache_bytes, int) or cache_bytes < 0:
        raise ValueError(f"cache_bytes must be an int >= 0, got {cache_bytes!r}")
    if isinstance(source, np.ndarray):
        if source.ndim != 4:
            raise ValueError(f"an array of frames must have shape NxHxWx3, got "
                             f"{tuple(source.shape)} (one image? wrap it: [image])")
        return SequenceSource(source)
    if isinstance(source, (list, tuple)):
        return SequenceSource(source)
    if not isinstance(source, (str, Path)):
        raise TypeError(f"cannot read frames from a {type(source).__name__}: pass a video "
                        "path, a folder of JPEG/PNG frames, or a list of HxWx3 uint8 arrays")
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no such video file or frame folder: {path}")
    if path.is_dir():
        return ImageFolderSource(path, cache_bytes)
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        raise ValueError(f"{path} is a single image, not a video; pass the folder holding the "
                         "frames, or use the image predictor")
    if suffix in VIDEO_EXTENSIONS:
        return VideoFileSource(path, cache_bytes)
    try:  # any other container FFmpeg reads (.ts .m2ts .flv .mpg ...): judged by opening it
        return VideoFileSource(path, cache_bytes)
    except ValueError as e:
        raise ValueError(f"cannot read {path} as a video ({e}); use a video FFmpeg reads (mp4, "
                         f"mkv, mov, webm, avi, ts, ...) or a folder of JPEG/PNG frames (e.g. "
                         f"`ffmpeg -i {path.name} frames/%05d.jpg`)") from None
