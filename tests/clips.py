"""Test clips written with PyAV: one encode loop for every test that needs a video file."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from pathlib import Path

import numpy as np


def write_clip(path: str | Path, frames: Iterable[np.ndarray], fps: int, codec: str = "libx264", *,
               container: str | None = None, gop: int | None = None, bit_rate: int | None = None,
               options: dict[str, str] | None = None) -> Path:
    """Encode ``frames`` (HxWx3 uint8 RGB, all one size; any iterable, read once) to ``path``.

    ``fps`` is the stream's rate; the pixel format is yuv420p (so H and W should be even);
    ``container`` forces the format (e.g. "mpegts"), else it follows the file's suffix; ``gop``
    sets the keyframe interval, ``bit_rate`` the target bits per second, ``options`` the
    encoder's private options (e.g. {"tune": "zerolatency"} or {"bf": "2"}). Returns ``path``.
    """
    import av

    frames = iter(frames)
    first = next(frames)
    h, w = first.shape[:2]
    with av.open(str(path), "w", format=container) as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        if gop is not None:
            s.codec_context.gop_size = gop
        if bit_rate is not None:
            s.bit_rate = bit_rate
        s.options = options or {}
        for img in itertools.chain([first], frames):
            assert img.shape == first.shape and img.dtype == np.uint8, (img.shape, img.dtype)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return Path(path)


def _audio_frame():
    import av

    frame = av.AudioFrame.from_ndarray(np.zeros((1, 960), np.int16), format="s16", layout="mono")
    frame.sample_rate = 48000
    return frame


def write_audio_only(path: str | Path) -> Path:
    """A file with one audio stream (20 ms of silence, PCM) and no video stream."""
    return _write_audio(path, None)


def write_no_frames(path: str | Path, width: int, height: int, fps: int) -> Path:
    """A file with a video stream (mpeg4, ``width`` x ``height`` at ``fps``) that never gets a
    frame, beside an audio stream of 20 ms of silence."""
    return _write_audio(path, (width, height, fps))


def _write_audio(path, video) -> Path:
    import av

    with av.open(str(path), "w") as c:
        if video is not None:
            v = c.add_stream("mpeg4", rate=video[2])
            v.width, v.height, v.pix_fmt = video[0], video[1], "yuv420p"
        a = c.add_stream("pcm_s16le", rate=48000)
        for p in [*a.encode(_audio_frame()), *a.encode()]:
            c.mux(p)
    return Path(path)
