"""ONNX export and the torch-free runtime (sam2kit.onnx) against our torch predictors and the
reference.

One export per module (tiny SAM 2.1 at 512, random weights in the official format, objects
judged present). Required: image masks agree on >= 99.99% of pixels and scores within 1e-4
(points, boxes, mask inputs, multimask, batches); video over 30 frames (two objects, a
correction, an object added later, reverse propagation; and the editing scenario) agrees on
>= 99.9% of pixels on average and >= 99% on the worst frame; a subprocess where ``import torch``
fails gives the same masks. Per-module max abs errors are printed (run with -s).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REFERENCE_YAML, run_reference, synthetic_image
from parity.video_scenarios import SCENARIOS, run_steps, unbits
from test_parity_image import IMAGES, _cases, _ours
from test_parity_video import sample_frames

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from sam2kit import SAM2ImagePredictor, SAM2VideoPredictor, build_sam2  # noqa: E402
from sam2kit.onnx import OnnxImagePredictor, OnnxVideoPredictor, export_onnx  # noqa: E402

NAME, SIZE, NUM_FRAMES = "sam2.1-hiera-tiny", 512, 30


def random_checkpoint(name: str, path: Path, seed: int) -> Path:
    """Random weights of model ``name`` in the official format at ``path``, every tensor
    perturbed, objects judged present."""
    from sam2kit.build import build_model
    from sam2kit.configs import get_config

    torch.manual_seed(0)
    sd = build_model(get_config(name)).state_dict()
    gen = torch.Generator().manual_seed(seed)
    for v in sd.values():
        if v.is_floating_point():
            v.add_(0.02 * torch.randn(v.shape, generator=gen))
    sd["sam_mask_decoder.pred_obj_score_head.layers.2.bias"].fill_(8.0)
    torch.save({"model": sd}, path)
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """Random tiny SAM 2.1 weights in the official format."""
    return random_checkpoint(NAME, tmp_path_factory.mktemp("onnx_ckpt") / "tiny21.pt", seed=1)


@pytest.fixture(scope="module")
def model(ckpt):
    return build_sam2(NAME, checkpoint=ckpt, image_size=SIZE)


@pytest.fixture(scope="module")
def exported(ckpt, tmp_path_factory):
    """The export, made by the command line (sam2kit export)."""
    from sam2kit.cli import main

    out = tmp_path_factory.mktemp("onnx") / "export"
    code = main(["export", "--model", NAME, "--checkpoint", str(ckpt), "--resolution", str(SIZE),
                 "-o", str(out), "-q"])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx_frames")
    for i, f in enumerate(sample_frames(NUM_FRAMES)):
        Image.fromarray(f).save(d / f"{i:05d}.jpg", quality=95)
    return d


# ---- the export ---------------------------------------------------------------------------------

def test_manifest_describes_the_files(exported):
    import onnx

    man = json.loads((exported / "manifest.json").read_text())
    assert man["opset"] == 17 and man["dtype"] == "float32" and man["resolution"] == SIZE
    assert man["model"]["name"] == NAME and man["model"]["add_tpos_enc_to_obj_ptrs"] is True
    assert set(man["files"]) == {"image_encoder", "prompt_decoder", "memory_attention", "memory_encoder"}
    import hashlib
    for name, entry in man["files"].items():
        path = exported / entry["file"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"], name
        graph = onnx.load(str(path), load_external_data=False)
        assert [i.name for i in graph.graph.input] == [i["name"] for i in entry["inputs"]], name
        assert [o.name for o in graph.graph.output] == [o["name"] for o in entry["outputs"]], name
        values = [n.attribute[0].t.SerializeToString() for n in graph.graph.node
                  if n.op_type == "Constant" and n.attribute[0].name == "value"]
        assert len(values) == len(set(values)), f"{name}: a constant table is written more than once"
    ma = {i["name"]: i["shape"] for i in man["files"]["memory_attention"]["inputs"]}
    assert ma["memory"][0] == "M" and ma["obj_ptrs"][0] == "P" and ma["memory_slots"] == ["M"]
    pd = {i["name"]: i["shape"] for i in man["files"]["prompt_decoder"]["inputs"]}
    assert pd["point_coords"][:2] == ["B", "N"]
    errors = man["max_abs_error_vs_eager"]
    print("\nONNX per-module max abs error vs eager (export-time example inputs):")
    for name, per_output in errors.items():
        print(f"  {name}: " + ", ".join(f"{k} {v:.2e}" for k, v in per_output.items()))
        assert max(per_output.values()) < 1e-4, (name, per_output)


def test_export_refuses_a_non_empty_folder(model, tmp_path):
    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="overwrite"):
        export_onnx(model, tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "user data"
    assert [p.name for p in tmp_path.parent.iterdir() if p.name.startswith(f".{tmp_path.name}-")] == []


def test_export_command_refuses_bad_input(ckpt, tmp_path, capsys):
    from sam2kit.cli import main

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    assert main(["export", "--checkpoint", str(ckpt), "-o", str(tmp_path / "full")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["export", "--model", NAME, "--checkpoint", str(tmp_path / "nope.pt"), "-o",
                 str(tmp_path / "new")]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "new").exists()


def test_modules_on_real_inputs(model, exported):
    """The image encoder and the decoder on a real picture: max abs error of the ONNX graphs
    against the eager model along the predictor's path."""
    tp, op = SAM2ImagePredictor(model), OnnxImagePredictor(exported)
    img = synthetic_image(480, 640, 1)
    tp.set_image(img)
    op.set_image(img)
    emb = float(np.abs(tp.get_image_embedding().numpy() - op.get_image_embedding()).max())
    hr = [float(np.abs(a.numpy() - b).max()) for a, b in zip(tp._features.high_res, op._features[0].high_res)]
    _, _, lt = tp.predict([[300, 200]], [1])
    _, _, lo = op.predict([[300, 200]], [1])
    dec = float(np.abs(lt - lo).max())
    print(f"\nONNX on a real picture: image_embed {emb:.2e}, high_res {hr[0]:.2e}/{hr[1]:.2e}, "
          f"decoder low-res logits {dec:.2e}")
    assert emb < 1e-4 and max(hr) < 1e-4 and dec < 1e-4


