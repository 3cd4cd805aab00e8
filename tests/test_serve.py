"""``sam2kit serve`` over real HTTP: every endpoint, results equal to the Python API's, the
tracking stream (incremental, cancelled by disconnect or DELETE), hostile input, shutdown."""

from __future__ import annotations

import io
import json
import os
import threading
import time
import zipfile

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import synthetic_image
from sam2kit import SAM2AutomaticMaskGenerator, SAM2ImagePredictor, SAM2VideoPredictor
from sam2kit.image.amg import rle_to_mask
from sam2kit.image.automatic import coco_annotations
from serve_helpers import Server, moving_frames, random_checkpoint, write_mp4

N_FRAMES = 16


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    media = root / "media"
    (media / "frames").mkdir(parents=True)
    photo = synthetic_image(120, 160, 4)
    Image.fromarray(photo).save(media / "photo.png")
    frames = moving_frames(N_FRAMES)
    for i, f in enumerate(frames[:6]):
        Image.fromarray(f).save(media / "frames" / f"{i:05d}.png")
    video = write_mp4(media / "clip.mp4", frames)
    long = write_mp4(root / "long.mp4", moving_frames(64, 48, 64))  # tracked in part only
    outside = root / "secret.png"
    Image.fromarray(photo).save(outside)
    os.symlink(outside, media / "link.png")
    return {"root": root, "media": media, "photo": photo, "video": video, "long": long,
            "ckpt": random_checkpoint(root / "t.pt"), "work": root / "work"}


@pytest.fixture(scope="module")
def server(files):
    files["work"].mkdir()
    srv = Server(files["ckpt"], "--media-root", str(files["media"]), "--work-dir", str(files["work"]))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def api(server):
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def local(files):
    """The Python API on the same weights, for the answers the server must give."""
    image = SAM2ImagePredictor.from_pretrained(str(files["ckpt"]), image_size=256)
    # (the server keeps corrections on tracked frames as conditioning frames: see below)
    return image, SAM2VideoPredictor(image.model, add_all_frames_to_correct_as_cond=True)


def decode(rle: dict) -> np.ndarray:
    return rle_to_mask(rle)


def error(r: httpx.Response, status: int, *words: str) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    message = r.json()["error"]
    for w in words:
        assert w in message, message
    return message


def upload_photo(api, files) -> dict:
    buf = io.BytesIO()
    Image.fromarray(files["photo"]).save(buf, format="PNG")
    r = api.post("/api/images", files={"file": ("photo.png", buf.getvalue(), "image/png")})
    assert r.status_code == 201, r.text
    return r.json()


# ---- server and pictures -----------------------------------------------------------------

def test_health_and_docs(api):
    h = api.get("/api/health").json()
    assert h["status"] == "ok" and h["model"] == "sam2-hiera-tiny" and h["image_size"] == 256
    assert h["device"] == "cpu" and h["limits"]["max_sessions"] == 8 and h["limits"]["token"] is False
    assert h["precision"] == "fp32" and h["backend"] == "torch"
    assert api.get("/docs").status_code == 200
    schema = api.get("/openapi.json").json()
    assert "/api/videos/{session_id}/propagate" in schema["paths"]
    assert "max_upload_mb" in schema["info"]["description"]  # the settings, in the schema


