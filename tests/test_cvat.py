"""The CVAT protocol of ``sam2kit serve`` (``/cvat/interactor``, ``/cvat/tracker``) against the
real server. CVAT's own server cannot run here, so the requests are built as CVAT builds them:
``LambdaFunction.invoke`` in cvat-ai/cvat ``cvat/apps/lambda_manager/views.py`` sends an
interactor ``{"image": base64 frame, "pos_points": [[x, y], ...], "neg_points": [...],
"obj_bbox": pos_points[0:2] if startswith_box else None}`` and a tracker ``{"image",
"shapes": data.get("shapes", []), "states": data.get("states", [])}``; the answers are read as
CVAT's functions give them (``serverless/pytorch/facebookresearch/sam2/nuclio/main.py``:
``{"mask": mask.tolist()}``; the trackers under ``serverless/``: ``{"shapes", "states"}``, a null
state starting a track), mask shapes decoded with cvat-sdk's ``cvat_sdk.masks.decode_mask``."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image

from sam2kit.formats.cvat import encode_mask
from sam2kit.image.predictor import SAM2ImagePredictor
from sam2kit.video.predictor import SAM2VideoPredictor
from serve_helpers import Server, moving_frames, random_checkpoint

TOKEN = "cvat-test-token"
N = 5


def b64png(frame: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cvat")
    frames = moving_frames(N)
    (root / "frames").mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(root / "frames" / f"{i:05d}.png")
    return {"root": root, "frames": frames, "ckpt": random_checkpoint(root / "t.pt")}


@pytest.fixture(scope="module")
def api(files):
    srv = Server(files["ckpt"], "--token", TOKEN, "--cvat-trackers", "3")
    try:
        with httpx.Client(base_url=srv.url, timeout=120, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
            yield c
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def local(files):
    image = SAM2ImagePredictor.from_pretrained(str(files["ckpt"]), image_size=256)
    return image, SAM2VideoPredictor(image.model)


def interactor_payload(frame, pos, neg, startswith_box=False):
    """The payload views.py builds: with startswith_box the first two pos_points are the box."""
    return {"image": b64png(frame), "pos_points": pos[2:] if startswith_box else pos, "neg_points": neg,
            "obj_bbox": pos[0:2] if startswith_box else None}


def test_interactor_mask_equals_the_image_predictor(api, files, local):
    frame, predictor = files["frames"][0], local[0]
    predictor.set_image(frame)
    cases = [([[30, 48]], [], False), ([[30, 48], [95, 30]], [[60, 80]], False),
             ([[10, 25], [60, 75], [30, 48]], [], True)]
    for pos, neg, with_box in cases:
        r = api.post("/cvat/interactor", json=interactor_payload(frame, pos, neg, with_box))
        assert r.status_code == 200, r.text
        got = np.array(r.json()["mask"])
        assert got.shape == (96, 128) and set(np.unique(got)) <= {0, 1}
        p = pos[2:] if with_box else pos
        points = np.array(p + neg, dtype=np.float32)
        labels = np.array([1] * len(p) + [0] * len(neg))
        box = np.array(pos[0] + pos[1], dtype=np.float32) if with_box else None
        masks, scores, _ = predictor.predict(points, labels, box, multimask_output=True)
        best = masks[np.argsort(scores)[::-1][0]]  # as CVAT's SAM 2.0 handler picks it
        assert np.array_equal(got.astype(bool), best > 0.5)


def track(api, frames, shape):
    """CVAT's tracker calls: frame 0 with a null state, then each next frame with the last states."""
    r = api.post("/cvat/tracker", json={"image": b64png(frames[0]), "shapes": [shape], "states": [None]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["shapes"] == [shape] and len(body["states"]) == 1
    assert len(str(body["states"][0])) < 100  # a key into the server's table, not the model's memory
    out = []
    for f in frames[1:]:
        r = api.post("/cvat/tracker", json={"image": b64png(f), "shapes": body["shapes"], "states": body["states"]})
        assert r.status_code == 200, r.text
        body = r.json()
        out.append(body["shapes"][0])
    return out, body["states"]


def test_tracker_masks_equal_the_video_predictor(api, files, local):
    from cvat_sdk.masks import decode_mask

    frames, predictor = files["frames"], local[1]
    first = np.zeros((96, 128), bool)
    yy, xx = np.mgrid[:96, :128]
    first[((xx - 30) ** 2 + (yy - 48) ** 2) < 250] = True
    shapes, _ = track(api, frames, {"type": "mask", "points": encode_mask(first)})
    state = predictor.init_state(str(files["root"] / "frames"))
    predictor.add_new_mask(state, 0, 1, first)
    want = {f: (m[0, 0] > 0).numpy() for f, _, m in predictor.propagate_in_video(state, progress=False)}
    for f, shape in enumerate(shapes, start=1):
        assert shape["type"] == "mask"
        got = decode_mask(shape["points"], image_width=128, image_height=96)
        assert np.array_equal(got, want[f]) and got.any()


def test_tracker_rectangles_as_cvat_nuclio_trackers(api, files, local):
    frames, predictor = files["frames"], local[1]
    shapes, states = track(api, frames, [78.0, 15.0, 112.0, 46.0])
    state = predictor.init_state(str(files["root"] / "frames"))
    predictor.add_new_points_or_box(state, 0, 1, box=[78.0, 15.0, 112.0, 46.0])
    for f, _, m in predictor.propagate_in_video(state, progress=False):
        if f == 0:
            continue
        mask = (m[0, 0] > 0).numpy()
        ys, xs = np.nonzero(mask)
        assert shapes[f - 1] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    # the same state again: CVAT replaying an old answer is refused, not tracked twice
    r = api.post("/cvat/tracker", json={"image": b64png(frames[0]), "shapes": [shapes[-1]],
                                        "states": [{**states[0], "frames": 1}]})
    assert r.status_code == 409 and "last answer" in r.json()["error"]


def error(r, status, *words):
    assert r.status_code == status, r.text
    msg = r.json()["error"]
    for w in words:
        assert w in msg, msg
    return msg


def test_bad_requests_get_4xx_with_a_message(api, files):
    img = b64png(files["frames"][0])
    error(httpx.post(f"{api.base_url}/cvat/interactor", json={"image": img, "pos_points": [[1, 1]]}), 401, "token")
    error(api.post("/cvat/interactor", json={"image": "not base64!", "pos_points": [[1, 1]], "neg_points": []}),
          422, "base64")
    error(api.post("/cvat/interactor", json={"image": base64.b64encode(b"hello").decode(), "pos_points": [[1, 1]]}),
          415, "not an image")
    error(api.post("/cvat/interactor", json={"image": img, "pos_points": [[500, 10]], "neg_points": []}),
          422, "outside", "128x96")
    error(api.post("/cvat/interactor", json={"image": img, "pos_points": [], "neg_points": [[3, 3]]}), 422, "positive")
    error(api.post("/cvat/interactor", json={"image": img, "pos_points": "x"}), 422)
    error(api.post("/cvat/interactor", content=b"{", headers={"content-type": "application/json"}), 400, "JSON")
    error(api.post("/cvat/tracker", json={"image": img, "shapes": [[1, 2, 3, 4]], "states": [{"tracker": "gone", "frames": 3}]}),
          410, "start tracking")
    error(api.post("/cvat/tracker", json={"image": img, "shapes": [{"type": "ellipse", "points": [1, 2]}], "states": [None]}),
          422, "type")
    error(api.post("/cvat/tracker", json={"image": img, "shapes": [[5, 5, 2, 2]], "states": [None]}), 422, "x1 < x2")
    error(api.post("/cvat/tracker", json={"image": img, "shapes": [{"type": "mask", "points": [9, 0, 0, 1, 1]}],
                                          "states": [None]}), 422, "add up")
    error(api.post("/cvat/tracker", json={"image": img, "shapes": [], "states": [None]}), 422, "one state")
    r = api.post("/cvat/tracker", json={"image": img, "shapes": [[78, 15, 112, 46]], "states": [None]})
    small = b64png(files["frames"][1][:48, :64])
    error(api.post("/cvat/tracker", json={"image": small, "shapes": r.json()["shapes"], "states": r.json()["states"]}),
          422, "64x48", "128x96")


def test_tracks_are_bounded(api, files):
    img = b64png(files["frames"][0])
    states = [api.post("/cvat/tracker", json={"image": img, "shapes": [[78, 15, 112, 46]], "states": [None]}).json()["states"][0]
              for _ in range(4)]  # the server keeps 3 (--cvat-trackers 3): the oldest is dropped
    nxt = b64png(files["frames"][1])
    error(api.post("/cvat/tracker", json={"image": nxt, "shapes": [[78, 15, 112, 46]], "states": [states[0]]}),
          410, "no longer on the server")
    r = api.post("/cvat/tracker", json={"image": nxt, "shapes": [[78, 15, 112, 46]], "states": [states[3]]})
    assert r.status_code == 200, r.text