# ---- images -----------------------------------------------------------------------------------

def _compare_image(name, ours, ref, worst):
    masks, scores, low = ours
    r_masks, r_scores, r_low = ref
    assert masks.shape == r_masks.shape and scores.shape == r_scores.shape and low.shape == r_low.shape, name
    eq = float((masks == r_masks).mean())
    ds = float(np.abs(scores - r_scores).max())
    assert eq >= 0.9999, (name, eq)
    assert ds <= 1e-4, (name, ds)
    worst["eq"], worst["score"] = min(worst["eq"], eq), max(worst["score"], ds)
    worst["logit"] = max(worst["logit"], float(np.abs(low - r_low).max()))


def _compare_image_runs(ours, ref, cases, label):
    worst = {"eq": 1.0, "score": 0.0, "logit": 0.0}
    for case in cases:
        o, r = ours[case["name"]], ref[case["name"]]
        if isinstance(o[0], list):
            for i in range(len(o[0])):
                _compare_image(f"{case['name']}[{i}]", tuple(np.asarray(x[i]) for x in o),
                               tuple(np.asarray(x[i]) for x in r), worst)
        else:
            _compare_image(case["name"], o, tuple(np.asarray(x) for x in r), worst)
    print(f"\nONNX image vs {label}: min mask agreement {worst['eq']:.6f}, max |score diff| "
          f"{worst['score']:.2e}, max |low-res logit diff| {worst['logit']:.2e}")


