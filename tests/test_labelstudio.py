"""``sam2kit serve`` as a Label Studio ML backend, tested against a real Label Studio 1.23.2 driven
only through its own API (projects, import, "Connect model", interactive annotation, predictions),
masks decoded by label_studio_sdk and compared with the Python API's for the same prompt; and
the conversions of ``sam2kit.formats.labelstudio`` against label_studio_sdk."""

from __future__ import annotations

import os

import httpx
import numpy as np
import pytest
from conftest import synthetic_image
from ls_harness import (
    PASSWORD,
    TOKEN,
    USER,
    LabelStudio,
    need_label_studio,
    sdk_decode,
    sdk_encode,
)
from PIL import Image
from serve_helpers import Server, moving_frames, random_checkpoint, write_mp4

from sam2kit import SAM2ImagePredictor, SAM2VideoPredictor
from sam2kit.formats import labelstudio as ls
from sam2kit.image.io import read_image

SERVE_TOKEN = "sam2kit-secret"
MAX_FRAMES = 4  # frames tracked per request: enough to compare boxes, within Label Studio's 100 s /predict timeout on a busy CPU
PREANNOTATE = "40,55"  # a configured prompt: a click at 40 %, 55 % of every task's picture
IMAGE_CONFIG = """<View>
  <Image name="image" value="$image" zoom="true"/>
  <BrushLabels name="mask" toName="image"><Label value="Cat"/><Label value="Dog"/></BrushLabels>
  <KeyPointLabels name="point" toName="image" smart="true"><Label value="Dog" smart="true"/></KeyPointLabels>
  <RectangleLabels name="rect" toName="image" smart="true"><Label value="Cat" smart="true"/></RectangleLabels>
</View>"""
VIDEO_CONFIG = """<View>
  <Labels name="labels" toName="video"><Label value="Ball"/></Labels>
  <Video name="video" value="$video" framerate="10"/>
  <VideoRectangle name="box" toName="video"/>
</View>"""


# ---- conversions (no server) ------------------------------------------------------------------

def masks_for_rle() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    disk = np.hypot(*np.mgrid[-40:41, -60:61]) < 30
    long = np.ones((300, 300), bool)  # 360,000 values in one run: the 2**16 pieces
    long[150, 7] = False
    return [np.zeros((3, 5), bool), np.ones((1, 1), bool), rng.random((37, 41)) > 0.5, disk, long,
            np.pad(np.ones((70, 70), bool), ((2, 9), (250, 0)))]


def test_brush_rle_is_label_studio_sdks(tmp_path):
    need_label_studio()
    masks = masks_for_rle()
    ours = [ls.mask_to_brush_rle(m) for m in masks]
    assert ours == sdk_encode(masks, tmp_path)  # byte for byte, the trailing padding included
    decoded = sdk_decode([(r, *m.shape) for r, m in zip(ours, masks)], tmp_path)
    for m, d, r in zip(masks, decoded, ours):
        assert np.array_equal(d, m)
        assert np.array_equal(ls.brush_rle_to_mask(r, *m.shape), m)
    with pytest.raises(ValueError, match="another size"):
        ls.brush_rle_to_mask(ours[3], 10, 10)


def test_percent_coordinates_are_exact():
    assert ls.percent_to_pixels(40.3, 160) == 40.3 * 160 / 100
    assert ls.pixels_to_percent(ls.percent_to_pixels(12.5, 333), 333) == pytest.approx(12.5, abs=1e-12)
    m = np.zeros((50, 200), bool)
    m[10:20, 30:90] = True
    assert ls.box_percent(m) == {"x": 15.0, "y": 20.0, "width": 30.0, "height": 20.0}
    assert ls.box_percent(np.zeros((4, 4), bool)) is None


