"""``sam2kit serve`` at its limits: session expiry and eviction, a full queue (503 +
Retry-After), oversized uploads (413), pictures over the pixel limit, the token and the bind
rules. One server with small limits for the module."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import synthetic_image
from serve_helpers import Server, moving_frames, random_checkpoint, write_mp4

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("limits")
    ckpt = random_checkpoint(root / "t.pt")
    video = write_mp4(root / "clip.mp4", moving_frames(8))
    srv = Server(ckpt, "--token", TOKEN, "--max-sessions", "2", "--session-ttl", "8", "--workers", "1",
                 "--queue", "0", "--max-upload-mb", "0.3", "--max-pixels", "40000", "--max-images", "2")
    client = httpx.Client(base_url=srv.url, timeout=120, headers={"Authorization": f"Bearer {TOKEN}"})
    yield {"root": root, "ckpt": ckpt, "video": video, "srv": srv, "api": client}
    client.close()
    srv.stop()


def png(h: int, w: int, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(synthetic_image(h, w, seed)).save(buf, format="PNG")
    return buf.getvalue()


def open_video(api, video) -> str:
    r = api.post("/api/videos", files={"file": ("clip.mp4", video.read_bytes(), "video/mp4")})
    assert r.status_code == 201, r.text
    return r.json()["session_id"]


def test_the_token_is_required_on_every_api_call(setup):
    url = setup["srv"].url
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        r = httpx.get(f"{url}/api/health", headers=headers)
        assert r.status_code == 401 and "Authorization: Bearer" in r.json()["error"]
        assert r.headers["www-authenticate"] == "Bearer"
    r = httpx.post(f"{url}/api/images", files={"file": ("a.png", png(20, 20), "image/png")})
    assert r.status_code == 401
    assert setup["api"].get("/api/health").json()["limits"]["token"] is True  # (never the token itself)
    assert TOKEN not in setup["api"].get("/api/health").text


def test_non_loopback_binding_needs_a_token(setup):
    out = subprocess.run([sys.executable, "-m", "sam2kit", "serve", "--host", "0.0.0.0", "--model",
                          str(setup["ckpt"])], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--token" in out.stderr and "--insecure" in out.stderr
    # with --insecure it is allowed (it gets as far as the port, which is taken)
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        port = s.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "sam2kit", "serve", "--host", "0.0.0.0", "--insecure",
                              "--port", str(port), "--model", str(setup["ckpt"]), "--resolution", "256"],
                             capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and f"cannot listen on 0.0.0.0:{port}" in out.stderr and "--port" in out.stderr


def test_oversized_uploads_get_413_without_being_read(setup):
    api = httpx.Client(base_url=setup["srv"].url, timeout=120, headers=setup["api"].headers)  # (closed by 413s)
    big = np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, format="PNG")
    assert len(buf.getvalue()) > 300_000
    r = api.post("/api/images", files={"file": ("big.png", buf.getvalue(), "image/png")})
    assert r.status_code == 413 and "0.3 MB" in r.json()["error"] and "--max-upload-mb" in r.json()["error"]

    def chunks():  # no Content-Length: cut off while counting
        yield (b'--zz\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
               b"Content-Type: image/png\r\n\r\n")
        for _ in range(100):
            yield b"x" * 10_000
    r = api.post("/api/images", content=chunks(), headers={"content-type": "multipart/form-data; boundary=zz"})
    assert r.status_code == 413
    api.close()
    assert setup["api"].get("/api/health").json()["status"] == "ok"


def test_pictures_and_frames_over_the_pixel_limit(setup):
    api = setup["api"]
    r = api.post("/api/images", files={"file": ("wide.png", png(150, 300), "image/png")})
    assert r.status_code == 422 and "45,000 pixels, over the limit of 40,000" in r.json()["error"]
    bomb = io.BytesIO()
    Image.new("L", (6000, 6000)).save(bomb, format="PNG")  # 36 Mpx of zeros in a few kB
    r = api.post("/api/images", files={"file": ("bomb.png", bomb.getvalue(), "image/png")})
    assert r.status_code == 422 and "over the limit" in r.json()["error"]
    wide = write_mp4(setup["root"] / "wide.mp4", [np.zeros((160, 320, 3), np.uint8)] * 3)
    r = api.post("/api/videos", files={"file": ("wide.mp4", wide.read_bytes(), "video/mp4")})
    assert r.status_code == 413 and "--max-pixels" in r.json()["error"]


def test_picture_cache_is_bounded(setup):
    api = setup["api"]
    ids = [api.post("/api/images", files={"file": (f"{i}.png", png(60, 80, i), "image/png")}).json()["image_id"]
           for i in range(3)]
    r = api.post(f"/api/images/{ids[0]}/predict", json={"box": [1, 1, 30, 30]})
    assert r.status_code == 404 and "expired" in r.json()["error"] and "more than 2 pictures" in r.json()["error"]
    assert api.post(f"/api/images/{ids[2]}/predict", json={"box": [1, 1, 30, 30]}).status_code == 200


def test_sessions_are_evicted_least_recently_used_first_and_expire_when_idle(setup):
    api, video = setup["api"], setup["video"]
    a, b = open_video(api, video), open_video(api, video)
    api.get(f"/api/videos/{a}")  # a is now the most recently used
    c = open_video(api, video)  # one too many: b goes
    r = api.get(f"/api/videos/{b}")
    assert r.status_code == 404 and "expired" in r.json()["error"] and "more than 2 videos" in r.json()["error"]
    assert api.get(f"/api/videos/{a}").status_code == 200 and api.get(f"/api/videos/{c}").status_code == 200
    time.sleep(11)  # idle past the 8 s TTL (checked every 2 s)
    for sid in (a, c):
        r = api.get(f"/api/videos/{sid}")
        assert r.status_code == 404 and "idle for more than 8 s" in r.json()["error"]
    assert api.get("/api/health").json()["sessions"] == 0


def test_a_full_queue_answers_503_with_retry_after(setup):
    """One worker, no queue: while a long job runs, the next model job is refused at once."""
    api = setup["api"]
    image_id = api.post("/api/images", files={"file": ("q.png", png(60, 80, 7), "image/png")}).json()["image_id"]
    slow = {}

    def automatic():
        with httpx.Client(base_url=setup["srv"].url, timeout=300, headers=api.headers) as own:
            slow["r"] = own.post(f"/api/images/{image_id}/automatic",
                                 json={"points_per_side": 16, "pred_iou_thresh": 0, "stability_score_thresh": 0})
    t = threading.Thread(target=automatic)
    t.start()
    deadline = time.monotonic() + 120
    while api.get("/api/health").json()["queue"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    r = api.post(f"/api/images/{image_id}/predict", json={"box": [1, 1, 30, 30]})
    assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1 and "busy" in r.json()["error"]
    assert api.get("/api/health").status_code == 200  # no model work: still answered
    t.join(600)
    assert slow["r"].status_code == 200
    assert api.post(f"/api/images/{image_id}/predict", json={"box": [1, 1, 30, 30]}).status_code == 200
