"""J&F evaluation (sam2kit.vos.evaluation, `sam2kit evaluate`): hand-computed values, the official
definitions, and the numbers of vos-benchmark (pip), which reproduces davis2017-evaluation and
is what SA-V's sav_evaluator.py copies, on fixtures the tests make."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from sam2kit.cli import main
from sam2kit.vos.datasets import davis_palette, save_png
from sam2kit.vos.evaluation import evaluate, f_measure, frame_scores, jaccard, seg2bmap, statistics
from sam2kit.vos.evaluation.metrics import bound_radius, decay_bins
from vos_fixtures import make_davis, make_sav, shapes_video, write_palette_masks



@pytest.fixture(scope="module")
def vb():
    """vos-benchmark (the test extra; it imports OpenCV, which needs libGL: scripts/setup
    installs it); missing -> skip, or fail under CI=true."""
    try:
        import vos_benchmark.benchmark
        import vos_benchmark.evaluator
    except ImportError as e:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"vos-benchmark cannot be imported ({e}); run scripts/setup")
        pytest.skip(f"vos-benchmark cannot be imported ({e}); run scripts/setup")
    return vos_benchmark


def perturb(labels: np.ndarray, seed: int) -> np.ndarray:
    """A prediction: the ground truth shifted a little, a frame dropped, void cleared."""
    rng = np.random.default_rng(seed)
    pred = np.where(labels == 255, 0, labels).astype(np.uint8)
    for t in range(len(pred)):
        pred[t] = np.roll(pred[t], tuple(int(v) for v in rng.integers(-3, 4, 2)), axis=(0, 1))
    pred[len(pred) // 2] = 0
    return pred


def cli(capsys, *args):
    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


# ---- the measures on hand-computed cases ---------------------------------------------------

def test_j_and_f_hand_computed():
    gt = np.zeros((20, 20), bool)
    gt[5:10, 5:10] = True                       # a 5x5 square: 20 boundary pixels
    assert seg2bmap(gt).sum() == 20
    dot = np.zeros((20, 20), bool)
    dot[15, 15] = True                          # one pixel: itself and 3 neighbours up-left
    assert seg2bmap(dot).sum() == 4
    corner = np.zeros((20, 20), bool)
    corner[19, 19] = True                       # at the bottom-right edge: the edge is no boundary
    assert seg2bmap(corner).sum() == 3
    assert bound_radius((20, 20)) == 1 and bound_radius((480, 854)) == 8
    assert jaccard(gt, gt) == 1.0 and f_measure(gt, gt) == 1.0
    assert jaccard(gt, np.zeros_like(gt)) == 0.0 and f_measure(gt, np.zeros_like(gt)) == 0.0
    empty = np.zeros_like(gt)
    assert jaccard(empty, empty) == 1.0 and f_measure(empty, empty) == 1.0   # both empty
    pred = gt | dot                             # an extra one-pixel blob far away
    assert jaccard(gt, pred) == pytest.approx(25 / 26, abs=1e-15)
    assert f_measure(gt, pred) == pytest.approx(2 * (20 / 24) / (20 / 24 + 1), abs=1e-15)  # 10/11
    shifted = np.roll(gt, 1, axis=1)            # one pixel right: every boundary pixel within r=1
    assert jaccard(gt, shifted) == pytest.approx(20 / 30, abs=1e-15)
    assert f_measure(gt, shifted) == 1.0
    far = np.roll(gt, 8, axis=0)                # no overlap, no boundary pixel within reach
    assert jaccard(gt, far) == 0.0 and f_measure(gt, far) == 0.0


def test_void_scored_as_background_or_left_out():
    gt = np.zeros((20, 20), np.uint8)
    gt[5:10, 5:10] = 1
    gt[12:14, :] = 255                          # a void band (40 pixels)
    pred = np.where(gt > 0, 1, 0).astype(np.uint8)  # the object and the whole band
    default = frame_scores(gt, pred, [1])
    assert default.j[0] == pytest.approx(25 / 65, abs=1e-15)   # void counts as background
    assert default.f[0] < 1.0
    ignored = frame_scores(gt, pred, [1], gt == 255)
    assert ignored.j[0] == 1.0 and ignored.f[0] == 1.0
    assert jaccard(gt == 1, pred == 1, gt == 255) == 1.0 and f_measure(gt == 1, pred == 1, gt == 255) == 1.0


def test_statistics_and_decay_past_255_frames():
    v = np.array([1.0, 0.4, 0.6, 0.2, 0.9, 0.0, 0.7])
    mean, recall, decay = statistics(v)
    # bins of 7 frames: edges round(linspace(1, 7, 5)) - 1 = [0, 2, 3, 5, 6]
    assert decay_bins(7) == [(0, 3), (2, 4), (3, 6), (5, 7)]
    assert mean == pytest.approx(v.mean()) and recall == pytest.approx(4 / 7)
    assert decay == pytest.approx(v[0:3].mean() - v[5:7].mean(), abs=1e-15)
    ramp = 1.0 - np.arange(300) / 1000.0        # a score falling steadily over 300 frames
    assert decay_bins(300) == [(0, 76), (75, 151), (150, 225), (224, 300)]
    assert statistics(ramp)[2] == pytest.approx(ramp[0:76].mean() - ramp[224:300].mean(), abs=1e-12)
    assert statistics(ramp)[2] == pytest.approx(0.224, abs=1e-12)
    # the official db_statistics casts the bin edges to uint8: past 256 frames they wrap
    ids = (np.round(np.linspace(1, 300, 5) + 1e-10) - 1).astype(np.uint8)
    assert ids[4] == 299 % 256 and len(ramp[ids[3]: ids[4] + 1]) == 0   # last quarter: empty -> NaN
    short = 1.0 - np.arange(200) / 1000.0        # below 256 frames both agree
    ids = (np.round(np.linspace(1, 200, 5) + 1e-10) - 1).astype(np.uint8)
    official = np.nanmean(short[ids[0]: ids[1] + 1]) - np.nanmean(short[ids[3]: ids[4] + 1])
    assert statistics(short)[2] == pytest.approx(official, abs=1e-15)


def test_frame_scores_equal_vos_benchmark_per_frame(vb):
    """Every object of every frame (appearing, vanishing, at the border, one pixel, empty in
    the prediction), J and F against vos-benchmark's per-frame values."""
    _, gt = shapes_video(8, 61, 83, seed=3, void=False)
    pred = perturb(gt, 1)
    pred[pred == 3] = 0                         # object 3 missing from the prediction
    checked = 0
    for t in range(len(gt)):
        ev = vb.evaluator.Evaluator()
        ev.feed_frame(pred[t], gt[t])
        ours = frame_scores(gt[t], pred[t])
        assert sorted(ours.ids.tolist()) == sorted(ev.object_iou)
        for k, j, f in zip(ours.ids, ours.j, ours.f):
            assert abs(j - ev.object_iou[k][0]) < 1e-12 and abs(f - ev.boundary_f[k][0]) < 1e-12, (t, k)
            assert abs(jaccard(gt[t] == k, pred[t] == k) - j) < 1e-12
            assert abs(f_measure(gt[t] == k, pred[t] == k) - f) < 1e-12
            checked += 1
    assert checked >= 20


