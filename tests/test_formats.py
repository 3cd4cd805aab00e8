"""Export formats (sam2kit.formats): each file read back by its own ecosystem's reader —
pycocotools for COCO, an ultralytics-style parser for YOLO, CVAT's importer structure and
cvat-sdk's mask decoding for CVAT XML."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sam2kit.formats import cvat as C
from sam2kit.formats.polygons import polygons_to_mask
from sam2kit.formats.write import parse_formats, write_formats

H, W = 48, 64


def _disk(cx, cy, r):
    yy, xx = np.mgrid[:H, :W]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def _masks():
    ring = _disk(20, 20, 14) & ~_disk(20, 20, 5)  # a hole
    two = np.zeros((H, W), bool)
    two[5:15, 40:50] = two[30:40, 45:60] = True  # two parts
    return {"ring": ring, "two": two, "disk": _disk(44, 30, 9), "empty": np.zeros((H, W), bool)}


def _save(path: Path, m: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(m.astype(np.uint8) * 255).save(path)


@pytest.fixture
def image_out(tmp_path):
    """An output folder as `sam2kit image` writes it (results.json + mask_NN.png)."""
    entries = []
    for k, (name, m) in enumerate(_masks().items()):
        _save(tmp_path / f"mask_{k:02d}.png", m)
        entries.append({"index": k, "score": 0.5 + k / 10, "mask_file": f"mask_{k:02d}.png"})
    results = {"command": "image", "image": {"path": "/data/photo.jpg", "width": W, "height": H},
               "prompts": entries}
    (tmp_path / "results.json").write_text(json.dumps(results))
    return tmp_path, list(_masks().values())


@pytest.fixture
def video_out(tmp_path):
    """An output folder as `sam2kit video` writes it: two objects over 4 frames; object 2 is
    absent on frame 2 and object 3 never shows."""
    frames, truth = [], {}
    for f in range(4):
        objs = []
        for oid, m in [(1, _disk(15 + 5 * f, 20, 8)), (2, _disk(50, 30, 6) if f != 2 else np.zeros((H, W), bool)),
                       (3, np.zeros((H, W), bool))]:
            _save(tmp_path / "masks" / str(oid) / f"{f:05d}.png", m)
            truth[f, oid] = m
            objs.append({"id": oid, "object_score": 1.0})
        frames.append({"frame": f, "file": f"frames/{f:05d}.jpg", "objects": objs})
    results = {"command": "video", "video": {"path": "/v.mp4", "width": W, "height": H},
               "objects": [{"id": 1}, {"id": 2}, {"id": 3}], "frames": frames}
    (tmp_path / "results.json").write_text(json.dumps(results))
    return tmp_path, truth


def test_coco_polygons_read_by_pycocotools(image_out):
    from pycocotools.coco import COCO

    out, masks = image_out
    (path,) = write_formats(out, ["coco-polygons"], tolerance=0)
    coco = COCO(str(path))
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    assert len(anns) == 3  # the empty mask has no annotation
    want = [m for m in masks if m.any()]
    for a, m in zip(anns, want):
        assert (coco.annToMask(a).astype(bool) == m).all()  # tolerance 0: exact
        assert a["area"] == m.sum() and a["iscrowd"] == 0
    ring, two = anns[0], anns[1]
    assert isinstance(ring["segmentation"], dict)  # holes -> RLE (the stated rule)
    assert isinstance(two["segmentation"], list) and len(two["segmentation"]) == 2  # one polygon a part
    assert two["bbox"] == [40, 5, 20, 35]
    assert coco.loadCats(coco.getCatIds())[0]["name"] == "object"


def test_coco_polygons_with_tolerance_and_rle(image_out):
    from pycocotools.coco import COCO

    out, masks = image_out
    p_poly, p_rle = write_formats(out, ["coco-polygons", "coco-rle"], tolerance=1.0)
    poly, rle = COCO(str(p_poly)), COCO(str(p_rle))
    for a, b, m in zip(poly.loadAnns(poly.getAnnIds()), rle.loadAnns(rle.getAnnIds()), [m for m in masks if m.any()]):
        assert (rle.annToMask(b).astype(bool) == m).all()
        got = poly.annToMask(a).astype(bool)
        assert (got & m).sum() / (got | m).sum() > 0.9


def _ultralytics_parse(label_file: Path):
    """The label check of ultralytics' `verify_image_label` (ultralytics/data/utils.py) for the
    segment task, written out here (ultralytics itself needs torchvision): rows split on
    whitespace; a row of more than 6 numbers is a polygon; class, then x, y pairs; every
    coordinate in [0, 1]; no duplicate rows."""
    rows = [x.split() for x in label_file.read_text().strip().splitlines() if len(x)]
    classes = np.array([r[0] for r in rows], dtype=np.float32)
    segments = [np.array(r[1:], dtype=np.float32).reshape(-1, 2) for r in rows]
    assert all(len(r) > 6 for r in rows)
    assert all(len(r[1:]) % 2 == 0 for r in rows)
    for s in segments:
        assert (s >= 0).all() and (s <= 1).all(), "non-normalized or out of bounds coordinates"
    assert len({tuple(r) for r in rows}) == len(rows)
    return classes, segments


def test_yolo_read_as_ultralytics_does(image_out):
    import cv2
    import yaml

    out, masks = image_out
    files = write_formats(out, ["yolo"], tolerance=0.5)
    assert out / "yolo" / "labels" / "photo.txt" in files
    data = yaml.safe_load((out / "yolo" / "data.yaml").read_text())
    assert data["names"] == {0: "object"} and data["train"] == "images"
    classes, segments = _ultralytics_parse(out / "yolo" / "labels" / "photo.txt")
    assert (classes == 0).all() and len(segments) == 3
    for s, m in zip(segments, [m for m in masks if m.any()]):
        # ultralytics' polygon2mask: cv2.fillPoly on the pixel coordinates
        filled = np.zeros((H, W), np.uint8)
        cv2.fillPoly(filled, [np.round(s * [W, H] - 0.5).astype(np.int32)], 1)
        filled = filled.astype(bool)
        assert (filled & m).sum() / (filled | m).sum() > 0.85
    ring = np.zeros((H, W), np.uint8)
    cv2.fillPoly(ring, [np.round(segments[0] * [W, H] - 0.5).astype(np.int32)], 1)
    assert ring[_disk(20, 20, 3)].sum() == 0  # the hole stays empty


def _cvat_load_masks(root: ET.Element):
    """What CVAT's importer (`load_anno` in cvat/apps/dataset_manager/formats/cvat.py) reads from
    an `<image>`'s `<mask>`: points = rle ints, then left, top, left + width - 1, top + height - 1."""
    out = []
    for img in root.iter("image"):
        for el in img.iter("mask"):
            pts = list(map(int, el.attrib["rle"].split(",")))
            left, top = int(el.attrib["left"]), int(el.attrib["top"])
            pts += [left, top, left + int(el.attrib["width"]) - 1, top + int(el.attrib["height"]) - 1]
            out.append((el.attrib["label"], pts, int(img.attrib["width"]), int(img.attrib["height"])))
    return out


