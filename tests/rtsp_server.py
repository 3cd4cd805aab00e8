"""An RTSP server for the stream tests: the GStreamer RTSP server (Debian's
gir1.2-gst-rtsp-server-1.0, run with the system's python3, which has gi), serving the H.264 of an
MPEG-TS FILE at rtsp://127.0.0.1:PORT/cam over TCP only, each client from the file's start, paced
by its timestamps (real time), ending with the file (RTCP BYE and EOF to the client).

    /usr/bin/python3 rtsp_server.py FILE PORT      (PORT 0: a free one; the port is printed)

(FFmpeg cannot be this server: its RTSP "listen" mode only receives a stream a client pushes
with ANNOUNCE/RECORD, and never answers a client's PLAY; mediamtx is not packaged by Debian.)"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # (after require_version)


def main() -> None:
    path, port = sys.argv[1], sys.argv[2]
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(f"( filesrc location={path} ! tsdemux ! h264parse ! rtph264pay name=pay0 pt=96 "
                       "config-interval=-1 )")
    factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP)
    server.get_mount_points().add_factory("/cam", factory)
    server.attach(None)
    print(server.get_bound_port(), flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