# ---- whole datasets: DAVIS layout ----------------------------------------------------------

@pytest.fixture(scope="module")
def davis(tmp_path_factory):
    """3 sequences of 8 frames; every object present from the first scored frame on (so that
    vos-benchmark, which starts an object where it is first seen, scores as DAVIS does)."""
    root = tmp_path_factory.mktemp("eval_davis")
    videos = {f"seq{i}": shapes_video(8, 72, 96, seed=i, void=False, appear=0) for i in range(3)}
    make_davis(root / "DAVIS", videos)
    for i, (name, (_, lab)) in enumerate(videos.items()):
        pred = perturb(lab, i)
        if i == 1:
            pred[pred == 2] = 0                 # an object missed all along
        write_palette_masks(root / "pred" / name, pred)
    return root


def test_davis_layout_equals_vos_benchmark(davis, vb):
    doc = evaluate(davis / "DAVIS", davis / "pred", jobs=2)
    jf, j, f, per_object = vb.benchmark.benchmark([str(davis / "DAVIS/Annotations/480p")], [str(davis / "pred")],
                                                  True, 2, verbose=False)
    os.remove(davis / "pred" / "results.csv")
    assert doc["sequences"] == 3 and doc["objects"] == 12
    assert abs(100 * doc["global"]["J-Mean"] - j[0]) < 1e-6
    assert abs(100 * doc["global"]["F-Mean"] - f[0]) < 1e-6
    assert abs(100 * doc["global"]["J&F-Mean"] - jf[0]) < 1e-6
    for s in doc["per_sequence"]:
        iou, bf = per_object[0][s["sequence"]]
        for o in s["objects"]:
            assert abs(100 * o["J-Mean"] - iou[o["object"]]) < 1e-6
            assert abs(100 * o["F-Mean"] - bf[o["object"]]) < 1e-6
    assert doc["global"]["J-Mean"] < 0.9 and doc["missing_predictions"] == []