def test_predict_equals_the_python_api_and_pictures_are_encoded_once(api, files, local):
    info = upload_photo(api, files)
    assert (info["width"], info["height"], info["cached"]) == (160, 120, False)
    again = upload_photo(api, files)
    assert again == {**info, "cached": True}  # same content, same id, no second encoding
    predictor = local[0]
    predictor.set_image(files["photo"])
    cases = [dict(points=[[40, 60]], labels=[1]), dict(points=[[40, 60], [100, 30]], labels=[1, 0]),
             dict(box=[20, 10, 120, 90]), dict(points=[[70, 50]], labels=[1], box=[20, 10, 120, 90], multimask=False)]
    for case in cases:
        r = api.post(f"/api/images/{info['image_id']}/predict", json=case)
        assert r.status_code == 200, r.text
        body = r.json()
        masks, scores, logits = predictor.predict(
            np.array(case["points"]) if "points" in case else None, np.array(case["labels"]) if "labels" in case else None,
            np.array(case["box"]) if "box" in case else None, multimask_output=case.get("multimask", True))
        assert len(body["masks"]) == len(scores) and body["best"] == int(np.argmax(scores))
        for m, mask, score in zip(body["masks"], masks, scores):
            got = decode(m["rle"])
            assert got.shape == (120, 160) and np.array_equal(got, mask.astype(bool))
            assert abs(m["score"] - float(score)) < 1e-5 and m["area"] == int(mask.sum())
            if m["area"]:
                ys, xs = np.nonzero(mask)
                assert m["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    # refining with a previous mask's logits, as mask_input
    first = api.post(f"/api/images/{info['image_id']}/predict", json=cases[0]).json()
    r = api.post(f"/api/images/{info['image_id']}/predict",
                 json={"points": [[40, 60], [60, 80]], "labels": [1, 0], "mask_input": first["logits_id"],
                       "multimask": False}).json()
    _, _, first_logits = predictor.predict(np.array([[40, 60]]), np.array([1]))
    best = first_logits[int(np.argmax(predictor.predict(np.array([[40, 60]]), np.array([1]))[1]))]
    masks, scores, _ = predictor.predict(np.array([[40, 60], [60, 80]]), np.array([1, 0]), mask_input=best[None],
                                         multimask_output=False)
    assert np.array_equal(decode(r["masks"][0]["rle"]), masks[0].astype(bool))


def test_picture_and_automatic_masks(api, files, local):
    info = upload_photo(api, files)
    r = api.get(f"/api/images/{info['image_id']}/picture")
    assert r.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(r.content)).size == (160, 120)
    params = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    r = api.post(f"/api/images/{info['image_id']}/automatic", json=params)
    assert r.status_code == 200, r.text
    gen = SAM2AutomaticMaskGenerator(local[0].model, output_mode="uncompressed_rle", **params)
    expected = coco_annotations(gen.generate(files["photo"]))
    got = r.json()["annotations"]
    assert len(got) == len(expected) > 0
    for a, b in zip(got, expected):
        assert a["segmentation"] == b["segmentation"] and a["bbox"] == b["bbox"] and a["area"] == b["area"]


def test_pictures_from_the_media_root_and_hostile_paths(api, files):
    r = api.post("/api/images", json={"path": "photo.png"})
    assert r.status_code == 201 and r.json()["cached"]  # same content as the upload above
    error(api.post("/api/images", json={"path": "../secret.png"}), 400, "out of the media root")
    error(api.post("/api/images", json={"path": str(files["root"] / "secret.png")}), 400, "absolute")
    error(api.post("/api/images", json={"path": "link.png"}), 400, "symbolic link")
    error(api.post("/api/images", json={"path": "missing.png"}), 404, "no file")
    error(api.post("/api/images", json={"path": "clip.mp4"}), 415, "not an image")
    error(api.post("/api/images", json={"path": "photo.png", "sample": "photo"}), 422, "exactly one")


def test_hostile_pictures_and_prompts(api, files):
    info = upload_photo(api, files)
    url = f"/api/images/{info['image_id']}/predict"
    error(api.post("/api/images", files={"file": ("x.png", b"definitely not a picture", "image/png")}), 415,
          "not an image format")
    png = io.BytesIO()
    Image.fromarray(files["photo"]).save(png, format="PNG")
    error(api.post("/api/images", files={"file": ("cut.png", png.getvalue()[:300], "image/png")}), 422, "damaged")
    error(api.post("/api/images", content=b"abc", headers={"content-type": "text/plain"}), 415, "multipart")
    error(api.post(url, content=b'{"points": [[1, 2]', headers={"content-type": "application/json"}), 400, "JSON")
    error(api.post(url, content=b'{"points": [[NaN, 2]], "labels": [1]}', headers={"content-type": "application/json"}),
          422, "finite")
    error(api.post(url, content=b'{"points": [[1e400, 2]], "labels": [1]}', headers={"content-type": "application/json"}),
          422, "finite")
    error(api.post(url, json={"points": [[500, 2]], "labels": [1]}), 422, "outside the 160x120 picture")
    error(api.post(url, json={"points": [[5, 2]], "labels": [3]}), 422, "labels")
    error(api.post(url, json={"points": [[5, 2]], "labels": []}), 422, "one label per point")
    error(api.post(url, json={"box": [50, 50, 10, 10]}), 422, "reversed")
    error(api.post(url, json={"mask_input": "nope"}), 404, "no logits")
    error(api.post(url, json={"points": [[5, 2]], "labels": [1], "extra": 1}), 422, "extra")
    error(api.post("/api/images/unknown/predict", json={"box": [1, 1, 5, 5]}), 404, "no image 'unknown'")
    error(api.get("/api/nothing"), 404, "no such endpoint")
    assert api.delete(f"/api/images/{info['image_id']}").status_code == 204
    error(api.post(url, json={"box": [1, 1, 5, 5]}), 404, "expired (deleted)")
    assert api.get("/api/health").json()["status"] == "ok"  # still serving


