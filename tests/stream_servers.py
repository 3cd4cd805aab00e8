"""Real stream servers on 127.0.0.1 for the stream fault tests: Debian's ffmpeg as an RTMP server
(``-listen 1``), an SRT listener and a UDP/MPEG-TS sender; the GStreamer RTSP server
(tests/rtsp_server.py, over TCP); an HTTP(S) MJPEG server (multipart/x-mixed-replace) in a
thread. Each can be stopped (SIGKILL), started again on the same port, and paused (SIGSTOP: the
connection stays open and nothing is sent, as a sender that hangs). Missing programs skip the
tests, or fail them under CI=true (scripts/test installs them)."""

from __future__ import annotations

import http.server
import io
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import av
import pytest
from PIL import Image

from test_cli import moving_frames

HERE = Path(__file__).parent
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, with gi (python3-gi) for the RTSP server
FPS = 10


def need(what: str, ok: bool) -> None:
    if not ok:
        msg = f"{what} is not installed (scripts/test installs it with apt-get)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)


def has_rtsp_server() -> bool:
    if not os.path.exists(SYSTEM_PYTHON):
        return False
    probe = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    return subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True).returncode == 0


def write_clip(path: Path, n: int, sizes=((128, 96),), gop: int = 5) -> Path:
    """n frames per size of H.264 in MPEG-TS, a keyframe every ``gop`` frames (a client that
    joins late starts within half a second), no B-frames; several sizes: the segments one after
    another in one file (a sender that changes resolution mid-stream)."""
    with open(path, "wb") as out:
        for w, h in sizes:
            buf = io.BytesIO()
            with av.open(buf, "w", format="mpegts") as c:
                s = c.add_stream("libx264", rate=FPS)
                s.width, s.height, s.pix_fmt = w, h, "yuv420p"
                s.options = {"tune": "zerolatency", "g": str(gop)}
                for f in moving_frames(n, w, h):
                    for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                        c.mux(p)
                for p in s.encode():
                    c.mux(p)
            out.write(buf.getvalue())
    return path


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bound(port: int, table: str) -> bool:
    """Whether something listens on (tcp: state LISTEN) or is bound to (udp) 127.0.0.1:port."""
    want = f"0100007F:{port:04X}"
    with open(f"/proc/net/{table}") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return any(r[1] == want and (table == "udp" or r[3] == "0A") for r in rows)


class Served:
    """A server subprocess (``argv``) on a fixed ``port``; ``url`` for the client."""

    def __init__(self, url: str, argv: list[str], port: int, table: str | None = "tcp"):
        self.url, self.argv, self.port, self.table = url, argv, port, table
        self.proc = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30  # (a bound for a busy machine, not a timing)
        while self.table and not _bound(self.port, self.table):
            assert self.proc.poll() is None and time.monotonic() < deadline, f"{self.argv[0]} did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGKILL: the server is gone at once, as a camera that loses power."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.resume()
        self.stop()


def ffmpeg(*args: str) -> list[str]:
    need("ffmpeg (Debian's)", shutil.which("ffmpeg") is not None)
    return [shutil.which("ffmpeg"), "-nostdin", "-hide_banner", "-loglevel", "error", *args]


def rtsp(clip: Path) -> Served:
    """The GStreamer RTSP server: the clip from its start to each client, over TCP."""
    need("the GStreamer RTSP server (gir1.2-gst-rtsp-server-1.0, python3-gi)", has_rtsp_server())
    port = free_port()
    return Served(f"rtsp://127.0.0.1:{port}/cam", [SYSTEM_PYTHON, str(HERE / "rtsp_server.py"), str(clip), str(port)],
                  port)


def rtmp(clip: Path) -> Served:
    """ffmpeg as the RTMP server (one client), the clip at its own pace."""
    port = free_port()
    url = f"rtmp://127.0.0.1:{port}/live/cam"
    return Served(url, ffmpeg("-re", "-i", str(clip), "-c", "copy", "-f", "flv", "-listen", "1", url), port)


def srt(clip: Path) -> Served:
    """ffmpeg as an SRT listener (Debian's ffmpeg has libsrt), the clip at its own pace."""
    port = free_port(socket.SOCK_DGRAM)
    argv = ffmpeg("-re", "-i", str(clip), "-c", "copy", "-f", "mpegts", f"srt://127.0.0.1:{port}?mode=listener")
    return Served(f"srt://127.0.0.1:{port}?mode=caller", argv, port, "udp")


def udp(clip: Path) -> Served:
    """ffmpeg sending the clip, looped, as MPEG-TS in UDP datagrams to 127.0.0.1:port, where the
    client listens (a UDP sender does not know whether anyone receives)."""
    port = free_port(socket.SOCK_DGRAM)
    argv = ffmpeg("-re", "-stream_loop", "-1", "-i", str(clip), "-c", "copy", "-f", "mpegts",
                  f"udp://127.0.0.1:{port}?pkt_size=1316")
    return Served(f"udp://127.0.0.1:{port}", argv, port, table=None)


class MJPEG:
    """An HTTP (or HTTPS, ``certs``: (cert, key) files) server of ``n`` JPEG frames as
    multipart/x-mixed-replace, ``1/FPS`` s apart, to each client, in a thread."""

    def __init__(self, n: int, certs: tuple[Path, Path] | None = None, size=(128, 96)):
        frames = []
        for f in moving_frames(n, *size):
            buf = io.BytesIO()
            Image.fromarray(f).save(buf, "JPEG", quality=90)
            frames.append(buf.getvalue())

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                for data in frames:
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n"
                                     % (len(data), data))
                    self.wfile.flush()
                    time.sleep(1 / FPS)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        scheme = "http"
        if certs is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*map(str, certs))
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}/stream.mjpg"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl), as a camera's own HTTPS has."""
    need("openssl", shutil.which("openssl") is not None)
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)
    return cert, key
