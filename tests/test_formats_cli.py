"""--format on the commands: `sam2kit image`, `image --auto` and `video` write the export formats
beside results.json, from the same masks (read back with pycocotools and ElementTree)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from sam2kit.cli import main
from serve_helpers import moving_frames, random_checkpoint

RES = ["--resolution", "256", "--device", "cpu", "-q"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("fmt")
    frames = moving_frames(3)
    (root / "frames").mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(root / "frames" / f"{i:05d}.png")
    Image.fromarray(frames[0]).save(root / "photo.png")
    return {"root": root, "ckpt": random_checkpoint(root / "t.pt")}


def _mask(path):
    return np.asarray(Image.open(path)) > 0


def test_image_and_auto_write_formats(files, tmp_path):
    from pycocotools.coco import COCO

    out = tmp_path / "img"
    rc = main(["image", str(files["root"] / "photo.png"), "-o", str(out), "--checkpoint", str(files["ckpt"]), *RES,
               "--point", "30,48", "--box", "80,15,112,46", "--format", "coco-polygons,yolo,cvat-xml",
               "--polygon-tolerance", "0"])
    assert rc == 0
    r = json.loads((out / "results.json").read_text())
    coco = COCO(str(out / "coco_polygons.json"))
    masks = [_mask(out / e["mask_file"]) for e in r["prompts"]]
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) == sum(m.any() for m in masks)
    for a, m in zip(anns, [m for m in masks if m.any()]):
        assert (coco.annToMask(a).astype(bool) == m).all()
    assert (out / "yolo" / "labels" / "photo.txt").is_file() and (out / "yolo" / "data.yaml").is_file()
    assert len(ET.parse(out / "cvat.xml").getroot().findall("image/mask")) == len(anns)

    auto = tmp_path / "auto"
    rc = main(["image", str(files["root"] / "photo.png"), "--auto", "--points-per-side", "4", "-o", str(auto),
               "--checkpoint", str(files["ckpt"]), *RES, "--format", "coco-rle"])
    assert rc == 0
    r = json.loads((auto / "results.json").read_text())
    coco = COCO(str(auto / "coco_rle.json"))
    assert len(coco.getAnnIds()) == sum(_mask(auto / a["mask_file"]).any() for a in r["annotations"])


def test_video_writes_cvat_tracks(files, tmp_path, capsys):
    out = tmp_path / "vid"
    rc = main(["video", str(files["root"] / "frames"), "-o", str(out), "--checkpoint", str(files["ckpt"]), *RES,
               "--point", "0:30,48", "--format", "cvat-xml,coco-polygons"])
    assert rc == 0, capsys.readouterr().err
    root = ET.parse(out / "cvat.xml").getroot()
    (track,) = root.findall("track")
    assert [p.attrib["frame"] for p in track.findall("polygon")] == ["0", "1", "2"]
    assert len(json.loads((out / "coco_polygons.json").read_text())["images"]) == 3


def test_unknown_format_is_refused_before_anything_runs(files, tmp_path, capsys):
    rc = main(["image", str(files["root"] / "photo.png"), "-o", str(tmp_path / "x"), "--format", "coco,yolo"])
    assert rc == 2 and "unknown export format coco" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_batch_items_write_formats(files, tmp_path):
    from pycocotools.coco import COCO

    (tmp_path / "in").mkdir()
    Image.open(files["root"] / "photo.png").save(tmp_path / "in" / "a.png")
    rc = main(["batch", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--task", "image", "--checkpoint",
               str(files["ckpt"]), "--resolution", "256", "--device", "cpu", "--grid", "1x2", "-q",
               "--format", "coco-polygons,yolo"])
    assert rc == 0
    item = tmp_path / "out" / "a.png"
    coco = COCO(str(item / "coco_polygons.json"))
    r = json.loads((item / "results.json").read_text())
    assert len(coco.getAnnIds()) == sum(_mask(item / e["mask_file"]).any() for e in r["prompts"])
    assert (item / "yolo" / "labels" / "a.txt").is_file()