# ---- videos ----------------------------------------------------------------------------------

def open_clip(api, files, name: str = "video") -> dict:
    with open(files[name], "rb") as f:
        r = api.post("/api/videos", files={"file": ("clip.mp4", f, "video/mp4")})
    assert r.status_code == 201, r.text
    return r.json()


def stream(api, sid: str, **body):
    with api.stream("POST", f"/api/videos/{sid}/propagate", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in r.iter_lines() if line]


def as_masks(line: dict) -> dict:
    return {o["object"]: decode(o["rle"]) for o in line["objects"]}


def test_video_session_equals_the_python_api(api, files, local):
    info = open_clip(api, files)
    assert (info["num_frames"], info["width"], info["height"], info["fps"]) == (N_FRAMES, 128, 96, 10.0)
    sid = info["session_id"]
    predictor = local[1]
    state = predictor.init_state(str(files["video"]))
    prompts = [dict(frame=0, object=1, points=[[30, 48]], labels=[1]),
               dict(frame=3, object=2, box=[80, 15, 112, 50])]
    for p in prompts:
        got = api.post(f"/api/videos/{sid}/prompts", json=p).json()
        _, ids, logits = predictor.add_new_points_or_box(state, p["frame"], p["object"], points=p.get("points"),
                                                         labels=p.get("labels"), box=p.get("box"))
        assert [o["object"] for o in got["objects"]] == ids and got["frame"] == p["frame"]
        for o, lg in zip(got["objects"], logits):
            assert np.array_equal(decode(o["rle"]), (lg[0] > 0).numpy())
    lines = stream(api, sid)
    expected = {f: (ids, m) for f, ids, m in predictor.propagate_in_video(state, progress=False)}
    assert lines[-1] == {"done": True, "frames": N_FRAMES} and len(lines) == N_FRAMES + 1
    for line in lines[:-1]:
        ids, m = expected[line["frame"]]
        assert list(as_masks(line)) == ids
        for k, mask in enumerate(as_masks(line).values()):
            assert np.array_equal(mask, (m[k, 0] > 0).numpy())
        scores = state.object_scores(line["frame"])
        assert [o["object_score"] for o in line["objects"]] == pytest.approx(scores, abs=1e-5)
    # a correction, then tracking again backward from it: still what the Python API gives
    corr = dict(frame=10, object=1, points=[[60, 20]], labels=[0], clear_old=False)
    api.post(f"/api/videos/{sid}/prompts", json=corr)
    predictor.add_new_points_or_box(state, 10, 1, points=[[60, 20]], labels=[0], clear_old_points=False)
    lines = stream(api, sid, start_frame=10, reverse=True, max_frames=6)
    expected = {f: m for f, _, m in predictor.propagate_in_video(state, start_frame_idx=10, reverse=True,
                                                                  max_frame_num_to_track=5, progress=False)}
    assert [ln["frame"] for ln in lines[:-1]] == [10, 9, 8, 7, 6, 5]
    for line in lines[:-1]:
        for k, mask in enumerate(as_masks(line).values()):
            assert np.array_equal(mask, (expected[line["frame"]][k, 0] > 0).numpy())
    # what the server keeps for a frame is what it streamed
    kept = api.get(f"/api/videos/{sid}/frames/7/masks").json()
    assert kept == lines[3]
    exports(api, sid, lines)
    state.close()
    assert api.post(f"/api/videos/{sid}/reset").json() == {"objects": []}
    assert api.get(f"/api/videos/{sid}").json()["tracked_frames"] == 0
    assert api.delete(f"/api/videos/{sid}").status_code == 204
    error(api.get(f"/api/videos/{sid}"), 404, "expired (deleted)")