def test_image_matches_torch(model, exported):
    cases = _cases()
    ours = _ours(OnnxImagePredictor(exported), cases)
    ref = _ours(SAM2ImagePredictor(model), cases)
    _compare_image_runs(ours, ref, cases, "sam2kit torch")


@pytest.mark.parity
def test_image_matches_reference(ckpt, exported, reference_python, tmp_path):
    cases = _cases()
    job, out = tmp_path / "job.pt", tmp_path / "out.pt"
    torch.save(dict(config=REFERENCE_YAML[NAME], checkpoint=str(ckpt), image_size=SIZE,
                    images=IMAGES, cases=cases), job)
    run_reference(reference_python, "ref_image.py", job, out)
    ref = torch.load(out, weights_only=False)
    ref = {k: tuple(v) if not isinstance(v[0], list) else v for k, v in ref.items()}
    _compare_image_runs(_ours(OnnxImagePredictor(exported), cases), ref, cases, "the reference")


def test_image_runtime_errors(exported, tmp_path):
    op = OnnxImagePredictor(exported)
    with pytest.raises(RuntimeError, match="set_image"):
        op.predict([[1, 1]], [1])
    op.set_image(synthetic_image(64, 80, 2))
    with pytest.raises(ValueError, match="point_labels"):
        op.predict([[1, 1]], [5])
    with pytest.raises(ValueError, match="mask_input must have shape"):
        op.predict(mask_input=np.zeros((1, 64, 64), np.float32))
    from sam2kit.onnx import OnnxModelError
    with pytest.raises(OnnxModelError, match="manifest.json"):
        OnnxImagePredictor(tmp_path)


# ---- video ------------------------------------------------------------------------------------

def _onnx_scores(state):
    return {o.obj_id: {f: float(r.object_score_logits.reshape(-1)[0]) for f, r in {**o.non_cond, **o.cond}.items()}
            for o in state.objects}


def _torch_scores(session):
    return {o.obj_id: {f: float(r.object_score_logits.reshape(-1)[0]) for f, r in {**o.non_cond, **o.cond}.items()}
            for o in session.objects}


def _compare_video(ours, ref, label):
    assert len(ours) == len(ref)
    eqs, worst_score = [], 0.0
    for step, (o, r) in enumerate(zip(ours, ref)):
        assert o["obj_ids"] == r["obj_ids"], (label, step)
        assert sorted(o["frames"]) == sorted(r["frames"]), (label, step)
        for f in r["frames"]:
            mo, mr = unbits(o["frames"][f]), unbits(r["frames"][f])
            assert mo.shape == mr.shape
            eqs += [float((mo[k] == mr[k]).mean()) for k in range(mr.shape[0])]
        assert o["scores"].keys() == r["scores"].keys()
        for obj_id, per_frame in r["scores"].items():
            assert per_frame.keys() == o["scores"][obj_id].keys()
            worst_score = max([worst_score] + [abs(o["scores"][obj_id][f] - v) for f, v in per_frame.items()])
    mean, worst = float(np.mean(eqs)), float(np.min(eqs))
    print(f"\nONNX video vs sam2kit torch, {label}: {len(eqs)} frame-object masks, mean agreement "
          f"{mean:.6f}, worst {worst:.6f}, max |object score diff| {worst_score:.2e}")
    assert mean >= 0.999 and worst >= 0.99, (label, mean, worst)
    return mean, worst


@pytest.mark.parametrize("scenario", ["main", pytest.param("editing", marks=pytest.mark.slow)])
def test_video_matches_torch(model, exported, frames_dir, scenario):
    op = OnnxVideoPredictor(exported)
    state = op.init_state(str(frames_dir))
    steps = SCENARIOS[scenario](state.video_height, state.video_width, state.num_frames)
    ours = run_steps(op, state, steps, _onnx_scores)
    assert any(r.spill_path is not None for o in state.objects for r in o.non_cond.values()), \
        "far results should have been spilled (flat memory)"
    state.close()
    tp = SAM2VideoPredictor(model)
    with tp.init_state(str(frames_dir)) as session:
        ref = run_steps(tp, session, steps, _torch_scores)
    _compare_video(ours, ref, scenario)