def test_davis_objects_appearing_later_score_one_before(tmp_path, vb):
    """DAVIS scores an object on every frame (J = F = 1 where both masks are empty);
    vos-benchmark starts it where it is first seen: the rest agrees frame by frame."""
    _, lab = shapes_video(8, 72, 96, seed=5, void=False, appear=3)
    make_davis(tmp_path / "D", {"s": (None, lab)}, frames=False)
    pred = perturb(lab, 2)
    write_palette_masks(tmp_path / "p" / "s", pred)
    doc = evaluate(tmp_path / "D", tmp_path / "p", jobs=1)
    ev = vb.evaluator.Evaluator()
    for t in range(1, 7):
        ev.feed_frame(pred[t], lab[t])
    obj2 = next(o for o in doc["per_sequence"][0]["objects"] if o["object"] == 2)
    tail = ev.object_iou[2]                     # from frame 3 on
    assert len(tail) == 4 and obj2["frames"] == 6
    assert obj2["J-Mean"] == pytest.approx((2 * 1.0 + sum(tail)) / 6, abs=1e-12)


def test_cli_writes_the_official_files(davis, tmp_path, capsys):
    out = tmp_path / "scores"
    rc, stdout, err = cli(capsys, "evaluate", "--gt", davis / "DAVIS", "--pred", davis / "pred", "-o", out, "--jobs", "2")
    assert rc == 0, err
    assert "J&F-Mean" in stdout and "seq0_1" in stdout
    doc = json.loads((out / "results.json").read_text())
    rows = (out / "global_results-val.csv").read_text().splitlines()
    assert rows[0] == "J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay"
    assert rows[1].split(",")[0] == f"{doc['global']['J&F-Mean']:.3f}"
    seq_rows = (out / "per-sequence_results-val.csv").read_text().splitlines()
    assert seq_rows[0] == "Sequence,J-Mean,F-Mean" and len(seq_rows) == 1 + 12
    assert seq_rows[1] == f"seq0_1,{doc['per_sequence'][0]['objects'][0]['J-Mean']:.3f}," \
                          f"{doc['per_sequence'][0]['objects'][0]['F-Mean']:.3f}"
    with Image.open(out / "jf_per_sequence.png") as im:
        assert im.size[1] > 60
    rc, _, err = cli(capsys, "evaluate", "--gt", davis / "DAVIS", "--pred", davis / "pred", "-o", out)
    assert rc == 2 and "--overwrite" in err     # earlier results are not replaced silently
    rc, stdout, _ = cli(capsys, "evaluate", "--gt", davis / "DAVIS/Annotations/480p", "--pred", davis / "pred",
                        "-o", out, "--overwrite", "--json", "--all-frames", "--jobs", "1")
    assert rc == 0 and json.loads(stdout)["settings"]["skip_first_and_last"] is False
    assert json.loads(stdout)["per_sequence"][0]["objects"][0]["frames"] == 8


# ---- SA-V layout -----------------------------------------------------------------------------

def official_sav(vb, gt_root, pred_root):
    """sam2's sav_dataset/utils/sav_benchmark.py VideoEvaluator (skipping first and last frames)
    on vos-benchmark's Evaluator, the code it copies: {(video, object): (J, F)} in percent,
    None where the official code stops (no ground truth on the scored frames)."""
    out = {}
    for vid in sorted(os.listdir(gt_root)):
        for obj in sorted(os.listdir(gt_root / vid)):
            ev = vb.evaluator.Evaluator(name=vid)
            for frame in sorted(os.listdir(gt_root / vid / obj))[1:-1]:
                gt = np.array(Image.open(gt_root / vid / obj / frame)) > 0
                pred = np.array(Image.open(pred_root / vid / obj / frame)) > 0
                ev.feed_frame(mask=pred, gt=gt)
            iou, bf = ev.conclude()
            out[(vid, int(obj))] = (iou[True], bf[True]) if iou else None
    return out


