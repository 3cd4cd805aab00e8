"""A network stream whose protocol PyAV's FFmpeg was built without (PyAV's wheels have no
libsrt, so no ``srt://``), read through the system's ``ffmpeg``: it copies the video (no
decoding, no re-encoding) into MPEG-TS on a pipe that PyAV decodes."""

from __future__ import annotations

import shutil
import subprocess

from sam2kit.video.sources.av import AVSource

RELAYED_SCHEMES = ("srt",)


def pyav_reads(url: str) -> bool:
    """Whether PyAV's FFmpeg knows the protocol of ``url`` (an unknown one fails at once,
    before any connection)."""
    import av

    scheme = url.split("://", 1)[0].lower()
    try:
        av.open(f"{scheme}://127.0.0.1:1?unused", timeout=(0.01, 0.01)).close()
    except av.error.ProtocolNotFoundError:
        return False
    except Exception:  # noqa: BLE001 - any other failure means the protocol exists
        return True
    return True


def relay_ffmpeg(url: str) -> str | None:
    """The ``ffmpeg`` to relay ``url`` through, when PyAV cannot read it itself; None when it
    can; ValueError (with the fix) when it cannot and there is no ffmpeg."""
    if url.split("://", 1)[0].lower() not in RELAYED_SCHEMES or pyav_reads(url):
        return None
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise ValueError(f"cannot read {url}: PyAV's FFmpeg has no {url.split(':', 1)[0]} support and there is no "
                         "ffmpeg program to relay it; install one with SRT (apt-get install ffmpeg), or relay it "
                         "yourself: ffmpeg -i URL -c copy -f mpegts - | sam2kit video -")
    return ffmpeg


class RelaySource(AVSource):
    """``url`` read through ``ffmpeg -i URL -c copy -f mpegts pipe:1``: timeouts, reconnection
    and damage counts as for any network stream (the relay is started again to reconnect; its
    own I/O timeout ends it when the stream stalls)."""

    def __init__(self, url: str, ffmpeg: str, **kw):
        self._ffmpeg, self._url, self._proc = ffmpeg, url, None
        super().__init__(None, "network", url, format="mpegts", **kw)

    def _open(self) -> None:
        io_us = [] if self.timeout is None else ["-timeout", str(int(self.timeout * 1e6))]
        connect_ms = [] if self.open_timeout is None else ["-connect_timeout", str(int(self.open_timeout * 1000))]
        self._proc = subprocess.Popen(
            [self._ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", *io_us, *connect_ms,
             "-analyzeduration", self._options.get("analyzeduration", "500000"), "-i", self._url,
             "-map", "0:v:0", "-c", "copy", "-flush_packets", "1", "-f", "mpegts", "pipe:1"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            bufsize=0)  # reads return what has come, not a full buffer
        self._target = self._proc.stdout
        try:
            super()._open()
        except Exception as e:  # noqa: BLE001 - say what the relay said
            raise OSError(self._relay_error() or str(e)) from None

    def _decode(self, stream):
        yield from super()._decode(stream)
        why = self._relay_error()  # the pipe ended: the relay stopped; why?
        if why:
            raise OSError(why)

    def _relay_error(self) -> str | None:
        """The relay's last error line once it has exited with a failure, else None."""
        try:
            rc = self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None
        if rc == 0:
            return None
        lines = self._proc.stderr.read().decode(errors="replace").strip().splitlines()
        return f"the ffmpeg relay failed: {lines[-1] if lines else f'exit status {rc}'}"

    def _close_container(self) -> None:
        super()._close_container()
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            for f in (self._proc.stdout, self._proc.stderr):
                f.close()
            self._proc = None