def test_cvat_images_xml_masks_decode_with_cvat_sdk(image_out):
    from cvat_sdk.masks import decode_mask

    out, masks = image_out
    (path,) = write_formats(out, ["cvat-xml"])
    root = ET.parse(path).getroot()
    assert root.tag == "annotations" and root.findtext("version") == "1.1"
    assert root.find("meta/task/labels/label/name").text == "object"
    loaded = _cvat_load_masks(root)
    assert len(loaded) == 3
    for (label, pts, w, h), m in zip(loaded, [m for m in masks if m.any()]):
        assert label == "object" and (w, h) == (W, H)
        assert (decode_mask(pts, image_width=w, image_height=h) == m).all()


def test_cvat_video_xml_tracks(video_out):
    out, truth = video_out
    (path,) = write_formats(out, ["cvat-xml"], tolerance=0)
    root = ET.parse(path).getroot()
    assert root.findtext("meta/task/mode") == "interpolation"
    tracks = root.findall("track")
    assert [t.attrib["label"] for t in tracks] == ["object", "object"]  # object 3 never shows: no track
    for t, oid in zip(tracks, [1, 2]):
        shapes = t.findall("polygon")
        assert [int(s.attrib["frame"]) for s in shapes] == [0, 1, 2, 3]
        for s in shapes:  # the attributes CVAT's load_anno reads for a track's shape
            f = int(s.attrib["frame"])
            assert s.attrib["keyframe"] == "1"
            assert s.attrib["outside"] == ("1" if not truth[f, oid].any() else "0")
            if s.attrib["outside"] == "0":
                ring = np.array([list(map(float, p.split(","))) for p in s.attrib["points"].split(";")])
                assert (polygons_to_mask([ring], H, W) == truth[f, oid]).all()


