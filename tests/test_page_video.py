"""The page with videos, in a real Chromium against a real ``sam2kit serve`` (random tiny
checkpoint): open the sample clip, add two objects on different frames, track, check that every
frame the page draws shows the masks the API streamed, cancel a tracking halfway, correct a
frame, track again; exports; an unreadable file; the server gone.

Resolution 256: tracking at 512 takes about 2.5 s a frame on a busy 2-core machine, at 256
about 0.5 s; what is checked (the page draws what the API sent) does not depend on it.
One server and one browser for the module. Screenshots: out/page-tests/video/.
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from importlib.resources import files

import httpx
import numpy as np
import pytest
from PIL import Image

from page_harness import (Browser, Server, assert_drawn, bare_canvas, need_browser, object_colours,
                          point_on_canvas, random_checkpoint, request_json, settle)
from sam2kit.image.amg import rle_to_mask

SIZE = (640, 360)  # the sample clip: 75 frames at 25 fps


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    need_browser()
    folder = tmp_path_factory.mktemp("page_video")
    media = folder / "media"
    media.mkdir()
    shutil.copy(files("sam2kit") / "assets" / "sample_video.mp4", media / "clip.mp4")
    srv = Server(random_checkpoint(folder / "tiny.pt"), "--media-root", str(media), "--max-upload-mb", "0.2",
                 resolution=256)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser(server):
    b = Browser("video")
    b.page.goto(server.url)
    settle(b.page)
    yield b
    b.close()


@pytest.fixture
def page(browser):
    browser.errors.clear()
    yield browser.page
    assert not browser.errors, f"errors in the page: {browser.errors}"


def seek(page, frame: int):
    page.get_by_test_id("frame-slider").fill(str(frame))
    page.wait_for_function(f"document.querySelector('[data-testid=canvas]').dataset.frame === '{frame}'")
    settle(page)


def click(page, x, y, button="left"):
    """Click frame pixel (x, y); (request, response) of the prompt it sent."""
    with page.expect_response(lambda r: r.url.endswith("/prompts")) as info:
        page.mouse.click(*point_on_canvas(page, x, y, SIZE), button=button)
    settle(page)
    return request_json(info.value), info.value.json()


def check_frame(page, objects: list[dict], what: str):
    """The shown frame has exactly `objects`' masks (the API's {"object", "rle"}) drawn."""
    colours = object_colours(page)
    masks = [rle_to_mask(o["rle"]) for o in objects]
    assert any(0.01 < m.mean() < 0.99 for m in masks), f"{what}: only trivial masks"
    assert_drawn(page, bare_canvas(page), masks, [colours[o["object"]] for o in objects], what)


def track(page, server, session: str, frames: int | None, direction: str = "forward") -> list[dict]:
    """Press Track; the lines of the stream as the page received them (Chromium keeps no copy
    of a streamed body for Playwright), each frame's checked against the API's masks of that
    frame asked afterwards by the test itself."""
    page.get_by_label("Frames to track").fill("" if frames is None else str(frames))
    page.get_by_label("Direction").select_option(direction)
    with page.expect_response(lambda r: r.url.endswith("/propagate")) as info:
        page.get_by_test_id("track-button").click()
    assert info.value.headers["content-type"] == "application/x-ndjson"
    page.wait_for_function("!document.querySelector('[data-testid=track-button]').disabled", timeout=120_000)
    settle(page)
    lines = [json.loads(line) for line in page.evaluate("window.sam2kit.lastStream()")]
    for line in lines[:-1]:
        api = httpx.get(f"{server.url}/api/videos/{session}/frames/{line['frame']}/masks").json()
        assert api["objects"] == line["objects"], f"frame {line['frame']}: the stream and the API differ"
    return lines


def test_open_sample_clip_and_scrub(page, browser):
    page.get_by_role("button", name="Sample video").click()
    settle(page)
    assert "75 frames, 640x360" in page.get_by_test_id("status").text_content()
    slider = page.get_by_test_id("frame-slider")
    assert slider.get_attribute("max") == "74"
    seek(page, 10)
    assert page.get_by_label("Frame", exact=True).input_value() == "10"
    assert "0:00.40 / 0:02.96" in page.locator("#frame-info").text_content()
    page.keyboard.press("ArrowRight")
    page.wait_for_function("document.querySelector('[data-testid=canvas]').dataset.frame === '11'")
    browser.shot("clip-frame-11")


def test_two_objects_track_cancel_correct_retrack(page, browser, server):
    page.get_by_label("Server:").select_option("clip.mp4")
    with page.expect_response(lambda r: r.url.endswith("/api/videos")) as info:
        page.get_by_role("button", name="Open", exact=True).click()
    settle(page)
    session = info.value.json()["session_id"]

    req, res = click(page, 320, 180)
    assert req["frame"] == 0 and req["object"] == 1 and np.allclose(req["points"], [[320, 180]], atol=1.0)
    check_frame(page, res["objects"], "object 1 clicked on frame 0")
    page.keyboard.press("n")
    seek(page, 3)
    req, res = click(page, 150, 90)
    assert req["frame"] == 3 and req["object"] == 2
    check_frame(page, res["objects"], "object 2 clicked on frame 3")
    browser.shot("two-objects")
    objects = lambda: httpx.get(f"{server.url}/api/videos/{session}").json()["objects"]  # noqa: E731
    page.keyboard.press("Control+z")  # the click: object 2 has no prompt left on the server
    settle(page)
    assert objects() == [1]
    page.keyboard.press("Control+y")
    settle(page)
    assert objects() == [1, 2]
    check_frame(page, res["objects"], "the click redone")

    seek(page, 0)
    lines = track(page, server, session, 6)
    assert lines[-1] == {"done": True, "frames": 6}
    first = {line["frame"]: line["objects"] for line in lines[:-1]}
    assert sorted(first) == list(range(6))
    assert page.get_by_test_id("canvas").get_attribute("data-frame") == "5", "the view follows the tracking"
    assert "Tracked 6 frames" in page.get_by_test_id("status").text_content()
    browser.shot("tracked")
    for frame, objects in first.items():
        seek(page, frame)
        assert {o["object"] for o in objects} == {1, 2}
        check_frame(page, objects, f"tracked frame {frame}")

    # all the way from frame 0, cancelled once a few frames are in
    seek(page, 0)
    page.get_by_label("Frames to track").fill("")
    page.get_by_test_id("track-button").click()
    page.wait_for_function("document.getElementById('progress').value >= 2", timeout=60_000)
    browser.shot("tracking")
    page.get_by_test_id("cancel-button").click()
    page.wait_for_function("!document.querySelector('[data-testid=track-button]').disabled", timeout=60_000)
    settle(page)
    status = page.get_by_test_id("status").text_content()
    assert "Tracking cancelled after" in status and "of 75 frames" in status
    state = httpx.get(f"{server.url}/api/videos/{session}").json()
    assert state["propagating"] is False and state["tracked_frames"] < 75
    browser.shot("cancelled")

    # a correction for object 1 on frame 2, then track again
    page.get_by_test_id("object-item").first.click()
    seek(page, 2)
    req, res = click(page, 100, 300, button="right")
    assert req["frame"] == 2 and req["object"] == 1 and req["labels"] == [0]
    check_frame(page, res["objects"], "correction on frame 2")
    corrected = next(o for o in res["objects"] if o["object"] == 1)
    assert corrected["rle"] != next(o for o in first[2] if o["object"] == 1)["rle"]
    seek(page, 0)
    lines = track(page, server, session, 6)
    second = {line["frame"]: line["objects"] for line in lines[:-1]}
    assert sorted(second) == list(range(6))
    for frame, objects in second.items():
        seek(page, frame)
        check_frame(page, objects, f"re-tracked frame {frame}")
    assert next(o for o in second[2] if o["object"] == 1) == corrected, "the correction is kept by the tracking"
    assert any(second[f] != first[f] for f in range(3, 6)), "the correction changed the tracking after it"
    browser.shot("re-tracked")

    export_and_check(page, session, second)


def export(page, fmt: str) -> bytes:
    page.get_by_label("Export", exact=True).select_option(fmt)
    with page.expect_download(timeout=120_000) as info:
        page.get_by_test_id("export-button").click()
    with open(info.value.path(), "rb") as f:
        return f.read()


def export_and_check(page, session: str, tracked: dict):
    with zipfile.ZipFile(io.BytesIO(export(page, "davis"))) as z:
        names = z.namelist()
        for frame in (0, 5):
            assert f"{frame:05d}.png" in names
            labels = np.asarray(Image.open(io.BytesIO(z.read(f"{frame:05d}.png"))))
            m1, m2 = (rle_to_mask(o["rle"]) for o in sorted(tracked[frame], key=lambda o: o["object"]))
            assert (labels[m1 & ~m2] == 1).all() and (labels[m2 & ~m1] == 2).all() and (labels[~m1 & ~m2] == 0).all()
    with zipfile.ZipFile(io.BytesIO(export(page, "masks"))) as z:
        for o in tracked[4]:
            png = np.asarray(Image.open(io.BytesIO(z.read(f"{o['object']}/00004.png"))))
            assert np.array_equal(png > 127, rle_to_mask(o["rle"]))
    mp4 = export(page, "mp4")
    assert mp4[4:8] == b"ftyp"


def test_unreadable_or_too_large_video_shows_error(page, browser):
    page.get_by_test_id("file-input").set_input_files(
        {"name": "holiday.mp4", "mimeType": "video/mp4", "buffer": b"\x00\x00\x00\x18ftypmp42" + bytes(300)})
    error = page.get_by_test_id("error")
    error.filter(has_text="Cannot open holiday.mp4: Cannot read this video").wait_for()
    browser.shot("unreadable-video")
    page.get_by_role("button", name="Dismiss the message").click()
    error.wait_for(state="hidden")
    clip = (files("sam2kit") / "assets" / "sample_video.mp4").read_bytes()  # 0.25 MB, limit 0.2 MB
    page.get_by_test_id("file-input").set_input_files({"name": "long.mp4", "mimeType": "video/mp4", "buffer": clip})
    error.filter(has_text="Cannot open long.mp4: it is 0.3 MB, over this server's upload limit of 0.2 MB").wait_for()
    browser.shot("too-large-video")


def test_server_gone_is_said_in_plain_words(page, browser, server):
    server.stop()
    page.get_by_role("button", name="Sample photo").click()
    page.get_by_test_id("error").filter(has_text="The server is not answering").wait_for()
    browser.shot("server-gone")