def test_label_configs_and_prompts():
    config = ls.parse_label_config(IMAGE_CONFIG)
    assert [(o.from_name, o.kind, o.labels) for o in config.outputs] == [("mask", "brushlabels", ("Cat", "Dog"))]
    assert config.prompts == ("point", "rect") and config.objects == {"image": ("image", "image")}
    regions = [
        {"type": "keypointlabels", "to_name": "image", "original_width": 200, "original_height": 100,
         "value": {"x": 25.0, "y": 50.0, "keypointlabels": ["Dog"]}, "is_positive": True},
        {"type": "keypointlabels", "to_name": "image", "original_width": 200, "original_height": 100,
         "value": {"x": 75.5, "y": 10.0, "keypointlabels": ["Dog"]}, "is_positive": False},
        {"type": "rectanglelabels", "to_name": "image", "original_width": 200, "original_height": 100,
         "value": {"x": 10.0, "y": 20.0, "width": 30.0, "height": 40.0, "rectanglelabels": ["Cat"]}},
    ]
    p = ls.prompt_from_context(regions, config)
    assert p.points.tolist() == [[50.0, 50.0], [151.0, 10.0]] and p.labels.tolist() == [1, 0]
    assert p.box.tolist() == [20.0, 20.0, 80.0, 60.0] and p.label == "Cat" and (p.width, p.height) == (200, 100)
    assert config.outputs[0].label_for("Dog") == ["Dog"] and config.outputs[0].label_for("Bird") == ["Cat"]
    video = ls.parse_label_config(VIDEO_CONFIG)
    assert [(o.from_name, o.to_name, o.kind) for o in video.outputs] == [("box", "video", "videorectangle")]
    for bad, words in [("", "no label config"), ("<View><Image", "not valid XML"),
                       ('<View><Image name="i" value="$i"/><Choices name="c" toName="i"/></View>', "unsupported"),
                       ('<View><Text name="t" value="$t"/><BrushLabels name="b" toName="t"/></View>', "unsupported")]:
        with pytest.raises(ls.LabelConfigError, match=words):
            ls.parse_label_config(bad)
    with pytest.raises(ValueError, match="no keypoint or rectangle"):
        ls.prompt_from_context([], config)
    assert ls.parse_preannotate("auto") == ("auto", ()) and ls.parse_preannotate("50,50") == ("point", (50.0, 50.0))
    with pytest.raises(ValueError, match="in percent"):
        ls.parse_preannotate("10,10,5,5")


def test_pre_annotation_tasks_read_back_with_the_sdk(tmp_path):
    need_label_studio()
    masks = masks_for_rle()[2:4]
    task = ls.pre_annotation_task("/data/local-files/?d=a.png", masks, [0.9, 0.8], ["Cat", "Dog"])
    assert task["data"] == {"image": "/data/local-files/?d=a.png"}
    pred = task["predictions"][0]
    assert pred["score"] == pytest.approx(0.85) and [r["value"]["brushlabels"] for r in pred["result"]] == [["Cat"], ["Dog"]]
    decoded = sdk_decode([(r["value"]["rle"], r["original_height"], r["original_width"]) for r in pred["result"]],
                         tmp_path)
    assert all(np.array_equal(d, m) for d, m in zip(decoded, masks))
    poly = ls.pre_annotation_task("a.png", [masks[1]], kind="polygonlabels", tolerance=0)
    region = poly["predictions"][0]["result"][0]
    assert region["type"] == "polygonlabels" and region["value"]["closed"] is True
    from sam2kit.formats.polygons import polygons_to_mask

    h, w = masks[1].shape
    ring = np.array(region["value"]["points"]) * [w / 100, h / 100]
    assert np.array_equal(polygons_to_mask([ring], h, w), masks[1])  # tolerance 0: exact


# ---- the real Label Studio -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("label-studio")
    photo = root / "photo.png"
    Image.fromarray(synthetic_image(120, 160, 4)).save(photo)
    rotated = root / "rotated.jpg"  # stored 160x120, shown 120x160 (EXIF orientation 6: turn 90 degrees)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(synthetic_image(120, 160, 7)).save(rotated, quality=95, exif=exif)
    video = write_mp4(root / "clip.mp4", moving_frames(12))
    return {"root": root, "photo": photo, "rotated": rotated, "video": video,
            "ckpt": random_checkpoint(root / "tiny.pt")}