def exports(api, sid: str, lines: list[dict]) -> None:
    """The same files `sam2kit video` writes: palette PNGs, per-object PNGs, an mp4."""
    r = api.get(f"/api/videos/{sid}/export", params={"format": "davis"})
    assert r.headers["content-type"] == "application/zip"
    z = zipfile.ZipFile(io.BytesIO(r.content))
    assert len(z.namelist()) == N_FRAMES and "00007.png" in z.namelist()
    palette = Image.open(io.BytesIO(z.read("00007.png")))
    assert palette.mode == "P"
    labels = np.array(palette)
    masks = list(as_masks(lines[3]).values())
    assert np.array_equal(labels > 0, np.any(masks, axis=0))
    for k, mask in enumerate(masks):  # (where objects overlap, the higher logit's object wins)
        assert mask[labels == k + 1].all()
    z = zipfile.ZipFile(io.BytesIO(api.get(f"/api/videos/{sid}/export", params={"format": "masks"}).content))
    assert sorted({n.split("/")[0] for n in z.namelist()}) == ["1", "2"]
    assert np.array_equal(np.array(Image.open(io.BytesIO(z.read("2/00007.png")))) > 0, as_masks(lines[3])[2])
    r = api.get(f"/api/videos/{sid}/export", params={"format": "mp4"})
    assert r.headers["content-type"] == "video/mp4"
    import av

    with av.open(io.BytesIO(r.content)) as c:
        assert sum(1 for _ in c.decode(video=0)) == N_FRAMES
    error(api.get(f"/api/videos/{sid}/export", params={"format": "gif"}), 422, "format")


def test_a_correction_on_a_tracked_frame_is_kept_by_the_next_tracking(api, files):
    """The server's video predictor makes a corrected frame a conditioning frame (as SAM 2 is
    trained for corrections); with the reference predictor's default the next tracking through
    that frame would compute it again and drop the correction."""
    sid = open_clip(api, files)["session_id"]
    api.post(f"/api/videos/{sid}/prompts", json=dict(frame=0, object=1, points=[[30, 48]], labels=[1]))
    first = {ln["frame"]: ln["objects"] for ln in stream(api, sid, max_frames=4)[:-1]}
    corrected = api.post(f"/api/videos/{sid}/prompts", json=dict(frame=2, object=1, points=[[100, 80]],
                                                                 labels=[0], clear_old=True)).json()["objects"]
    assert corrected != first[2]
    second = {ln["frame"]: ln["objects"] for ln in stream(api, sid, start_frame=0, max_frames=4)[:-1]}
    assert second[2] == corrected and second[3] != first[3]  # kept, and tracked on from
    assert api.get(f"/api/videos/{sid}/frames/2/masks").json()["objects"] == corrected
    api.delete(f"/api/videos/{sid}")