def test_sav_layout_equals_official_protocol(tmp_path, vb):
    videos = {}
    for i in range(2):
        _, lab = shapes_video(9, 64, 80, seed=10 + i, void=False, appear=3)
        lab[0, :4, :4] = 5                      # an object annotated on the first frame only
        videos[f"v{i}"] = (None, lab)
    make_sav(tmp_path / "sav", videos, step=4, frames=False)
    for name, (_, lab) in videos.items():
        pred = perturb(lab, 7)
        for k in range(1, 6):
            d = tmp_path / "pred" / name / f"{k - 1:03d}"
            d.mkdir(parents=True)
            for t in range(len(lab)):
                save_png(d / f"{4 * t:05d}.png", (pred[t] == k).astype(np.uint8), davis_palette())
    doc = evaluate(tmp_path / "sav", tmp_path / "pred", jobs=2)
    ref = official_sav(vb, tmp_path / "sav/Annotations_6fps", tmp_path / "pred")
    scored = {(s["sequence"], o["object"]): o for s in doc["per_sequence"] for o in s["objects"]}
    assert doc["layout"] == "sav" and sorted(doc["unscored_objects"]) == ["v0/004", "v1/004"]
    assert {k for k, v in ref.items() if v is not None} == set(scored)
    for key, o in scored.items():
        assert abs(100 * o["J-Mean"] - ref[key][0]) < 1e-6 and abs(100 * o["F-Mean"] - ref[key][1]) < 1e-6
    assert scored[("v0", 1)]["frames"] < 7      # frames before it is first seen are left out
    ref_j = np.mean([v[0] for v in ref.values() if v is not None])
    assert abs(100 * doc["global"]["J-Mean"] - ref_j) < 1e-6


# ---- bad input -------------------------------------------------------------------------------

@pytest.fixture
def small(tmp_path):
    _, lab = shapes_video(5, 40, 50, seed=1, void=False, appear=0)
    make_davis(tmp_path / "D", {"s": (None, lab)}, frames=False)
    write_palette_masks(tmp_path / "p" / "s", lab)
    return tmp_path, lab


def test_bad_input_is_one_clear_line(small, capsys):
    root, lab = small
    rc, _, err = cli(capsys, "evaluate", "--gt", root / "p" / "s", "--pred", root / "p")
    assert rc == 2 and "none of the known layouts" in err and "Annotations/480p" in err
    big = np.zeros((41, 50), np.uint8)
    save_png(root / "p" / "s" / "00002.png", big)
    rc, _, err = cli(capsys, "evaluate", "--gt", root / "D", "--pred", root / "p")
    assert rc == 2 and "00002.png is 50x41" in err and "ground truth" in err
    save_png(root / "p" / "s" / "00002.png", np.where(lab[2] == 1, 9, lab[2]).astype(np.uint8))
    rc, _, err = cli(capsys, "evaluate", "--gt", root / "D", "--pred", root / "p")
    assert rc == 2 and "object id(s) 9" in err
    Image.fromarray(lab[2]).save(root / "p" / "s" / "00002.png")       # mode L, not P
    rc, _, err = cli(capsys, "evaluate", "--gt", root / "D", "--pred", root / "p")
    assert rc == 2 and "not an indexed one (mode P)" in err
    os.remove(root / "p" / "s" / "00002.png")
    rc, _, err = cli(capsys, "evaluate", "--gt", root / "D", "--pred", root / "p", "--strict")
    assert rc == 2 and "00002.png is missing" in err
    assert not (root / "p" / "results.json").exists()                    # nothing half-written


def test_missing_prediction_scores_zero_and_is_listed(small, capsys):
    root, lab = small
    os.remove(root / "p" / "s" / "00002.png")
    rc, stdout, err = cli(capsys, "evaluate", "--gt", root / "D", "--pred", root / "p", "--json")
    assert rc == 0 and "missing prediction" in err
    doc = json.loads(stdout)
    assert len(doc["missing_predictions"]) == 1
    obj1 = doc["per_sequence"][0]["objects"][0]
    assert obj1["J-Mean"] == pytest.approx((1 + 0 + 1) / 3)          # frames 1..3; frame 2 empty


def test_missing_ground_truth_frames(tmp_path, capsys):
    frames, lab = shapes_video(5, 40, 50, seed=1, void=False)
    make_davis(tmp_path / "D", {"s": (frames, lab)})
    os.remove(tmp_path / "D/Annotations/480p/s/00003.png")
    write_palette_masks(tmp_path / "p" / "s", lab)
    rc, _, err = cli(capsys, "evaluate", "--gt", tmp_path / "D", "--pred", tmp_path / "p")
    assert rc == 2 and "missing ground-truth frames" in err and "00003" in err
