"""Video tracking parity with the reference (sam2==1.1.0), the same weights in both.

The shared checkpoint has the object-score head's output bias raised so that objects are
judged present (random weights otherwise judge every object absent and every mask is empty).
Required per frame and object: at least 99.5% of mask pixels equal, object-score logits
within 1e-3. Frames: the first 12 of the bundled Big Buck Bunny clip, as JPEG files read by
both implementations. The exact pass runs the default kernels (SAM2KIT_TUNING=off); the tuned
pass runs the editing scenario with tuning on and, over its sets, every other candidate kernel.
"""

from __future__ import annotations

from importlib.resources import files

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REFERENCE_YAML
from parity.video_scenarios import SCENARIOS, run_steps, unbits
from reference_cache import In, Job, Out
from sam2kit import build_sam2_video_predictor
from tuned_kernels import N_SETS, assert_used, candidate_set, tuned

pytestmark = pytest.mark.parity
NUM_FRAMES = 12
OBJ_BIAS = 8.0


def sample_frames(n: int) -> list[np.ndarray]:
    import av

    with av.open(str(files("sam2kit") / "assets" / "sample_video.mp4")) as c:
        out = []
        for frame in c.decode(video=0):
            out.append(frame.to_ndarray(format="rgb24"))
            if len(out) == n:
                return out
    raise AssertionError("sample video too short")


@pytest.fixture(scope="module")
def jpeg_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("frames")
    for i, f in enumerate(sample_frames(NUM_FRAMES)):
        Image.fromarray(f).save(d / f"{i:05d}.jpg", quality=95)
    return d


def ours_scores(session):
    out = {}
    for obj in session.objects:
        frames = {**obj.non_cond, **obj.cond}
        out[obj.obj_id] = {f: float(o.object_score_logits.reshape(-1)[0]) for f, o in frames.items()}
    return out


def run_ours(name, ckpt, size, frames, scenario):
    predictor = build_sam2_video_predictor(name, checkpoint=ckpt, image_size=size)
    state = predictor.init_state(str(frames))
    steps = SCENARIOS[scenario](state.video_height, state.video_width, state.num_frames)
    records = run_steps(predictor, state, steps, ours_scores)
    state.close()
    return records


def compare(ours, ref, label):
    assert len(ours) == len(ref)
    worst_eq, worst_score, checked, present = 1.0, 0.0, 0, 0
    for step, (o, r) in enumerate(zip(ours, ref)):
        assert o["obj_ids"] == r["obj_ids"], (label, step)
        assert sorted(o["frames"]) == sorted(r["frames"]), (label, step)
        for f in r["frames"]:
            mo, mr = unbits(o["frames"][f]), unbits(r["frames"][f])
            assert mo.shape == mr.shape, (label, step, f)
            for k in range(mr.shape[0]):
                eq = (mo[k] == mr[k]).mean()
                worst_eq = min(worst_eq, eq)
                present += bool(mr[k].any())
                checked += 1
                assert eq >= 0.995, (label, step, f, k, eq)
        assert o["scores"].keys() == r["scores"].keys(), (label, step)
        for obj_id, per_frame in r["scores"].items():
            assert per_frame.keys() == o["scores"][obj_id].keys(), (label, step, obj_id)
            for f, v in per_frame.items():
                d = abs(o["scores"][obj_id][f] - v)
                worst_score = max(worst_score, d)
                assert d <= 1e-3, (label, step, obj_id, f, d)
    assert present > checked // 2, "most masks should be non-empty for the comparison to mean something"
    print(f"\nPARITY video {label}: {checked} frame-object masks, min agreement {worst_eq:.6f}, "
          f"max |object score diff| {worst_score:.2e}, non-empty {present}/{checked}")


@pytest.mark.parametrize("name,size,scenario", [
    ("sam2-hiera-tiny", 512, "main"),
    ("sam2.1-hiera-tiny", 512, "main"),
    ("sam2.1-hiera-tiny", 512, "editing"),
    ("sam2-hiera-tiny", 1024, "main"),
])
def test_video_matches_reference(name, size, scenario, jpeg_dir, reference, reference_checkpoint, tmp_path):
    _check_against_reference(name, size, scenario, jpeg_dir, reference, reference_checkpoint, tmp_path,
                             f"{name}@{size} {scenario}")


@pytest.mark.parametrize("kernels", range(N_SETS), ids=lambda k: f"set{k}")
def test_tuned_video_matches_reference(kernels, jpeg_dir, reference, reference_checkpoint, tmp_path, monkeypatch):
    """The exact test's editing scenario (three objects, a mask prompt, prompts on two frames,
    clearing, removing, reverse propagation; a third of the main scenario's frames to track) and
    tolerances, sam2.1-hiera-tiny at 512, with SAM2KIT_TUNING=on and the kernel choices of
    candidate set ``kernels`` (tests/tuned_kernels.py: over the sets, every non-default
    candidate, memory attention's three among them) instead of the defaults, against the
    reference outputs of the exact test (the same cache entry)."""
    choices = candidate_set(kernels)
    with tuned(choices, tmp_path, monkeypatch):
        _check_against_reference("sam2.1-hiera-tiny", 512, "editing", jpeg_dir, reference, reference_checkpoint,
                                 tmp_path, f"sam2.1-hiera-tiny@512 editing, tuned {choices}")
        # (the video predictor decodes one object at a time: prompts_per_pass is never asked)
        assert_used(choices, ("linear", "memory_attention"))


def _check_against_reference(name, size, scenario, jpeg_dir, reference, reference_checkpoint, tmp_path, label):
    ckpt = reference_checkpoint(name, seed=1, obj_bias=OBJ_BIAS)
    out = tmp_path / "out.pt"
    reference.run("ref_video.py", Job(dict(config=REFERENCE_YAML[name], checkpoint=In(ckpt), image_size=size,
                                           frames_dir=In(jpeg_dir), scenario=scenario)), Out(out))
    ref = torch.load(out, weights_only=False)
    ours = run_ours(name, ckpt, size, jpeg_dir, scenario)
    compare(ours, ref, label)
