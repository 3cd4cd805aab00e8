"""A live MPEG-TS sender for the stream tests, run as a subprocess: listens on a free port of
127.0.0.1 (printed on its first line), takes one connection and sends it the bytes of FILE in
TS-packet-aligned chunks, PACE seconds apart (0: as fast as the socket takes them).

    python stream_server.py FILE MODE PACE
MODE: full (send all, close: the stream ends), cut (send half, then reset the connection: the
stream breaks), stall (send all, then keep the connection open and silent, as a camera that
stops sending; all, since FFmpeg's MPEG-TS reader wants 8 KiB before its first frame)."""

import socket
import struct
import sys
import time

CHUNK = 188 * 7  # seven TS packets, as a UDP/RTP sender would group them


def main() -> None:
    path, mode, pace = sys.argv[1], sys.argv[2], float(sys.argv[3])
    data = open(path, "rb").read()
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    print(srv.getsockname()[1], flush=True)
    conn, _ = srv.accept()
    end = len(data) if mode != "cut" else (len(data) // 2 // 188) * 188
    for i in range(0, end, CHUNK):
        conn.sendall(data[i:min(i + CHUNK, end)])
        if pace:
            time.sleep(pace)
    if mode == "cut":
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, not FIN
    elif mode == "stall":
        time.sleep(600)
    conn.close()


if __name__ == "__main__":
    main()