@pytest.fixture(scope="module")
def stack(files):
    """Label Studio and sam2kit serve (started together), and the Python API on the same weights."""
    need_label_studio()
    studio = LabelStudio(files["root"])
    server = None
    try:
        server = Server(files["ckpt"], "--token", SERVE_TOKEN, "--label-studio-url", studio.url,
                        "--label-studio-api-key", TOKEN, "--label-studio-max-frames", str(MAX_FRAMES),
                        "--label-studio-preannotate", PREANNOTATE, resolution=512)
        studio.wait()
        image = SAM2ImagePredictor.from_pretrained(str(files["ckpt"]), image_size=512)
        yield studio, server, image
    finally:
        if server is not None:
            server.stop()
        studio.stop()


BASIC = {"auth_method": "BASIC_AUTH", "basic_auth_user": "label-studio", "basic_auth_pass": SERVE_TOKEN}


@pytest.fixture(scope="module")
def image_project(stack, files):
    studio, server, _ = stack
    pid = studio.project("sam2kit pictures", IMAGE_CONFIG)
    wrong = studio.connect(pid, server.url + "/label-studio", **{**BASIC, "basic_auth_pass": "wrong"})
    assert wrong.status_code == 400 and "authentication parameters" in wrong.text
    r = studio.connect(pid, server.url + "/label-studio", **BASIC)
    assert r.status_code == 201, r.text
    ml = r.json()
    assert ml["readable_state"] == "Connected" and ml["model_version"].startswith("sam2kit-")
    tasks = {name: studio.upload(pid, files[name], kind) for name, kind in
             [("photo", "image/png"), ("rotated", "image/jpeg")]}
    return pid, ml["id"], tasks


def keypoint(x, y, w, h, positive=True, label="Dog"):
    return {"id": f"k{x}{y}", "type": "keypointlabels", "from_name": "point", "to_name": "image",
            "original_width": w, "original_height": h, "image_rotation": 0, "origin": "manual",
            "value": {"x": x, "y": y, "width": 0.6, "keypointlabels": [label]}, "is_positive": positive}


def rectangle(x, y, bw, bh, w, h, label="Cat"):
    return {"id": "r1", "type": "rectanglelabels", "from_name": "rect", "to_name": "image",
            "original_width": w, "original_height": h, "image_rotation": 0, "origin": "manual",
            "value": {"x": x, "y": y, "width": bw, "height": bh, "rotation": 0, "rectanglelabels": [label]}}


def expected(image, path, points=None, labels=None, box=None):
    """The Python API's best-of-three mask and score for the same prompt (pixels of the picture)."""
    image.set_image(read_image(path))
    masks, scores, _ = image.predict(None if points is None else np.array(points, np.float32),
                                     None if labels is None else np.array(labels),
                                     None if box is None else np.array(box, np.float32), multimask_output=True)
    best = int(np.argmax(scores))
    return masks[best].astype(bool), float(scores[best])


def answered_mask(answer, tmp_path, w, h, label):
    assert "errors" not in answer, answer
    data = answer["data"]
    (region,) = data["result"]
    assert region["type"] == "brushlabels" and region["from_name"] == "mask" and region["to_name"] == "image"
    assert region["value"]["brushlabels"] == [label] and region["value"]["format"] == "rle"
    assert (region["original_width"], region["original_height"]) == (w, h)
    assert data["model_version"].startswith("sam2kit-") and data["score"] == region["score"]
    (mask,) = sdk_decode([(region["value"]["rle"], h, w)], tmp_path)
    return mask, data["score"]


