"""The page with pictures, in a real Chromium against a real ``sam2kit serve`` (random tiny
checkpoint at 512): what the page draws is read back from its canvas and compared with the
masks the API returned for the very requests the page sent.

One server and one browser for the module; each test opens the sample photo afresh (its
embedding is cached on the server after the first). Screenshots: out/page-tests/picture/.
"""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from page_harness import (Browser, Server, assert_drawn, need_browser, object_colours, point_on_canvas,
                          random_checkpoint, read_canvas, request_json, settle)
from sam2kit.image.amg import rle_to_mask

SIZE = (600, 400)  # the sample photo


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    need_browser()
    folder = tmp_path_factory.mktemp("page_picture")
    srv = Server(random_checkpoint(folder / "tiny.pt"), resolution=512)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser(server):
    b = Browser("picture")
    yield b
    b.close()


@pytest.fixture
def page(browser, server):
    browser.errors.clear()
    browser.page.set_viewport_size({"width": 1280, "height": 720})
    browser.page.goto(server.url)
    settle(browser.page)
    yield browser.page
    assert not browser.errors, f"errors in the page: {browser.errors}"


def open_photo(page) -> np.ndarray:
    """Open the sample photo; the canvas as drawn without masks."""
    page.get_by_role("button", name="Sample photo").click()
    settle(page)
    assert "Opened sample photo (600x400)" in page.get_by_test_id("status").text_content()
    return read_canvas(page)


def click(page, x, y, button="left"):
    """Click picture pixel (x, y); (request, response) of the prediction it caused."""
    with page.expect_response(lambda r: "/predict" in r.url) as info:
        page.mouse.click(*point_on_canvas(page, x, y, SIZE), button=button)
    settle(page)
    return request_json(info.value), info.value.json()


def drag(page, a, b):
    with page.expect_response(lambda r: "/predict" in r.url) as info:
        page.mouse.move(*point_on_canvas(page, *a, SIZE))
        page.mouse.down()
        page.mouse.move(*point_on_canvas(page, *b, SIZE), steps=6)
        page.mouse.up()
    settle(page)
    return request_json(info.value), info.value.json()


def mask_of(response, index=None) -> np.ndarray:
    m = rle_to_mask(response["masks"][response["best"] if index is None else index]["rle"])
    assert 0.01 < m.mean() < 0.99, "a trivial mask would not test the drawing"
    return m


def test_click_right_click_box_candidates_undo(page, browser):
    bare = open_photo(page)
    browser.shot("photo-opened")

    req, first = click(page, 300, 200)
    assert np.allclose(req["points"], [[300, 200]], atol=1.0) and req["labels"] == [1]
    colour = object_colours(page)[1]
    assert_drawn(page, bare, [mask_of(first)], [colour], "after a click")
    browser.shot("click")

    req, two = click(page, 120, 90, button="right")
    assert np.allclose(req["points"], [[300, 200], [120, 90]], atol=1.0) and req["labels"] == [1, 0]
    assert_drawn(page, bare, [mask_of(two)], [colour], "after a right click")

    req, boxed = drag(page, (350, 150), (500, 330))
    assert np.allclose(req["box"], [350, 150, 500, 330], atol=1.0) and len(req["points"]) == 2
    assert_drawn(page, bare, [mask_of(boxed)], [colour], "after a box")
    browser.shot("box")

    candidates = page.get_by_test_id("candidate")
    assert candidates.count() == 3
    for i, m in enumerate(boxed["masks"]):
        assert f"{m['score']:.3f}" in candidates.nth(i).text_content()
    other = (boxed["best"] + 1) % 3
    candidates.nth(other).click()
    settle(page)
    assert candidates.nth(other).get_attribute("aria-pressed") == "true"
    assert_drawn(page, bare, [mask_of(boxed, other)], [colour], "another candidate picked")
    browser.shot("candidate-picked")

    page.keyboard.press("Control+z")  # the choice
    settle(page)
    assert_drawn(page, bare, [mask_of(boxed)], [colour], "undo the choice")
    page.get_by_role("button", name="Undo").click()  # the box
    settle(page)
    assert_drawn(page, bare, [mask_of(two)], [colour], "undo the box")
    page.keyboard.press("Control+Shift+z")
    page.keyboard.press("Control+y")
    settle(page)
    assert_drawn(page, bare, [mask_of(boxed, other)], [colour], "redo twice")


