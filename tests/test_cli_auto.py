"""`sam2kit image --auto` end to end: every output (mask PNGs, composite, COCO-style JSON) and
that they agree with the Python API; option clashes and bad values (message, exit status 2,
nothing written).

Weights: a random sam2-hiera-tiny checkpoint given with --checkpoint, the model at
--resolution 256 on a 160x120 picture, a 4x4 grid, so that the file takes a few seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sam2kit
from conftest import synthetic_image
from sam2kit import SAM2AutomaticMaskGenerator
from sam2kit.image.amg import rle_to_mask
from sam2kit.build import build_model
from sam2kit.cli import main

TINY = sam2kit.get_config("sam2-hiera-tiny")
W, H = 160, 120
OPEN = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-thresh", "0",
        "--box-nms-thresh", "1"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(7)
    sd = build_model(TINY).state_dict()
    path = tmp_path_factory.mktemp("auto_ckpt") / "random_tiny.pt"
    torch.save({"model": sd}, path)
    return path


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("auto_photo") / "photo.png"
    Image.fromarray(synthetic_image(H, W, seed=3)).save(path)
    return path


def cli(capsys, *args) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_auto_writes_masks_composite_and_coco_json(capsys, tmp_path, ckpt, photo):
    out = tmp_path / "out"
    rc, stdout, err = cli(capsys, "image", photo, "--auto", "-o", out, "--checkpoint", ckpt,
                          "--resolution", "256", "--device", "cpu", *OPEN, "--points-per-batch", "5")
    assert rc == 0, err
    assert "click batches" in err  # the progress bar: 16 clicks in batches of 5
    assert "wrote    48 masks" in stdout
    doc = json.loads((out / "results.json").read_text())
    anns = doc["annotations"]
    assert len(anns) == 48  # 16 clicks x 3 candidates, nothing filtered
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"mask_{k:03d}.png" for k in range(48)] + ["composite.png", "results.json"])
    assert doc["images"] == [{"id": 1, "file_name": str(photo.resolve()), "width": W, "height": H}]
    assert doc["settings"]["points_per_side"] == 4 and doc["settings"]["points_per_batch"] == 5
    assert doc["settings"]["pred_iou_thresh"] == 0.0 and doc["settings"]["use_m2m"] is False
    assert set(doc["timings_s"]) == {"load_model", "generate", "write", "total"}
    for a in anns:
        png = np.array(Image.open(out / a["mask_file"]))
        assert png.shape == (H, W) and set(np.unique(png)) <= {0, 255}
        seg = a["segmentation"]
        assert isinstance(seg["counts"], str) and seg["size"] == [H, W]
        np.testing.assert_array_equal(rle_to_mask(seg), png == 255)
        assert a["area"] == int((png == 255).sum())
    composite = Image.open(out / "composite.png")
    assert composite.size == (W, H) and composite.mode == "RGB"

    # the same masks and numbers as the Python API with the same settings
    model = sam2kit.build_sam2("sam2-hiera-tiny", checkpoint=ckpt, image_size=256)
    recs = SAM2AutomaticMaskGenerator(model, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                                      box_nms_thresh=1.0).generate(np.array(Image.open(photo).convert("RGB")))
    assert len(recs) == len(anns)
    for r, a in zip(recs, anns):
        np.testing.assert_array_equal(r["segmentation"], rle_to_mask(a["segmentation"]))
        assert a["bbox"] == r["bbox"] and a["point_coords"] == r["point_coords"]
        assert abs(a["predicted_iou"] - r["predicted_iou"]) < 1e-6


def test_auto_json_quiet_and_no_masks(capsys, tmp_path, ckpt, photo):
    # the default thresholds (0.8 / 0.95) leave nothing with random weights: an empty, valid result
    rc, stdout, err = cli(capsys, "image", photo, "--auto", "-o", tmp_path / "a", "--checkpoint", ckpt,
                          "--resolution", "256", "--points-per-side", "2", "--json", "-q")
    assert rc == 0 and err == ""
    doc = json.loads(stdout)
    assert doc["annotations"] == [] and doc["command"] == "image --auto"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["composite.png", "results.json"]
    rc, stdout, err = cli(capsys, "image", photo, "--auto", "-o", tmp_path / "b", "--checkpoint", ckpt,
                          "--resolution", "256", "--points-per-side", "2")
    assert rc == 0 and "none passed the thresholds" in stdout


@pytest.mark.parametrize("extra,named", [
    (["--point", "10,10"], "--point"),
    (["--box", "1,1,50,50"], "--box"),
    (["--grid", "2x2"], "--grid"),
    (["--grid", "2x2", "--point", "5,5"], "--point, --grid"),
])
def test_auto_with_prompts_is_an_error(capsys, tmp_path, ckpt, photo, extra, named):
    out = tmp_path / "out"
    rc, stdout, err = cli(capsys, "image", photo, "--auto", "-o", out, "--checkpoint", ckpt, *extra)
    assert rc == 2 and stdout == ""
    assert err.startswith("sam2kit: error: --auto segments everything") and named in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob("out.*"))


@pytest.mark.parametrize("option,value", [
    ("--pred-iou-thresh", "1.5"), ("--stability-thresh", "x"), ("--points-per-side", "0"),
    ("--points-per-batch", "-3"), ("--crop-layers", "-1"), ("--box-nms-thresh", "-0.1"),
])
def test_auto_bad_values(capsys, tmp_path, ckpt, photo, option, value):
    rc, stdout, err = cli(capsys, "image", photo, "--auto", "-o", tmp_path / "o", option, value)
    assert rc == 2 and option in err and not (tmp_path / "o").exists()