def test_interactive_masks_from_label_studio(stack, image_project, files, tmp_path):
    studio, _, image = stack
    _, ml, tasks = image_project
    task = tasks["photo"]["id"]
    w, h = 160, 120
    # one click (Label Studio sends percent of the picture)
    mask, score = answered_mask(studio.interactive(ml, task, [keypoint(40.3, 51.7, w, h)]), tmp_path, w, h, "Dog")
    want, want_score = expected(image, files["photo"], [[40.3 * w / 100, 51.7 * h / 100]], [1])
    assert mask.any() and np.array_equal(mask, want) and score == pytest.approx(want_score, abs=1e-6)
    # a rectangle, with the label the user chose
    mask, score = answered_mask(studio.interactive(ml, task, [rectangle(10, 20, 45.5, 50, w, h)]), tmp_path, w, h,
                                "Cat")
    want, want_score = expected(image, files["photo"], box=[16.0, 24.0, 16.0 + 45.5 * w / 100, 84.0])
    assert np.array_equal(mask, want) and score == pytest.approx(want_score, abs=1e-6)
    # a click and an Alt+click (negative)
    regions = [keypoint(40.3, 51.7, w, h), keypoint(70.0, 30.0, w, h, positive=False)]
    mask, _ = answered_mask(studio.interactive(ml, task, regions), tmp_path, w, h, "Dog")
    want, _ = expected(image, files["photo"], [[40.3 * w / 100, 51.7 * h / 100], [70.0 * w / 100, 30.0 * h / 100]],
                       [1, 0])
    assert np.array_equal(mask, want)
    # a camera picture turned by its EXIF orientation: Label Studio shows (and measures) it turned
    rot = tasks["rotated"]["id"]
    mask, _ = answered_mask(studio.interactive(ml, rot, [keypoint(30.0, 60.0, 120, 160)]), tmp_path, 120, 160, "Dog")
    want, _ = expected(image, files["rotated"], [[36.0, 96.0]], [1])
    assert mask.shape == (160, 120) and np.array_equal(mask, want)


def test_pre_annotation_from_label_studio(stack, image_project, files, tmp_path):
    studio, _, image = stack
    pid, _, tasks = image_project
    task = tasks["photo"]["id"]
    r = studio.api.post("/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": pid},
                        json={"selectedItems": {"all": False, "included": [task]}})
    assert r.status_code == 200, r.text
    preds = studio.api.get("/api/predictions", params={"task": task}).json()
    assert len(preds) == 1 and preds[0]["model_version"].startswith("sam2kit-")
    (region,) = preds[0]["result"]
    (mask,) = sdk_decode([(region["value"]["rle"], 120, 160)], tmp_path)
    want, score = expected(image, files["photo"], [[40 * 160 / 100, 55 * 120 / 100]], [1])
    assert np.array_equal(mask, want) and region["value"]["brushlabels"] == ["Cat"]  # (the first label)
    assert preds[0]["score"] == pytest.approx(score, abs=1e-6)


def test_a_rectangle_tracked_through_a_video(stack, files):
    studio, server, image = stack
    pid = studio.project("sam2kit video", VIDEO_CONFIG)
    r = studio.connect(pid, server.url + "/label-studio", **BASIC)
    assert r.status_code == 201, r.text
    ml = r.json()["id"]
    task = studio.upload(pid, files["video"], "video/mp4")["id"]
    key = {"frame": 3, "x": 12.5, "y": 30.0, "width": 25.0, "height": 35.0, "enabled": True, "rotation": 0,
           "time": 0.2}
    region = {"id": "track1", "type": "videorectangle", "from_name": "box", "to_name": "video", "origin": "manual",
              "value": {"framesCount": 12, "duration": 1.2, "sequence": [key], "labels": ["Ball"]}}
    answer = studio.interactive(ml, task, [region])
    assert "errors" not in answer, answer
    (result,) = answer["data"]["result"]
    assert (result["type"], result["from_name"], result["to_name"], result["id"]) == ("videorectangle", "box",
                                                                                        "video", "track1")
    value = result["value"]
    assert value["labels"] == ["Ball"] and value["framesCount"] == 12
    seq = value["sequence"]
    assert seq[0] == key and [k["frame"] for k in seq] == list(range(3, 3 + MAX_FRAMES))
    # the Python API: the same box on frame index 2, tracked through MAX_FRAMES frames
    video = SAM2VideoPredictor(image.model)
    state = video.init_state(str(files["video"]))
    video.add_new_points_or_box(state, 2, 1, box=np.array([16.0, 28.8, 48.0, 62.4], np.float32))
    boxes = {i: ls.box_percent((m[0, 0] > 0).cpu().numpy())
             for i, _, m in video.propagate_in_video(state, 2, MAX_FRAMES - 1)}
    for k in seq[1:]:
        want = boxes[k["frame"] - 1]
        assert want is not None and {c: k[c] for c in ("x", "y", "width", "height")} == want
        assert k["enabled"] and k["time"] == pytest.approx((k["frame"] - 1) / 10)


