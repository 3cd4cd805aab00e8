"""`sam2kit vos`: semi-supervised VOS over small fixture datasets (a random sam2-hiera-tiny at
256 px), compared exactly with the video predictor driven by hand the way Meta's
tools/vos_inference.py drives it; resuming; bad input; the predictor's official settings."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from sam2kit import build_sam2_video_predictor
from sam2kit.build import build_model
from sam2kit.cli import main
from sam2kit.configs import get_config
from sam2kit.video.predictor import SAM2VideoPredictor, apply_non_overlapping_constraints
from small_model import SMALL
from vos_fixtures import make_davis, make_sav, shapes_video

SIZE = 256


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A random sam2-hiera-tiny checkpoint whose objects are judged present."""
    torch.manual_seed(11)
    sd = build_model(get_config("sam2-hiera-tiny")).state_dict()
    sd["sam_mask_decoder.pred_obj_score_head.layers.2.bias"].fill_(8.0)
    path = tmp_path_factory.mktemp("vos_ckpt") / "random_tiny.pt"
    torch.save({"model": sd}, path)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """DAVIS layout: 2 sequences of 6 frames, objects first annotated on frames 0, 1 (a single
    pixel) and 2, void bands; SA-V layout: 1 video of 7 frames annotated every other frame."""
    root = tmp_path_factory.mktemp("vos_data")
    make_davis(root / "DAVIS", {f"seq{i}": shapes_video(6, 96, 128, seed=20 + i) for i in range(2)})
    make_sav(root / "SAV", {"vid": shapes_video(4, 96, 128, seed=30, void=False, appear=0)}, step=2)
    return root


def official_predictor(ckpt, per_object: bool) -> SAM2VideoPredictor:
    """The predictor tools/vos_inference.py builds: apply_postprocessing=False, and
    non_overlap_masks on unless per-object PNGs."""
    return build_sam2_video_predictor("sam2-hiera-tiny", checkpoint=ckpt, image_size=SIZE, fill_hole_area=0,
                                      binarize_mask_from_pts_for_mem_enc=False,
                                      dynamic_multimask_via_stability=False, non_overlap_masks=not per_object)


def palette_by_hand(predictor, frames_dir, ann_dir) -> dict[str, np.ndarray]:
    """tools/vos_inference.py's vos_separate_inference_per_object (objects appearing later):
    each object alone from its first non-empty mask, -1024 before, then the non-overlap
    constraint, logits > 0, lower ids drawn last. (Void, 255, is not an object.)"""
    names = sorted(p.stem for p in frames_dir.iterdir())
    state = predictor.init_state(str(frames_dir))
    first: dict[int, tuple[int, np.ndarray]] = {}
    for idx, name in enumerate(names):
        if (ann_dir / f"{name}.png").exists():
            mask = np.array(Image.open(ann_dir / f"{name}.png"))
            for k in np.unique(mask):
                if 0 < k < 255 and int(k) not in first:
                    first[int(k)] = (idx, mask == k)
    ids = sorted(first)
    scores = {k: {} for k in ids}
    for k in ids:
        predictor.reset_state(state)
        predictor.add_new_mask(state, first[k][0], k, first[k][1])
        for f, _, logits in predictor.propagate_in_video(state, start_frame_idx=first[k][0], progress=False):
            scores[k][f] = logits.cpu()
    state.close()
    out = {}
    h, w = first[ids[0]][1].shape
    for f, name in enumerate(names):
        s = torch.full((len(ids), 1, h, w), -1024.0)
        for i, k in enumerate(ids):
            if f in scores[k]:
                s[i] = scores[k][f]
        s = apply_non_overlapping_constraints(s)
        labels = np.zeros((h, w), np.uint8)
        for i in reversed(range(len(ids))):
            labels[(s[i, 0] > 0).numpy()] = ids[i]
        out[name] = labels
    return out


def cli(capsys, *args):
    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.fixture(scope="module")
def davis_run(ckpt, data):
    out = data / "pred_davis"
    rc = main(["vos", str(data / "DAVIS"), "-o", str(out), "--model", str(ckpt), "--resolution", str(SIZE),
               "--json", "-q"])
    assert rc == 0
    return out


def test_vos_equals_the_predictor_driven_by_hand(davis_run, ckpt, data):
    predictor = official_predictor(ckpt, per_object=False)
    objects_seen = set()
    for seq in ("seq0", "seq1"):
        expected = palette_by_hand(predictor, data / "DAVIS/JPEGImages/480p" / seq, data / "DAVIS/Annotations/480p" / seq)
        assert sorted(p.name for p in (davis_run / seq).iterdir()) == [f"{n}.png" for n in sorted(expected)]
        for name, labels in expected.items():
            with Image.open(davis_run / seq / f"{name}.png") as im:
                assert im.mode == "P" and im.getpalette()[:6] == [0, 0, 0, 128, 0, 0]
                got = np.asarray(im)
            assert np.array_equal(got, labels), (seq, name, (got != labels).sum())
            objects_seen |= set(np.unique(got).tolist())
        first = np.asarray(Image.open(davis_run / seq / "00000.png"))
        assert not (first == 2).any()            # object 2 is first annotated on frame 2
    assert {1, 2, 3} <= objects_seen and 255 not in objects_seen
    ledger = json.loads((davis_run / "vos.json").read_text())
    assert ledger["complete"] and ledger["settings"]["fill_hole_area"] == 0
    assert ledger["settings"]["non_overlap_masks"] is True
    assert ledger["videos"]["seq0"]["first_frames"] == {"1": 0, "2": 2, "3": 0, "4": 1}
    assert ledger["last_run"]["frames"] == 12 and ledger["last_run"]["frames_per_second"] > 0


