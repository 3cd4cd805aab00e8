"""Live sources: frames that arrive one by one, cannot be sought in and may never end.

``open_stream(source)`` gives a :class:`LiveSource`; iterating it yields HxWx3 uint8 RGB
arrays, all at the first frame's size (a frame of another size is scaled to it). Opening reads
the first frame, so ``width``, ``height`` and a bad source are known at once. Sources:

* a camera: ``/dev/video0`` (Linux, v4l2) or ``camera=N`` (``/dev/videoN`` on Linux,
  AVFoundation device N on macOS, DirectShow ``video=NAME`` on Windows);
* a network stream FFmpeg opens: ``rtsp://`` (over TCP), ``rtmp://``, ``http(s)://``,
  ``udp://``, ``tcp://``, ``srt://`` (through the system's ``ffmpeg`` where PyAV's FFmpeg
  lacks SRT, as its wheels do); ``open_timeout`` bounds the connection, ``timeout``
  every read, and ``reconnect=N`` reopens a stream that broke, stalled or ended, up to N
  attempts in a row with waits that double from ``reconnect_delay``;
* ``"-"``: standard input (any container FFmpeg reads from a pipe: MPEG-TS, Matroska, ...),
  or a binary file object;
* a file in any container FFmpeg reads (judged by opening it, not by its extension);
* a folder being filled with numbered JPEG/PNG frames (``FolderSource``): new frames are
  taken in number order as they appear; the stream ends ``idle_timeout`` seconds after the
  last new one;
* frames already in memory (a list of arrays, an NxHxWx3 array, any iterable of frames).

``FrameFeed`` reads a source on a thread of its own into a small queue. A real-time feed drops
the oldest waiting frames when the consumer falls behind (latency stays bounded; dropped
frames are listed); otherwise the reader waits for the consumer and nothing is dropped.

A stream that breaks (a decoding error, a reset connection) or stalls (no frame for
``timeout`` seconds) raises :class:`StreamError`; its ``stalled`` tells which.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from sam2kit.errors import StreamError
from sam2kit.video.sources.av import NETWORK_SCHEMES, AVSource, _camera, camera_target
from sam2kit.video.sources.base import (DEFAULT_OPEN_TIMEOUT_S, DEFAULT_RECONNECT_DELAY_S, DEFAULT_TIMEOUT_S,
                                        IndexRanges, IterSource, LiveSource, check_frame)
from sam2kit.video.sources.feed import FrameFeed
from sam2kit.video.sources.folder import IMAGE_EXTENSIONS, FolderSource
from sam2kit.video.sources.relay import RelaySource, relay_ffmpeg

__all__ = ["open_stream", "classify", "camera_target", "LiveSource", "IterSource", "AVSource", "FolderSource",
           "FrameFeed", "IndexRanges", "StreamError", "check_frame", "NETWORK_SCHEMES", "DEFAULT_TIMEOUT_S",
           "DEFAULT_OPEN_TIMEOUT_S", "DEFAULT_RECONNECT_DELAY_S", "IMAGE_EXTENSIONS"]


def classify(source) -> str:
    """camera, network, pipe, folder, file or frames: what ``open_stream`` would open."""
    if isinstance(source, LiveSource):
        return source.kind
    if isinstance(source, (str, Path)):
        text = str(source)
        if text == "-":
            return "pipe"
        scheme = text.split("://", 1)[0].lower() if "://" in text else None
        if scheme in NETWORK_SCHEMES:
            return "network"
        if re.fullmatch(r"/dev/video\d+", text):
            return "camera"
        return "folder" if Path(text).expanduser().is_dir() else "file"
    if hasattr(source, "read"):
        return "pipe"
    return "frames"


def open_stream(source=None, *, camera=None, timeout: float | None = DEFAULT_TIMEOUT_S, reconnect: int = 0,
                idle_timeout: float = DEFAULT_TIMEOUT_S, options: dict | None = None,
                open_timeout: float | None = None, reconnect_delay: float = DEFAULT_RECONNECT_DELAY_S,
                follow: str = "auto") -> LiveSource:
    """A :class:`LiveSource` for ``source`` (see the module docstring) or for ``camera`` (a
    number or a device name). ``timeout``: seconds to wait for each read of a camera, network
    stream, pipe or file (None: forever); ``open_timeout``: seconds to connect (None:
    ``timeout``); ``reconnect``: how many attempts in a row to reopen a network stream that
    breaks, stalls or ends, the first after ``reconnect_delay`` seconds, each next after twice
    the wait before; ``idle_timeout``: how long a folder may go without a new frame before its
    stream ends; ``follow``: how a folder's new frames are seen (``"notify"``: the OS tells,
    ``"poll"``: the folder is listed again and again, ``"auto"``: notify where it can);
    ``options``: FFmpeg options for PyAV (``{"video_size": "1280x720"}`` for a camera, ...).
    Raises ValueError (with the fix) for a source that cannot be opened, FileNotFoundError for
    a missing path."""
    if camera is not None:
        if source is not None:
            raise ValueError("give either a source or a camera, not both")
        target, fmt = camera_target(camera)
        return _camera(target, fmt, timeout, options, open_timeout)
    if isinstance(source, LiveSource):
        return source
    kind = classify(source)
    opts = dict(options or {})
    if kind in ("pipe", "network"):
        opts.setdefault("analyzeduration", "500000")  # µs of stream read before the first frame (FFmpeg: 5 s)
    if kind == "pipe":
        target = "pipe:0" if isinstance(source, (str, Path)) else source
        return AVSource(target, "pipe", "standard input" if target == "pipe:0" else "a file object",
                        options=opts, timeout=timeout)
    if kind == "network":
        url = str(source)
        if url.lower().startswith("rtsp"):
            opts.setdefault("rtsp_transport", "tcp")
        ffmpeg = relay_ffmpeg(url)  # srt:// is not in PyAV's FFmpeg: through the system's ffmpeg
        if ffmpeg is not None:
            return RelaySource(url, ffmpeg, options=opts, timeout=timeout, reconnect=reconnect,
                               open_timeout=open_timeout, reconnect_delay=reconnect_delay)
        return AVSource(url, "network", url, options=opts, timeout=timeout, reconnect=reconnect,
                        open_timeout=open_timeout, reconnect_delay=reconnect_delay)
    if kind == "camera":
        return _camera(str(source), "v4l2", timeout, options, open_timeout)
    if kind in ("folder", "file"):
        path = Path(str(source)).expanduser()
        if kind == "folder":
            return FolderSource(path, idle_timeout, follow=follow)
        if not path.exists():
            raise FileNotFoundError(f"no such video file, folder or device: {path}")
        return AVSource(str(path), "file", str(path), options=opts, timeout=timeout)
    if isinstance(source, np.ndarray) and source.ndim != 4:
        raise ValueError(f"an array of frames must have shape NxHxWx3, got {tuple(source.shape)}")
    try:
        return IterSource(source)
    except TypeError:
        raise TypeError(f"cannot read frames from a {type(source).__name__}: pass a URL, '-', a "
                        "camera, a video file, a folder, or an iterable of HxWx3 uint8 frames") from None