def test_what_label_studio_shows_for_a_config_sam2kit_cannot_answer(stack):
    studio, server, _ = stack
    pid = studio.project("sam2kit unsupported", '<View><Image name="image" value="$image"/>'
                                                '<Choices name="c" toName="image"><Choice value="a"/></Choices></View>')
    r = studio.connect(pid, server.url + "/label-studio", **BASIC)
    assert r.status_code == 400
    assert "unsupported-label-config" in r.text and "BrushLabels" in r.text  # our reason, in its dialog


def test_protocol_errors_are_clear_never_500(stack, files):
    _, server, _ = stack
    auth = httpx.BasicAuth("x", SERVE_TOKEN)
    with httpx.Client(base_url=server.url + "/label-studio", auth=auth, timeout=60) as c:
        assert httpx.get(server.url + "/label-studio/health").status_code == 401
        assert c.get("/health").json()["status"] == "UP"
        assert c.post("/setup", json={"project": "1.2", "schema": IMAGE_CONFIG}).json()["model_version"]
        r = c.post("/setup", content=b"{nope", headers={"content-type": "application/json"})
        assert r.status_code == 307 and "not valid JSON" in r.json()["error"]
        r = c.post("/setup", json={"project": "1.2", "schema": "<View/>"}, follow_redirects=True)
        assert r.status_code == 422 and "unsupported label config" in r.json()["error"]
        body = {"tasks": [{"id": 1, "data": {"image": "s3://bucket/a.png"}}], "label_config": IMAGE_CONFIG,
                "params": {"context": {"result": [keypoint(50, 50, 160, 120)]}}}
        r = c.post("/predict", json=body)
        assert r.status_code == 307 and "cloud storage" in r.json()["error"]
        body["tasks"][0]["data"] = {"picture": "x"}
        assert "no data field 'image'" in c.post("/predict", json=body).json()["error"]
        assert "needs the task" in c.post("/predict", json={**body, "tasks": []}).json()["error"]
        body["params"]["context"]["result"] = [{"type": "keypointlabels", "value": {"x": 5}}]
        assert "original_width" in c.post("/predict", json=body).json()["error"]
        assert c.post("/webhook", json={"action": "PROJECT_UPDATED"}).json() == {"status": "Unknown event"}
        r = c.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 1}})
        assert r.status_code == 201 and r.json()["result"]["trained"] is False