def test_objects_rename_hide_delete(page, browser):
    bare = open_photo(page)
    _, one = click(page, 300, 200)
    page.keyboard.press("n")
    _, two = click(page, 520, 330)
    items = page.get_by_test_id("object-list").get_by_test_id("object-item")
    assert items.count() == 2
    colours = object_colours(page)
    assert colours[1] != colours[2]
    assert_drawn(page, bare, [mask_of(one), mask_of(two)], [colours[1], colours[2]], "two objects")
    browser.shot("two-objects")

    name = page.get_by_label("Name of object 1")
    name.fill("cup")
    name.press("Enter")
    assert page.get_by_label("Name of object 1").input_value() == "cup"
    page.get_by_label("Show Object 2").uncheck()
    settle(page)
    assert_drawn(page, bare, [mask_of(one)], [colours[1]], "object 2 hidden")
    page.get_by_role("button", name="Delete Object 2").click()
    settle(page)
    assert items.count() == 1
    page.keyboard.press("Control+z")
    settle(page)
    assert items.count() == 2 and not page.get_by_label("Show Object 2").is_checked()
    page.get_by_label("Show Object 2").check()
    settle(page)
    assert_drawn(page, bare, [mask_of(one), mask_of(two)], [colours[1], colours[2]], "delete undone, shown")


def export(page, fmt: str) -> bytes:
    page.get_by_label("Export", exact=True).select_option(fmt)
    with page.expect_download() as info:
        page.get_by_test_id("export-button").click()
    with open(info.value.path(), "rb") as f:
        return f.read()


