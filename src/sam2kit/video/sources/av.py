"""Sources FFmpeg opens through PyAV: cameras (v4l2, AVFoundation, DirectShow), network streams
(rtsp over TCP, rtmp, http(s), udp, tcp, srt), pipes and files in any container."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

from sam2kit.errors import StreamError
from sam2kit.video.sources.base import (DEFAULT_RECONNECT_DELAY_S, DEFAULT_TIMEOUT_S, RECONNECT_MAX_DELAY_S,
                                        LiveSource, _why)

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp")


class AVSource(LiveSource):
    """A camera, network stream, pipe or file read with PyAV, decoded as it arrives.

    ``open_timeout``: seconds to connect and read the first frame (None: ``timeout``);
    ``timeout``: seconds a read may wait (None: forever); both bound each reopening too.
    ``reconnect``: a network stream that breaks, stalls or (when reconnecting at all) ends is
    reopened, up to N attempts in a row, the first after ``reconnect_delay`` seconds, each next
    one after twice the wait before (at most ``RECONNECT_MAX_DELAY_S``); the count starts again
    once frames flow. Frames the sender made meanwhile are lost, counted in ``health.outages``,
    never invented. Damaged data is decoded as far as the decoder can (``health``)."""

    def __init__(self, target, kind: str, name: str, format: str | None = None,
                 options: dict | None = None, timeout: float | None = DEFAULT_TIMEOUT_S, reconnect: int = 0,
                 open_timeout: float | None = None, reconnect_delay: float = DEFAULT_RECONNECT_DELAY_S):
        super().__init__(name)
        try:
            import av
        except ImportError:
            raise ImportError("PyAV is needed to read video streams: pip install av "
                              "(or pip install 'sam2kit[video]')") from None
        self._av, self.kind = av, kind
        self.live = kind in ("camera", "network")
        self._target, self._format, self._options = target, format, dict(options or {})
        self.timeout, self.reconnect, self.reconnect_delay = timeout, reconnect, reconnect_delay
        self.open_timeout = timeout if open_timeout is None else open_timeout
        self.frames_read = 0  # frames yielded so far (the next frame's number)
        self._container = None
        self._frames = None
        self._wake = threading.Event()  # set by close(): ends a wait between reconnections
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

    def longest_silence(self) -> float | None:
        """The longest this source can go without a frame before it raises StreamError itself
        (its read timeout, then every reopening with its waits), or None (forever)."""
        if self.timeout is None or self.open_timeout is None:
            return None
        waits = sum(min(self.reconnect_delay * 2 ** k, RECONNECT_MAX_DELAY_S) for k in range(self.reconnect))
        return self.timeout + waits + self.reconnect * (self.open_timeout + self.timeout)

    def _open(self) -> None:
        av = self._av
        timeout = None if self.timeout is None and self.open_timeout is None else (self.open_timeout, self.timeout)
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
        """(frame, damaged) as they are decoded; packets the decoder refuses are counted and
        skipped, so decoding goes on after damaged data."""
        av, health = self._av, self.health
        tb, last_t = stream.time_base, None
        for packet in self._container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:
                health.undecodable_packets += 1
                continue
            for frame in frames:
                self._last = time.monotonic()
                if self.kind == "network" and frame.pts is not None and tb and self.fps:
                    t = float(frame.pts * tb)
                    if last_t is not None and t > last_t:
                        health.missing_frames += max(0, round((t - last_t) * self.fps) - 1)
                    last_t = t
                arr = frame.to_ndarray(format="rgb24")
                # own a compact copy; PyAV's buffer is freed
                yield self._fit(np.array(arr, order="C")), packet.is_corrupt or frame.is_corrupt

    def __iter__(self):
        if self._first is not None:
            (first, damaged), self._first = self._first, None
            yield self._counted(first, damaged)
        failures, outage = 0, None  # attempts to reopen in a row; (why, since when) while out
        while not self._closed:
            try:
                for arr, damaged in self._frames:
                    if outage is not None:
                        self.health.outage(self.frames_read - 1, outage[0], time.monotonic() - outage[1], self.fps)
                        failures, outage = 0, None
                    yield self._counted(arr, damaged)
                    if self._closed:
                        return
                if self.kind == "camera":
                    raise StreamError(self._camera_gone(f"{self.name} stopped sending"))
                if not (self.kind == "network" and self.reconnect):
                    return  # the stream ended
                what, stalled = f"{self.name} ended", False
            except (self._av.error.FFmpegError, OSError) as e:
                if self._closed:
                    return
                what, stalled = self._failure(e)
            if self.kind != "network" or not self.reconnect:
                raise StreamError(what, stalled)
            outage = outage or (what, self._last)
            failures = self._reopen(what, stalled, failures)
            if failures is None:
                return  # closed while waiting

    def _counted(self, arr: np.ndarray, damaged: bool) -> np.ndarray:
        if damaged:
            self.health.damaged_frames.append(self.frames_read)
        self.frames_read += 1
        return arr

    def _failure(self, e: BaseException) -> tuple[str, bool]:
        """(what happened, whether it was a stall) for a read that raised ``e``."""
        # ExitError: PyAV's timeout interrupted a read that waited too long
        stalled = self.timeout is not None and (isinstance(e, self._av.error.ExitError) or
                                                time.monotonic() - self._last >= 0.9 * self.timeout)
        what = (f"{self.name} stalled: no frame for {self.timeout:g} s" if stalled
                else f"{self.name} broke: {_why(e)}")
        return (self._camera_gone(what) if self.kind == "camera" else what), stalled

    def _camera_gone(self, what: str) -> str:
        if isinstance(self._target, str) and not os.path.exists(self._target):
            return f"{self.name} disappeared (unplugged?): {what}"
        return what

    def _reopen(self, what: str, stalled: bool, failures: int) -> int | None:
        """Reopen after waits that double, up to ``reconnect`` attempts in a row; the attempts
        made so far, None if closed meanwhile; StreamError when every attempt failed."""
        av, why = self._av, None
        self._close_container()
        while failures < self.reconnect:
            if self._wake.wait(min(self.reconnect_delay * 2 ** failures, RECONNECT_MAX_DELAY_S)):
                return None
            failures += 1
            self.reconnects += 1
            try:
                self._open()
                return failures
            except (av.error.FFmpegError, OSError, StreamError) as e:
                self._close_container()
                why = _why(e)
        raise StreamError(f"{what}; reopening it failed {failures} time(s) in a row"
                          + (f" (last: {why})" if why else ""), stalled)

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
        self._wake.set()
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


def _camera(target: str, fmt: str | None, timeout, options, open_timeout=None) -> AVSource:
    if fmt == "v4l2" and not os.path.exists(target):
        found = sorted(str(p) for p in Path("/dev").glob("video*"))
        listed = ", ".join(found) if found else "none here"
        raise ValueError(f"camera {target} does not exist (cameras: {listed}); plug one in, or give "
                         "one that exists (`v4l2-ctl --list-devices` names them)")
    return AVSource(target, "camera", f"camera {target}", format=fmt, options=options, timeout=timeout,
                    open_timeout=open_timeout)


# ---- a reader thread and its queue --------------------------------------------------------
