"""The real ``sam2kit serve`` under hostile clients, on 127.0.0.1: Schemathesis fuzzing of every
route from the server's own /openapi.json (every check), the --token rule on every route and
on encoded variants of its paths, the media root against '..', absolute paths, symbolic links
and encodings, CORS closed unless opened, slow headers, a client that never reads a stream, and
a disconnect in the middle of tracking.

Cost: one server, fuzzing bounded to 45 s (SAM2KIT_FUZZ_S), the rest a few seconds each:
measured 136 s with 60 s of fuzzing on a shared 2-core machine. The long fuzzing run:
benchmarks/fuzz_serve.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from conftest import synthetic_image
from serve_helpers import Server, moving_frames, random_checkpoint, write_mp4

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FUZZ_S = int(os.environ.get("SAM2KIT_FUZZ_S", "45"))
SCHEMATHESIS_TOML = Path(__file__).parent / "schemathesis.toml"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    media = root / "media"
    media.mkdir()
    Image.fromarray(synthetic_image(96, 128, 3)).save(media / "photo.png")
    write_mp4(media / "long.mp4", moving_frames(48, 48, 64))
    secret = root / "secret.png"
    Image.fromarray(synthetic_image(96, 128, 5)).save(secret)
    os.symlink(secret, media / "link.png")
    os.symlink(root, media / "up")
    return {"root": root, "media": media, "secret": secret, "ckpt": random_checkpoint(root / "t.pt")}


@pytest.fixture(scope="module")
def server(files):
    srv = Server(files["ckpt"], "--media-root", str(files["media"]), "--token", TOKEN, "--cors-origins",
                 "http://allowed.example", "--header-timeout", "2", "--keep-alive-timeout", "2",
                 "--stream-send-timeout", "2", "-q")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def api(server):
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=120) as client:
        yield client


def operations(api) -> list[tuple[str, str, dict]]:
    """(method, path with its parameters filled, operation) of every route in /openapi.json."""
    schema = api.get("/openapi.json").json()
    out = []
    for path, item in schema["paths"].items():
        for method, op in item.items():
            filled = path
            for p in op.get("parameters", []):
                if p["in"] == "path":
                    filled = filled.replace("{" + p["name"] + "}", "0")
            out.append((method.upper(), filled, op))
    return out


# ---- fuzzing ------------------------------------------------------------------------------------

def test_schemathesis_every_route_every_check(server, tmp_path):
    """Schemathesis (examples, coverage and fuzzing phases, every check: no 5xx, status codes,
    content types, headers and bodies as the schema says, bad data refused, ...). The config
    (tests/schemathesis.toml) lets schema-valid requests be refused for what a schema cannot
    say: no such session (404), a point outside the picture or a frame past the end (422), a
    file that is not a picture (400/415), a session busy tracking (409)."""
    pytest.importorskip("schemathesis")
    exe = Path(sys.executable).with_name("schemathesis")
    cmd = [str(exe), "--config-file", str(SCHEMATHESIS_TOML), "run", f"{server.url}/openapi.json",
           "--checks", "all", "--phases", "examples,coverage,fuzzing", "--max-time", str(FUZZ_S),
           "--max-examples", "25", "-w", "1", "--request-timeout", "300", "--max-response-time", "300",
           "--header", f"Authorization: Bearer {TOKEN}", "--seed", "26", "--generation-database", "none",
           "--no-color"]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=FUZZ_S + 900)
    report = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, report
    assert "generated" in report and "failures" not in report.split("SUMMARY")[-1].lower(), report
    assert "unexpected" not in server.log, server.log  # no 500 logged on the server's side


# ---- the token and the media root -----------------------------------------------------------------

def test_the_token_holds_on_every_route_and_its_variants(api, server):
    ops = operations(api)
    prefixes = ("/api/", "/cvat/", "/label-studio/")  # the API, CVAT's protocol, Label Studio's
    assert len(ops) >= 15 and all(path.startswith(prefixes) for _, path, _ in ops)
    assert {p for p in prefixes if any(path.startswith(p) for _, path, _ in ops)} == set(prefixes)
    with httpx.Client(base_url=server.url, timeout=60) as anon:
        for method, path, _ in ops:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                            {"Authorization": f"Basic {TOKEN}"}):
                r = anon.request(method, path, headers=headers)
                assert r.status_code == 401, (method, path, headers, r.status_code)
                assert r.headers["www-authenticate"] == "Bearer" and "--token" in r.json()["error"]
        for variant in ("/api/health", "/api/%68ealth", "/%61pi/health", "/api/./health", "/api//health",
                        "/api/../api/health", "/x/../api/health", "/API/health", "//api/health",
                        "/api/health/", "/api/health%00", "/api/health?x=../../", "/label-studio/%68ealth",
                        "/%6cabel-studio/health", "/label-studio/./health", "/x/../label-studio/health",
                        "/cvat/../cvat/interactor", "/%63vat/interactor"):
            r = anon.get(variant)
            assert r.status_code != 200 or "model" not in r.text, (variant, r.status_code, r.text[:200])
        assert anon.get("/").status_code == 200  # the page itself is public; its API calls are not


def test_the_media_root_holds_on_every_route_that_opens_a_path(api, files):
    ops = [(m, p) for m, p, op in operations(api) if "path" in json.dumps(
        op.get("requestBody", {}).get("content", {}).get("application/json", {}))]
    assert sorted(ops) == [("POST", "/api/images"), ("POST", "/api/videos")]
    hostile = ["../secret.png", str(files["secret"]), "link.png", "up/secret.png", "%2e%2e/secret.png",
               "..%2fsecret.png", "photo.png/../../secret.png", "./../secret.png", "..\\secret.png",
               "/etc/passwd", "file:///etc/passwd", "C:/Windows/win.ini", "\x00photo.png", "",
               str(files["media"] / "photo.png"), "~/secret.png", "photo.png\n"]
    for method, path in ops:
        for p in hostile:
            r = api.request(method, path, json={"path": p})
            assert 400 <= r.status_code < 500, (path, p, r.status_code, r.text)
            assert "error" in r.json()
        assert api.post(path, json={"path": "photo.png" if "images" in path else "long.mp4"}).status_code == 201


def test_cors_is_opened_only_for_the_named_origins(api, server):
    ask = {"Origin": "http://allowed.example", "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "authorization,content-type"}
    r = httpx.options(f"{server.url}/api/images", headers=ask)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://allowed.example"
    r = httpx.options(f"{server.url}/api/images", headers={**ask, "Origin": "http://evil.example"})
    assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
    r = api.get("/api/health", headers={"Origin": "http://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_cors_is_closed_by_default():
    """(The app itself, in this process, made with the default settings.)"""
    from fastapi.testclient import TestClient

    from sam2kit.server.app import create_app
    from sam2kit.server.settings import ServeSettings

    class Stub:
        settings = ServeSettings()

    client = TestClient(create_app(Stub()))
    r = client.options("/api/media", headers={"Origin": "http://a.example", "Access-Control-Request-Method": "GET"})
    assert r.status_code == 405 and "access-control-allow-origin" not in r.headers
    assert r.headers["allow"] == "GET"
    r = client.get("/api/media", headers={"Origin": "http://a.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


# ---- slow clients ---------------------------------------------------------------------------------

def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_slow_headers_hold_no_worker_and_are_cut_off(api, server):
    """30 clients each send a header byte every 0.3 s: the server answers others meanwhile, keeps
    its memory, and closes each slow connection (--header-timeout 2) instead of waiting on."""
    host, port = server.url.rsplit("/", 1)[-1].rsplit(":", 1)
    before = rss_kb(server.proc.pid)
    slow = [socket.create_connection((host, int(port))) for _ in range(30)]
    request = b"GET /api/health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n\r\n"
    closed = set()
    for i in range(40):  # at most 12 s of dripping, far past the 2 s deadline
        for k, s in enumerate(slow):
            if k in closed:
                continue
            try:
                s.sendall(request[i:i + 1])
                s.setblocking(False)
                if s.recv(1024) == b"":
                    closed.add(k)
            except BlockingIOError:
                pass
            except OSError:  # reset by the server
                closed.add(k)
            finally:
                s.setblocking(True)
        if i == 5:
            assert api.get("/api/health").json()["status"] == "ok"  # others are served meanwhile
        if len(closed) == len(slow):
            break
        time.sleep(0.3)
    for s in slow:
        s.close()
    assert len(closed) == len(slow), f"{len(slow) - len(closed)} slow clients still connected"
    assert rss_kb(server.proc.pid) - before < 30_000  # (KB) what 30 sockets' buffers may cost


def test_a_stream_nobody_reads_ends_after_the_send_timeout():
    """The route's response class on a real uvicorn (127.0.0.1) with a producer far faster
    than a client that never reads (its receive buffer at 4 KB): the producer is held back
    by flow control (memory bounded by the socket buffers), and once a send has waited
    ``send_timeout`` the stream ends and the producer's ``finally`` runs. (The tracking stream
    of a small test video is far smaller than the socket buffers, so the real route cannot be
    made to block here; the route uses this very class with --stream-send-timeout.)"""
    import uvicorn
    from fastapi import FastAPI

    from sam2kit.server.streaming import TimedStreamingResponse

    state = {"chunks": 0, "closed": False}
    app = FastAPI()

    @app.get("/stream")
    async def stream():
        async def produce():
            try:
                while True:
                    state["chunks"] += 1
                    yield b"x" * 65536
                    await asyncio.sleep(0)
            finally:
                state["closed"] = True

        return TimedStreamingResponse(produce(), media_type="application/x-ndjson", send_timeout=1.0)

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", port))
        client.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        for _ in range(300):  # never read; wait (bounded) for the server to give up
            if state["closed"]:
                break
            time.sleep(0.05)
        assert state["closed"], "the stream went on for a client that never reads"
        assert state["chunks"] < 200, state  # < 13 MB made: held back, never unbounded
        client.close()
    finally:
        server.should_exit = True
        thread.join(10)


# ---- a disconnect in the middle of tracking -------------------------------------------------------

def test_a_disconnect_cancels_the_tracking_within_a_frame(api, server):
    """The client reads three frames of a 48-frame tracking, then closes the connection: the
    server computes at most the frame in progress and the one in flight after that, and the
    session is free again."""
    sid = api.post("/api/videos", json={"path": "long.mp4"}).json()["session_id"]
    api.post(f"/api/videos/{sid}/prompts", json=dict(frame=0, object=1, points=[[20, 24]], labels=[1]))
    host, port = server.url.rsplit("/", 1)[-1].rsplit(":", 1)
    body = b"{}"
    s = socket.create_connection((host, int(port)))
    s.sendall(f"POST /api/videos/{sid}/propagate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
              f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    seen, buf = 0, b""
    while seen < 3:
        chunk = s.recv(65536)
        assert chunk, buf[-500:]
        buf += chunk
        seen = buf.count(b'"frame":')
    s.close()
    for _ in range(600):
        state = api.get(f"/api/videos/{sid}").json()
        if not state["propagating"]:
            break
        time.sleep(0.05)
    assert not state["propagating"]
    assert seen <= state["tracked_frames"] <= seen + 2, (seen, state)
    assert api.post(f"/api/videos/{sid}/prompts", json=dict(frame=1, object=1, points=[[20, 24]],
                                                            labels=[1])).status_code == 200
    api.delete(f"/api/videos/{sid}")