def test_sav_layout_per_object_pngs(ckpt, data, capsys):
    out = data / "pred_sav"
    rc, stdout, err = cli(capsys, "vos", data / "SAV", "-o", out, "--model", ckpt, "--resolution", SIZE)
    assert rc == 0, err
    assert "frames/s" in stdout and "sam2kit evaluate --gt" in stdout
    # tools/vos_inference.py --per_obj_png_file: every object on frame 0, one session, overlaps kept
    predictor = official_predictor(ckpt, per_object=True)
    frames_dir, ann = data / "SAV/JPEGImages_24fps/vid", data / "SAV/Annotations_6fps/vid"
    state = predictor.init_state(str(frames_dir))
    objs = sorted(os.listdir(ann))
    for name in objs:
        predictor.add_new_mask(state, 0, int(name), np.array(Image.open(ann / name / "00000.png")) > 0)
    by_hand = {f: (m[:, 0] > 0).numpy() for f, _, m in predictor.propagate_in_video(state, progress=False)}
    state.close()
    assert sorted(os.listdir(out / "vid")) == objs and len(by_hand) == 7
    for f, masks in by_hand.items():
        for name, m in zip(objs, masks):
            got = np.asarray(Image.open(out / "vid" / name / f"{f:05d}.png"))
            assert np.array_equal(got, m.astype(np.uint8)), (name, f)
    rc, stdout, err = cli(capsys, "evaluate", "--gt", data / "SAV", "--pred", out, "--json", "--jobs", "1")
    assert rc == 0, err
    doc = json.loads(stdout)
    assert doc["layout"] == "sav" and doc["objects"] >= 3


def test_resume_redoes_only_what_is_missing(davis_run, ckpt, data, capsys):
    out = data / "pred_resume"
    shutil.copytree(davis_run, out)
    before = {p.name: np.asarray(Image.open(p)) for p in (out / "seq1").iterdir()}
    shutil.rmtree(out / "seq1")
    (out / "seq0.partial-x1y2").mkdir()                 # what an interrupted run leaves
    (out / "seq0.partial-x1y2" / "00000.png").write_bytes(b"half")
    rc, stdout, err = cli(capsys, "vos", data / "DAVIS", "-o", out, "--model", ckpt, "--resolution", SIZE, "--json")
    assert rc == 0, err
    ledger = json.loads(stdout)
    assert ledger["last_run"]["predicted"] == 1 and ledger["last_run"]["skipped"] == ["seq0"]
    assert not (out / "seq0.partial-x1y2").exists()
    after = {p.name: np.asarray(Image.open(p)) for p in (out / "seq1").iterdir()}
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)
    rc, _, err = cli(capsys, "vos", data / "DAVIS", "-o", out, "--model", ckpt, "--resolution", 288, "-q")
    assert rc == 2 and "other settings" in err and "resolution" in err


def test_bad_datasets(ckpt, tmp_path, capsys):
    (tmp_path / "frames").mkdir()
    rc, _, err = cli(capsys, "vos", tmp_path, "-o", tmp_path / "out", "--model", ckpt)
    assert rc == 2 and "none of the known layouts" in err and "JPEGImages/480p" in err
    frames, lab = shapes_video(3, 32, 40, seed=1)
    make_davis(tmp_path / "D", {"s": (frames, lab)}, frames=False)
    rc, _, err = cli(capsys, "vos", tmp_path / "D", "-o", tmp_path / "out", "--model", ckpt)
    assert rc == 2 and "no JPEG frames" in err
    assert not (tmp_path / "out").exists()


def test_dynamic_multimask_switch():
    """dynamic_multimask_via_stability=False (apply_postprocessing=False) keeps the single-mask
    output of a two-click prompt, as the reference's mask decoder then does."""
    torch.manual_seed(0)
    model = build_model(SMALL)
    with torch.no_grad():  # objects present, as with real weights
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(8.0)
    frames = [np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8) for i in range(2)]
    clicks = dict(points=[[20, 20], [40, 30]], labels=[1, 1])

    def masks(dynamic: bool, thresh: float):
        model.sam_mask_decoder.stability_thresh = thresh
        p = SAM2VideoPredictor(model, dynamic_multimask_via_stability=dynamic)
        s = p.init_state(frames)
        out = p.add_new_points_or_box(s, 0, 1, **clicks)[2]
        s.close()
        return out

    off = masks(False, 0.98)
    assert torch.equal(off, masks(True, -1.0))       # always "stable": the single-mask output
    assert not torch.equal(off, masks(True, 2.0))    # never stable: the best of the three
    model.sam_mask_decoder.stability_thresh = 0.98