# ---- without PyTorch --------------------------------------------------------------------------

TORCH_FREE = r"""
import sys
sys.modules["torch"] = None  # any `import torch` now fails
import numpy as np
from sam2kit.onnx import OnnxImagePredictor, OnnxVideoPredictor
folder, frames, out = sys.argv[1:4]
img = np.load(out + ".in.npy")
p = OnnxImagePredictor(folder)
p.set_image(img)
masks, scores, _ = p.predict([[30, 40]], [1])
v = OnnxVideoPredictor(folder)
state = v.init_state(frames)
v.add_new_points_or_box(state, 0, 1, points=[[200, 150]], labels=[1])
v.add_new_points_or_box(state, 2, 2, box=[20, 30, 200, 180])
video = np.stack([m > 0 for _, _, m in v.propagate_in_video(state, max_frame_num_to_track=5)])
assert sys.modules["torch"] is None and not [m for m in sys.modules if m.startswith("torch.")]
np.savez(out, masks=masks, scores=scores, video=video)
"""


def test_runtime_runs_without_torch(exported, frames_dir, tmp_path):
    img = synthetic_image(120, 160, 5)
    out = str(tmp_path / "res")
    np.save(out + ".in.npy", img)
    src = str(Path(__file__).parent.parent / "src")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", TORCH_FREE, str(exported), str(frames_dir), out],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(out + ".npz")
    p = OnnxImagePredictor(exported)
    p.set_image(img)
    masks, scores, _ = p.predict([[30, 40]], [1])
    np.testing.assert_array_equal(got["masks"], masks)
    np.testing.assert_array_equal(got["scores"], scores)
    v = OnnxVideoPredictor(exported)
    state = v.init_state(str(frames_dir))
    v.add_new_points_or_box(state, 0, 1, points=[[200, 150]], labels=[1])
    v.add_new_points_or_box(state, 2, 2, box=[20, 30, 200, 180])
    video = np.stack([m > 0 for _, _, m in v.propagate_in_video(state, max_frame_num_to_track=5)])
    np.testing.assert_array_equal(got["video"], video)
    assert video.shape == (6, 2, 1, *sample_frames(1)[0].shape[:2]) and video.any()


# ---- the command line on the export -------------------------------------------------------------

def _masks_of(folder: Path, pattern: str) -> dict[str, np.ndarray]:
    return {p.relative_to(folder).as_posix(): np.asarray(Image.open(p)) > 127
            for p in sorted(folder.glob(pattern))}


def _agreement(ours: dict, ref: dict) -> list[float]:
    assert ours.keys() == ref.keys() and ours
    return [float((ours[k] == ref[k]).mean()) for k in ref]