def test_the_stream_is_incremental_and_a_disconnect_cancels_it(api, files):
    """(A 64-frame clip: tracking it takes long enough to be interrupted.)"""
    sid = open_clip(api, files, "long")["session_id"]
    api.post(f"/api/videos/{sid}/prompts", json=dict(frame=0, object=1, points=[[20, 24]], labels=[1]))
    with api.stream("POST", f"/api/videos/{sid}/propagate", json={}) as r:
        lines = r.iter_lines()
        first = json.loads(next(lines))
        state = api.get(f"/api/videos/{sid}").json()
        assert first["frame"] == 0 and state["tracked_frames"] < 64
        assert state["propagating"], list(lines)[-3:]
        error(api.post(f"/api/videos/{sid}/propagate", json={}), 409, "being tracked")
        error(api.post(f"/api/videos/{sid}/prompts", json=dict(frame=1, object=1, points=[[3, 4]], labels=[1])),
              409, "cancel")
    # the client went away: tracking stops soon, short of the end
    deadline = time.monotonic() + 60
    while api.get(f"/api/videos/{sid}").json()["propagating"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert api.get(f"/api/videos/{sid}").json()["tracked_frames"] < 64
    # and the session works on
    assert stream(api, sid, max_frames=3)[-1] == {"done": True, "frames": 3}
    # cancelled from elsewhere
    got = []
    t = threading.Thread(target=lambda: got.extend(stream(api, sid)))
    t.start()
    deadline = time.monotonic() + 30
    while not api.get(f"/api/videos/{sid}").json()["propagating"]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert api.delete(f"/api/videos/{sid}/propagation").json() == {"cancelled": True}
    t.join(60)
    assert got[-1]["done"] and got[-1]["cancelled"] and got[-1]["frames"] == len(got) - 1 < 64
    api.delete(f"/api/videos/{sid}")


def test_videos_from_the_media_root_and_hostile_videos(api, files):
    r = api.post("/api/videos", json={"path": "frames"})
    assert r.status_code == 201 and r.json()["num_frames"] == 6 and r.json()["fps"] is None
    sid = r.json()["session_id"]
    url = f"/api/videos/{sid}/prompts"
    error(api.post(url, json=dict(frame=6, object=1, points=[[3, 4]], labels=[1])), 422, "past the end")
    error(api.post(url, json=dict(frame=0, object=1, points=[[300, 4]], labels=[1])), 422, "outside")
    error(api.post(url, json=dict(frame=0, object=1, points=[[3, 4]], labels=[1], box=[1, 1, 5, 5],
                                 mask={"size": [96, 128], "counts": "0"})), 422, "alone")
    error(api.post(url, json=dict(frame=0, object=1, mask={"size": [10, 10], "counts": "0"})), 422, "frame's size")
    error(api.post(url, json=dict(frame=0, object=1, mask={"size": [96, 128], "counts": "52"})), 422, "malformed")
    error(api.post(f"/api/videos/{sid}/propagate", json={}), 409, "no object")
    mask = np.zeros((96, 128), bool)
    mask[30:60, 20:50] = True
    from sam2kit.image.amg import coco_encode_rle, mask_to_rle

    got = api.post(url, json=dict(frame=0, object=4, mask=coco_encode_rle(mask_to_rle(mask)))).json()
    assert np.array_equal(decode(got["objects"][0]["rle"]), mask)
    error(api.delete(f"/api/videos/{sid}/objects/9"), 404, "no object 9")
    assert api.delete(f"/api/videos/{sid}/objects/4").json() == {"objects": []}
    error(api.get(f"/api/videos/{sid}/frames/99"), 404, "outside the video")
    assert api.get(f"/api/videos/{sid}/frames/2").headers["content-type"] == "image/jpeg"
    error(api.get(f"/api/videos/{sid}/export"), 409, "nothing to export")
    error(api.post("/api/videos", files={"file": ("x.mp4", b"\x00" * 5000, "video/mp4")}), 415, "cannot read this video")
    error(api.post("/api/videos", json={"path": "photo.png"}), 415, "single picture")
    data = files["video"].read_bytes()
    r = api.post("/api/videos", files={"file": ("cut.mp4", data[: len(data) // 2], "video/mp4")})
    assert r.status_code in (201, 415, 422), r.text  # a cut file: refused, or tracked until the cut
    if r.status_code == 201:
        cut = r.json()["session_id"]
        api.post(f"/api/videos/{cut}/prompts", json=dict(frame=0, object=1, points=[[30, 48]], labels=[1]))
        lines = stream(api, cut)
        assert lines[-1].get("done") or "error" in lines[-1]
    error(api.get("/api/videos/nope"), 404, "no video session 'nope'")
    assert api.get("/api/health").json()["status"] == "ok"


def test_media_listing(api):
    entries = api.get("/api/media").json()["entries"]
    paths = {e["path"]: e["kind"] for e in entries}
    assert paths["frames"] == "frames" and paths["clip.mp4"] == "file" and "link.png" not in paths


def test_clean_shutdown_removes_every_temporary_file(files, server, api):
    sid = open_clip(api, files)["session_id"]
    api.post(f"/api/videos/{sid}/prompts", json=dict(frame=0, object=1, points=[[30, 48]], labels=[1]))
    stream(api, sid, max_frames=4)
    assert list(files["work"].iterdir())  # the server's folder: uploads, spill
    assert server.stop() == 0
    assert "stopped; sessions closed" in "".join(server.output)
    assert list(files["work"].iterdir()) == []