def test_label_studio_shows_the_mask(stack, image_project, files, tmp_path):
    """The labeling page in Chromium, logged in as a person would, showing sam2kit's mask for one
    click (saved as the task's prediction); the screenshot goes to out/page-tests/label-studio/ and,
    with SAM2KIT_LABEL_STUDIO_SCREENSHOT=PATH, reduced for the docs to PATH."""
    from page_harness import Browser

    studio, _, image = stack
    pid, ml, _ = image_project
    task = studio.upload(pid, files["photo"], "image/png")["id"]
    # (random weights: take a click whose mask is an object-sized part of the picture, to see it)
    image.set_image(read_image(files["photo"]))
    grid = [(x, y) for y in (30, 50, 70) for x in (20, 35, 50, 65, 80)]

    def area(x, y):  # of the mask sam2kit answers (the best-scored of three)
        masks, scores, _ = image.predict(np.array([[x * 160 / 100, y * 120 / 100]], np.float32), np.array([1]))
        return float(masks[int(np.argmax(scores))].mean())

    x, y = min(grid, key=lambda c: abs(area(*c) - 0.2))
    answer = studio.interactive(ml, task, [keypoint(x, y, 160, 120)])
    r = studio.api.post("/api/predictions", json={"task": task, **answer["data"]})
    assert r.status_code == 201, r.text
    browser = Browser("label-studio")
    try:
        page = browser.page
        page.set_viewport_size({"width": 1280, "height": 800})
        page.goto(studio.url + "/user/login/")
        page.fill('input[name="email"]', USER)
        page.fill('input[name="password"]', PASSWORD)
        page.click('button[type="submit"]')
        page.wait_for_url(lambda url: "/user/login" not in url, timeout=60_000)
        page.goto(f"{studio.url}/projects/{pid}/data?task={task}")
        page.get_by_text("Dog").first.wait_for(timeout=60_000)  # the region's label in the regions panel
        page.wait_for_timeout(3000)
        shot = browser.shots / "labeling.png"
        page.screenshot(path=str(shot))
    finally:
        browser.close()
    target = os.environ.get("SAM2KIT_LABEL_STUDIO_SCREENSHOT")
    if target:
        img = Image.open(shot).convert("RGB")
        img = img.resize((960, round(img.height * 960 / img.width)), Image.LANCZOS)
        img = img.quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        img.save(target, optimize=True)


def test_polygons_from_label_studio(stack, files):
    studio, server, image = stack
    config = IMAGE_CONFIG.replace("BrushLabels", "PolygonLabels")
    pid = studio.project("sam2kit polygons", config)
    r = studio.connect(pid, server.url + "/label-studio", **BASIC)
    assert r.status_code == 201, r.text
    task = studio.upload(pid, files["photo"], "image/png")["id"]
    answer = studio.interactive(r.json()["id"], task, [keypoint(40.3, 51.7, 160, 120)])
    assert "errors" not in answer, answer
    from sam2kit.formats.polygons import mask_to_polygons, polygons_to_mask

    want, _ = expected(image, files["photo"], [[40.3 * 160 / 100, 51.7 * 120 / 100]], [1])
    regions = answer["data"]["result"]
    assert len(regions) == len(mask_to_polygons(want)) > 0  # one region per connected part
    assert all(g["type"] == "polygonlabels" and g["value"]["polygonlabels"] == ["Dog"] for g in regions)
    rings = [np.array(g["value"]["points"]) * [160 / 100, 120 / 100] for g in regions]
    drawn = polygons_to_mask(rings, 120, 160)
    iou = (drawn & want).sum() / (drawn | want).sum()
    assert iou > 0.9  # simplified by --polygon-tolerance 1 px (exactness at 0: the unit test above)


def test_personal_access_tokens_are_exchanged(stack, image_project, files, tmp_path):
    """Label Studio 1.2x's default key, a personal access token (a JWT refresh token), is exchanged
    at /api/token/refresh/ and the file fetched with the access token; a wrong key is named."""
    import asyncio

    from sam2kit.server.fetch import Fetcher
    from sam2kit.server.media import BadInput
    from sam2kit.server.settings import ServeSettings

    studio = stack[0]
    r = studio.api.post("/api/token/")
    assert r.status_code in (200, 201), r.text
    url = image_project[2]["photo"]["data"]["image"]
    assert url.startswith("/data/upload/")
    fetcher = Fetcher(ServeSettings(label_studio_url=studio.url, label_studio_api_key=r.json()["token"]), tmp_path)
    path, _ = asyncio.run(fetcher.fetch(url))
    assert path.read_bytes() == files["photo"].read_bytes() and fetcher._access is not None
    wrong = Fetcher(ServeSettings(label_studio_url=studio.url, label_studio_api_key="not-a-key"), tmp_path)
    with pytest.raises(BadInput, match=r"refused sam2kit \(401\)"):
        asyncio.run(wrong.fetch(url))