def test_predict_many_matches_one_at_a_time(exported, model):
    """predict_many (written once for both predictors) on the ONNX runtime: batched prompts give
    what one call each gives, and what the torch predictor's predict_many gives."""
    img = synthetic_image(300, 400, 3)
    prompts = [{"points": [[50 + 30 * k, 60 + 20 * k]], "labels": [1]} for k in range(5)]
    prompts += [{"points": None, "labels": None, "box": [10, 20, 200 + 10 * k, 150]} for k in range(2)]
    prompts += [{"points": [[120, 90], [60, 60]], "labels": [1, 0], "box": [40, 30, 300, 250]}]
    op, tp = OnnxImagePredictor(exported), SAM2ImagePredictor(model)
    op.set_image(img)
    tp.set_image(img)
    calls = []
    many = op.predict_many(prompts, batch_size=3, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (len(prompts), len(prompts)) and len(calls) == 4  # 5 clicks in 2 batches, boxes, mixed
    for pr, (masks, scores, low) in zip(prompts, many):
        m1, s1, l1 = op.predict(pr["points"], pr["labels"], pr.get("box"))
        assert float((masks == m1).mean()) >= 0.9999 and np.abs(scores - s1).max() <= 1e-5
        assert np.abs(low - l1).max() <= 1e-3
    for (masks, scores, _), (tm, ts, _) in zip(many, tp.predict_many(prompts)):
        assert float((masks == tm).mean()) >= 0.9999 and np.abs(scores - ts).max() <= 1e-4
    with pytest.raises(ValueError, match="prompt 0 has neither points nor a box"):
        op.predict_many([{"points": None}])


def test_image_command_on_the_export(ckpt, exported, tmp_path):
    """`sam2kit image --onnx DIR` writes what the PyTorch model's run writes (masks agree on
    >= 99.99% of pixels, scores within 1e-4) and says which runtime made it."""
    from sam2kit.cli import main

    photo = tmp_path / "photo.png"
    Image.fromarray(synthetic_image(360, 480, 4)).save(photo)
    prompts = ["--point", "120,90", "--point", "300,200:0", "--box", "60,40,400,300"]
    assert main(["image", str(photo), "--onnx", str(exported), "-o", str(tmp_path / "onnx"), "-q", *prompts]) == 0
    assert main(["image", str(photo), "--model", NAME, "--checkpoint", str(ckpt), "--resolution", str(SIZE),
                 "-o", str(tmp_path / "torch"), "-q", *prompts]) == 0
    assert main(["image", str(photo), "--backend", "onnx", "--onnx", str(exported), "--grid", "2x2",
                 "-o", str(tmp_path / "grid-onnx"), "-q"]) == 0
    assert main(["image", str(photo), "--model", NAME, "--checkpoint", str(ckpt), "--resolution", str(SIZE),
                 "--grid", "2x2", "-o", str(tmp_path / "grid-torch"), "-q"]) == 0
    for a, b in (("onnx", "torch"), ("grid-onnx", "grid-torch")):
        eqs = _agreement(_masks_of(tmp_path / a, "mask_*.png"), _masks_of(tmp_path / b, "mask_*.png"))
        assert min(eqs) >= 0.9999, (a, eqs)
        ro, rt = (json.loads((tmp_path / d / "results.json").read_text()) for d in (a, b))
        assert ro["backend"] == "onnx" and ro["onnx"]["providers"] == ["CPUExecutionProvider"]
        assert ro["model_config"] == NAME and ro["resolution"] == SIZE and rt["backend"] == "torch"
        for po, pt in zip(ro["prompts"], rt["prompts"]):
            assert po["chosen_candidate"] == pt["chosen_candidate"]
            assert np.abs(np.subtract(po["candidate_scores"], pt["candidate_scores"])).max() <= 1e-4
    assert len(_masks_of(tmp_path / "grid-onnx", "mask_*.png")) == 4


def test_video_command_on_the_export(ckpt, exported, frames_dir, tmp_path):
    """`sam2kit video --onnx DIR` on a frame folder: two objects (one on a later frame), the
    same masks as the PyTorch model's run (>= 99.9% on average, >= 99% on the worst frame)."""
    from sam2kit.cli import main

    prompts = ["--point", "0:200,150", "--box", "3:20,30,200,180@2", "--max-frames", "8"]
    assert main(["video", str(frames_dir), "--onnx", str(exported), "-o", str(tmp_path / "onnx"), "-q",
                 *prompts]) == 0
    assert main(["video", str(frames_dir), "--model", NAME, "--checkpoint", str(ckpt), "--resolution",
                 str(SIZE), "-o", str(tmp_path / "torch"), "-q", *prompts]) == 0
    ours, ref = (_masks_of(tmp_path / d, "masks/[0-9]*/*.png") for d in ("onnx", "torch"))
    assert len(ref) == 16  # 8 frames x 2 objects
    eqs = _agreement(ours, ref)
    assert np.mean(eqs) >= 0.999 and min(eqs) >= 0.99, eqs
    ro, rt = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("onnx", "torch"))
    assert ro["backend"] == "onnx" and ro["tracking"]["complete"] and len(ro["frames"]) == 8
    for fo, ft in zip(ro["frames"], rt["frames"]):
        for oo, ot in zip(fo["objects"], ft["objects"]):
            if ot["object_score"] is not None:
                assert abs(oo["object_score"] - ot["object_score"]) <= 1e-3
    assert (tmp_path / "onnx" / "overlay.mp4").stat().st_size > 0


