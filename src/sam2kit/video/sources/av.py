"""Sources FFmpeg opens through PyAV: cameras (v4l2, AVFoundation, DirectShow), network streams
(rtsp over TCP, rtmp, http(s), udp, tcp, srt), pipes and files in any container."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from sam2kit.errors import StreamError
from sam2kit.video.sources.base import DEFAULT_TIMEOUT_S, LiveSource, _why

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp")


class AVSource(LiveSource):
    """A camera, network stream, pipe or file read with PyAV, decoded as it arrives."""

    def __init__(self, target, kind: str, name: str, format: str | None = None,
                 options: dict | None = None, timeout: float | None = DEFAULT_TIMEOUT_S, reconnect: int = 0):
        super().__init__(name)
        try:
            import av
        except ImportError:
            raise ImportError("PyAV is needed to read video streams: pip install av "
                              "(or pip install 'sam2kit[video]')") from None
        self._av, self.kind = av, kind
        self.live = kind in ("camera", "network")
        self._target, self._format, self._options = target, format, dict(options or {})
        self.timeout, self.reconnect = timeout, reconnect
        self._container = None
        self._frames = None
        self._last = time.monotonic()
        try:
            self._open()
            self._first = next(self._frames, None)
        except (av.error.FFmpegError, OSError, StreamError) as e:
            self.close()
            raise ValueError(f"cannot read a video from {name}: {_why(e)}; {self._hint()}") from None
        except BaseException:
            self.close()
            raise
        if self._first is None:
            self.close()
            raise ValueError(f"{name} ended before its first frame; {self._hint()}")

    def _hint(self) -> str:
        return {"network": "check the address and that the sender is running (and reachable)",
                "camera": "check that the camera is connected and not in use by another program",
                "pipe": "pipe a video container FFmpeg reads from a stream (MPEG-TS, Matroska, "
                        "raw H.264; not an mp4 whose index is at its end)",
                }.get(self.kind, "is it a complete video FFmpeg can read?")

    def _open(self) -> None:
        av = self._av
        timeout = None if self.timeout is None else (self.timeout, self.timeout)
        self._container = av.open(self._target, format=self._format, options=self._options, timeout=timeout)
        if not self._container.streams.video:
            raise StreamError(f"{self.name} has no video stream (audio only?)")
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO" if self.kind in ("file",) else "SLICE"  # frame threads add latency
        rate = stream.average_rate or stream.guessed_rate
        if self.fps is None and rate:
            self.fps = float(rate)
        self._frames = self._decode(stream)

    def _decode(self, stream):
        for frame in self._container.decode(stream):
            self._last = time.monotonic()
            arr = frame.to_ndarray(format="rgb24")
            yield self._fit(np.array(arr, order="C"))  # own a compact copy; PyAV's buffer is freed

    def __iter__(self):
        av = self._av
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        while not self._closed:
            try:
                for arr in self._frames:
                    yield arr
                    if self._closed:
                        return
                return  # the stream ended
            except (av.error.FFmpegError, OSError) as e:
                if self._closed:
                    return
                # ExitError: PyAV's timeout interrupted a read that waited too long
                stalled = self.timeout is not None and (isinstance(e, av.error.ExitError) or
                                                        time.monotonic() - self._last >= 0.9 * self.timeout)
                what = (f"{self.name} stalled: no frame for {self.timeout:g} s" if stalled
                        else f"{self.name} broke: {_why(e)}")
                if self.reconnects >= self.reconnect:
                    raise StreamError(what, stalled) from None
                self.reconnects += 1
                self._close_container()
                try:
                    self._open()
                except (av.error.FFmpegError, OSError, StreamError) as e2:
                    raise StreamError(f"{what}; reconnecting ({self.reconnects} of {self.reconnect}) "
                                      f"failed: {_why(e2)}", stalled) from None

    def _close_container(self) -> None:
        self._frames = None
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - a broken stream may fail to close; it is gone anyway
                pass
            self._container = None

    def close(self) -> None:
        super().close()
        self._close_container()


def camera_target(camera) -> tuple[str, str | None]:
    """(what to open, input format) for camera number or name ``camera`` on this platform."""
    text = str(camera)
    if sys.platform.startswith("linux"):
        return (f"/dev/video{text}" if text.isdigit() else text), "v4l2"
    if sys.platform == "darwin":
        return (f"{text}:none" if text.isdigit() else text), "avfoundation"
    if sys.platform.startswith("win"):
        if text.isdigit():
            raise ValueError("on Windows give the camera's name: --camera \"video=Integrated Camera\" "
                             "(`ffmpeg -list_devices true -f dshow -i dummy` lists them)")
        return (text if text.startswith("video=") else f"video={text}"), "dshow"
    raise ValueError(f"cameras are not supported on {sys.platform}; pipe the camera's video into `-`")


def _camera(target: str, fmt: str | None, timeout, options) -> AVSource:
    if fmt == "v4l2" and not os.path.exists(target):
        found = sorted(str(p) for p in Path("/dev").glob("video*"))
        listed = ", ".join(found) if found else "none here"
        raise ValueError(f"camera {target} does not exist (cameras: {listed}); plug one in, or give "
                         "one that exists (`v4l2-ctl --list-devices` names them)")
    return AVSource(target, "camera", f"camera {target}", format=fmt, options=options, timeout=timeout)


# ---- a reader thread and its queue --------------------------------------------------------