def test_exports(page, browser):
    open_photo(page)
    _, one = click(page, 300, 200)
    page.keyboard.press("n")
    _, two = click(page, 520, 330)
    masks = {1: mask_of(one), 2: mask_of(two)}

    with zipfile.ZipFile(io.BytesIO(export(page, "masks"))) as z:
        names = sorted(z.namelist())
        assert names == ["sample_photo_01_Object_1.png", "sample_photo_02_Object_2.png"]
        for obj, name in zip((1, 2), names):
            png = np.asarray(Image.open(io.BytesIO(z.read(name))).convert("L"))
            assert png.shape == (400, 600) and set(np.unique(png)) <= {0, 255}
            assert np.array_equal(png == 255, masks[obj]), name

    coco = json.loads(export(page, "coco"))
    assert coco["images"] == [{"id": 1, "file_name": "sample photo", "width": 600, "height": 400}]
    for ann in coco["annotations"]:
        m = masks[ann["id"]]
        assert np.array_equal(rle_to_mask(ann["segmentation"]), m)
        ys, xs = np.nonzero(m)
        assert ann["area"] == int(m.sum())
        assert ann["bbox"] == [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]

    page.get_by_label("Show Object 2").uncheck()  # the cut-out: the objects shown
    cut = np.asarray(Image.open(io.BytesIO(export(page, "cutout"))))
    ys, xs = np.nonzero(masks[1])
    crop = masks[1][ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    assert cut.shape == (*crop.shape, 4)
    assert np.array_equal(cut[..., 3] > 0, crop)
    browser.shot("exported")


def test_segment_everything_hover_and_add(page, browser):
    bare = open_photo(page)
    page.locator("#everything-panel summary").click()
    page.get_by_label("Grid (points per side)").fill("4")
    page.get_by_label("Quality threshold").fill("0")
    page.get_by_label("Stability threshold").fill("0")
    with page.expect_response(lambda r: "/automatic" in r.url) as info:
        page.get_by_role("button", name="Segment everything").click()
    settle(page)
    anns = info.value.json()["annotations"]
    assert anns, "the generator found no mask with thresholds at 0"
    smallest = min(anns, key=lambda a: a["area"])
    mask = rle_to_mask(smallest["segmentation"])
    ys, xs = np.nonzero(mask)
    k = len(xs) // 2
    inside = (xs[k] + 0.5, ys[k] + 0.5)
    outside = np.argwhere(~mask)
    page.mouse.move(*point_on_canvas(page, outside[0][1] + 0.5, outside[0][0] + 0.5, SIZE))
    settle(page)
    plain = read_canvas(page)
    page.mouse.move(*point_on_canvas(page, *inside, SIZE))
    settle(page)
    hovered = read_canvas(page)
    browser.shot("everything-hover")
    changed = (plain != hovered).any(-1)
    assert changed.any() and not (changed & ~mask).any(), "hovering highlights exactly the mask under the mouse"

    page.mouse.click(*point_on_canvas(page, *inside, SIZE))
    page.keyboard.press("Escape")
    settle(page)
    assert page.get_by_test_id("object-item").count() == 1
    assert_drawn(page, bare, [mask], [object_colours(page)[1]], "a mask of segment everything, added")
    browser.shot("everything-added")


def test_unreadable_file_help_and_narrow_window(page, browser):
    page.get_by_test_id("file-input").set_input_files(
        {"name": "broken.png", "mimeType": "image/png", "buffer": b"this is not a picture"})
    page.get_by_test_id("error").filter(has_text="Cannot open broken.png").filter(has_text="not an image format").wait_for()
    browser.shot("unreadable-file")

    page.keyboard.press("?")
    help_panel = page.get_by_role("dialog")
    help_panel.wait_for(state="visible")
    shown = help_panel.text_content()
    assert "Ctrl+Z" in shown and "segment everything" in shown and "track from this frame" in shown
    browser.shot("help")
    page.keyboard.press("Escape")
    help_panel.wait_for(state="hidden")

    unlabelled = page.evaluate("""() => [...document.querySelectorAll('button, input, select')]
        .filter(el => !(el.getAttribute('aria-label') || (el.labels && [...el.labels].some(l => l.textContent.trim()))
                        || el.textContent.trim() || el.title))
        .map(el => el.outerHTML)""")
    assert unlabelled == []

    open_photo(page)
    click(page, 300, 200)
    page.set_viewport_size({"width": 420, "height": 800})
    settle(page)
    canvas = page.get_by_test_id("canvas").bounding_box()
    assert 300 <= canvas["width"] <= 420 and canvas["x"] >= 0
    assert page.get_by_test_id("object-item").count() == 1
    page.get_by_test_id("object-list").scroll_into_view_if_needed()
    assert page.get_by_test_id("object-list").is_visible()
    browser.shot("narrow")


def test_rle_decoding_in_the_page_matches_sam2kit(page):
    """The page's COCO RLE decoder (js/rle.js) on masks the drawing tests do not meet: empty,
    full, one pixel, noise, stripes, a large rectangle with a hole, and a 4100x4096 mask whose
    first run (over 2^24) needs six 5-bit groups and whose later runs have negative differences."""
    from sam2kit.image.amg import coco_encode_rle, coco_string_to_counts, mask_to_rle

    rng = np.random.default_rng(0)
    big = np.zeros((2000, 3000), bool)
    big[100:1900, 5:2990] = True
    big[700, 40] = False
    huge = np.zeros((4096, 4100), bool)
    huge[10:20, -1] = huge[30:4000, -1] = huge[4050:4052, -1] = True
    cases = [np.zeros((3, 4), bool), np.ones((5, 7), bool), np.eye(1, dtype=bool), rng.random((37, 53)) > 0.5,
             np.tile([[True, False, False]], (20, 10)), big, huge]
    rles = [coco_encode_rle(mask_to_rle(m)) for m in cases]
    first = coco_string_to_counts(rles[-1]["counts"])
    assert first[0] > 2**24 and first[5] < first[3], "the large case covers what it says"
    got = page.evaluate("""async (rles) => {
        const { decodeMask } = await import('/js/rle.js');
        return rles.map((r) => {
            const m = decodeMask(r);
            let area = 0, weighted = 0;
            m.data.forEach((v, i) => { if (v) { area += 1; weighted = (weighted + i) % 1000003; } });
            return { w: m.width, h: m.height, area, weighted, small: m.data.length < 5000 ? Array.from(m.data) : null };
        });
    }""", rles)
    for mask, g in zip(cases, got):
        flat = mask.reshape(-1)
        assert (g["h"], g["w"]) == mask.shape and g["area"] == int(flat.sum())
        assert g["weighted"] == int(np.flatnonzero(flat).sum() % 1000003)
        if g["small"] is not None:
            assert g["small"] == flat.astype(int).tolist()


def test_drop_a_picture(page):
    """A picture dropped on the page is uploaded and opened (the sample's bytes: the server
    finds their embedding in its cache)."""
    import base64
    from importlib.resources import files

    data = (files("sam2kit") / "assets" / "sample_photo.png").read_bytes()
    with page.expect_response(lambda r: r.url.endswith("/api/images")) as info:
        page.evaluate("""(b64) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], 'dropped.png', { type: 'image/png' }));
            document.getElementById('stage').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
        }""", base64.b64encode(data).decode())
    assert info.value.request.headers["content-type"].startswith("multipart/form-data")
    settle(page)
    assert "Opened dropped.png (600x400)" in page.get_by_test_id("status").text_content()
    assert page.get_by_test_id("canvas").get_attribute("width") == "600"