@pytest.mark.parametrize("argv, message", [
    (["image", "--backend", "onnx"], "give that folder with --onnx DIR"),
    (["image", "--onnx", "{tmp}/missing"], "does not exist"),
    (["image", "--onnx", "{tmp}"], "holds no manifest.json"),
    (["image", "--onnx", "{export}", "--precision", "bf16"], "--precision bf16 does not apply to an ONNX export"),
    (["image", "--onnx", "{export}", "--model", "small", "--int8"], "--model, --int8 do not apply"),
    (["image", "--onnx", "{export}", "--resolution", "1024"], f"was made at {SIZE} px"),
    (["image", "--onnx", "{export}", "--auto"], "automatic masks (--auto) run on the PyTorch model only"),
    (["image", "--onnx", "{export}", "--device", "mps"], "use cpu, auto or cuda"),
    (["video", "--onnx", "{export}", "--follow", "{tmp}"], "a live source"),
])
def test_onnx_options_refused(exported, tmp_path, capsys, argv, message):
    """Options an export cannot honour are refused up front: exit 2, one line naming the fix,
    no output folder."""
    from sam2kit.cli import main

    argv = [a.format(tmp=tmp_path, export=exported) for a in argv] + ["-o", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_sam2_0_exports_and_tracks(tmp_path_factory, frames_dir):
    """A SAM 2.0 model (no temporal encoding on object pointers: its memory attention graph takes
    no obj_ptr_offsets) exports, and its ONNX runtime tracks as the torch model does."""
    from sam2kit.cli import main

    name, size = "sam2-hiera-tiny", 256
    tmp = tmp_path_factory.mktemp("onnx20")
    random_checkpoint(name, tmp / "tiny20.pt", seed=2)
    assert main(["export", "--model", name, "--checkpoint", str(tmp / "tiny20.pt"), "--resolution", str(size),
                 "-o", str(tmp / "export"), "-q"]) == 0
    man = json.loads((tmp / "export" / "manifest.json").read_text())
    assert man["model"]["add_tpos_enc_to_obj_ptrs"] is False
    inputs = [i["name"] for i in man["files"]["memory_attention"]["inputs"]]
    assert "obj_ptr_offsets" not in inputs and "obj_ptrs" in inputs
    assert max(e for per in man["max_abs_error_vs_eager"].values() for e in per.values()) < 1e-4
    op = OnnxVideoPredictor(tmp / "export")
    tp = SAM2VideoPredictor(build_sam2(name, checkpoint=tmp / "tiny20.pt", image_size=size))
    results = []
    for pred in (op, tp):
        state = pred.init_state(str(frames_dir))
        pred.add_new_points_or_box(state, 0, 1, points=[[200, 150]], labels=[1])
        pred.add_new_points_or_box(state, 2, 2, box=[20, 30, 200, 180])
        results.append(np.stack([np.asarray(m if isinstance(m, np.ndarray) else m.numpy()) > 0
                                 for _, _, m in pred.propagate_in_video(state, max_frame_num_to_track=7)]))
        state.close()
    eqs = [float((a == b).mean()) for a, b in zip(*[r.reshape(-1, *r.shape[-2:]) for r in results])]
    assert results[0].shape == results[1].shape and results[0].any()
    assert np.mean(eqs) >= 0.999 and min(eqs) >= 0.99, eqs