@pytest.mark.parametrize("seed", range(4))
def test_cvat_mask_points_match_cvat_sdk(seed):
    from cvat_sdk.masks import decode_mask, encode_mask

    rng = np.random.default_rng(seed)
    m = np.zeros((H, W), bool)
    m[5:30, 7:50] = rng.random((25, 43)) < [0.5, 0.99, 0.01, 0.5][seed]
    if seed == 3:
        m[5, 7] = True  # starts with a foreground run: the first run counts 0 zeros
    ours = C.encode_mask(m)
    assert ours == encode_mask(m)  # the SDK's own bbox: the mask's tight box
    assert (C.decode_mask(ours, W, H) == m).all() and (decode_mask(ours, image_width=W, image_height=H) == m).all()
    assert C.encode_mask(np.zeros((H, W), bool)) is None


def test_cvat_decode_bad_points():
    with pytest.raises(ValueError, match="box"):
        C.decode_mask([4, 0, 0, 1, 1], 1, 1)
    with pytest.raises(ValueError, match="add up"):
        C.decode_mask([1, 2, 0, 0, 1, 1], 4, 4)
    with pytest.raises(ValueError, match="integers"):
        C.decode_mask([1.5, 2, 0, 0, 1, 1], 4, 4)


def test_format_names_and_errors(image_out, tmp_path):
    assert parse_formats("yolo, coco-polygons,yolo") == ["yolo", "coco-polygons"]
    with pytest.raises(ValueError, match="unknown export format nope: choose from .*cvat-xml"):
        parse_formats("nope")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "results.json").write_text(json.dumps({"command": "evaluate"}))
    with pytest.raises(ValueError, match="'image', 'image --auto' and 'video'"):
        write_formats(tmp_path / "x", ["yolo"])
    out, _ = image_out
    write_formats(out, ["coco-polygons"])
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_labelstudio_tasks_decode_with_label_studio_sdk(image_out, tmp_path):
    """labelstudio.json: import-ready tasks whose brush regions label_studio_sdk's own decoder
    turns back into the masks (exact: brush RLE is lossless)."""
    from ls_harness import need_label_studio, sdk_decode

    need_label_studio()  # the SDK lives in Label Studio's own venv (scripts/label-studio-env)
    out, masks = image_out
    (path,) = write_formats(out, ["labelstudio"])
    (task,) = json.loads(path.read_text())
    assert task["data"] == {"image": "/data/photo.jpg"}
    (pred,) = task["predictions"]
    regions = pred["result"]
    want = [m for m in masks if m.any()]
    assert len(regions) == len(want)  # the empty mask has no region
    assert all(r["type"] == "brushlabels" and r["value"]["format"] == "rle" and r["value"]["brushlabels"] == ["object"]
               and (r["original_width"], r["original_height"]) == (W, H) for r in regions)
    decoded = sdk_decode([(r["value"]["rle"], H, W) for r in regions], tmp_path)
    for d, m in zip(decoded, want):
        assert ((d > 0) == m).all()
    assert [round(r["score"], 6) for r in regions] == [0.5, 0.6, 0.7]


def test_labelstudio_video_task_is_videorectangle_sequences(video_out):
    out, truth = video_out
    (path,) = write_formats(out, ["labelstudio"])
    (task,) = json.loads(path.read_text())
    assert task["data"] == {"video": "/v.mp4"}
    regions = task["predictions"][0]["result"]
    assert [r["id"] for r in regions] == ["obj1", "obj2"]  # object 3 never shows: no region
    one, two = ({s["frame"]: s for s in r["value"]["sequence"]} for r in regions)
    assert sorted(one) == [1, 2, 3, 4] and all(s["enabled"] for s in one.values())  # frames from 1
    ys, xs = np.nonzero(truth[3, 1])
    assert one[4]["x"] == pytest.approx(100 * xs.min() / W) and one[4]["width"] == pytest.approx(100 * (xs.max() - xs.min() + 1) / W)
    assert one[4]["y"] == pytest.approx(100 * ys.min() / H)
    # object 2 is absent on frame 2 (index): its box ends on frame 2 (1-based) and starts again on 4
    assert sorted(two) == [1, 2, 4] and two[2]["enabled"] is False and two[4]["enabled"] is True
