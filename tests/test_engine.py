"""One model, many users: threads, session lifecycles, the host process left alone, one loading
path (the shareable engine)."""

from __future__ import annotations

import ast
import dataclasses
import gc
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch

import sam2kit
from conftest import synthetic_image
from sam2kit import (SAM2AutomaticMaskGenerator, SAM2ImagePredictor, SAM2VideoPredictor, SpillLimitError,
                     get_config)
from sam2kit.build import build_model
from sam2kit.video.spill import PREFIX, remove_stale_spill_folders
from small_model import SMALL

SMALL21 = dataclasses.replace(SMALL, name="test-small-2.1", no_obj_embed_spatial=True,
                              add_tpos_enc_to_obj_ptrs=True, proj_tpos_enc_in_obj_ptrs=True,
                              use_signed_tpos_enc_to_obj_ptrs=True)

SRC = Path(sam2kit.__file__).parent


def make_model(size: int = 256):
    torch.manual_seed(0)
    model = build_model(get_config("sam2.1-hiera-tiny", size))
    with torch.no_grad():  # objects present, as with real weights
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(8.0)
    return model


@pytest.fixture(scope="module")
def model():
    return make_model()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, model):
    path = tmp_path_factory.mktemp("ckpt") / "tiny21.pt"
    torch.save({"model": model.state_dict()}, path)
    return path


def moving_frames(n: int, h: int = 96, w: int = 128, shift: int = 0) -> list[np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w]
    frames = []
    for i in range(n):
        img = np.full((h, w, 3), 90, np.uint8)
        img[((xx - 30 - 3 * i - shift) ** 2 + (yy - 48) ** 2) < 250] = (230, 40, 40)
        img[(xx // 8 + yy // 8) % 2 == 0] += 20
        frames.append(img)
    return frames


# ---- many callers on one model ---------------------------------------------------------------

def image_work(model, seed: int):
    """Two rounds of prompts on one picture, the second refining with the first's logits."""
    pred = SAM2ImagePredictor(model)
    pred.set_image(synthetic_image(90, 140, seed))
    out = []
    for k, (x, y) in enumerate([(30, 40), (100, 60), (70, 20)]):
        masks, scores, logits = pred.predict([[x, y]], [1])
        out.append((masks, scores, logits))
        best = logits[np.argmax(scores)][None]
        out.append(pred.predict([[x, y], [x + 10, y + 5]], [1, 0], mask_input=best, multimask_output=False))
    out.append(pred.predict(box=[10, 10, 80, 70]))
    return out


def video_work(predictor, frames, obj_x: int):
    """Clicks, propagation, a correction, a second object, reverse propagation."""
    results = []
    with predictor.init_state(frames) as s:
        s.window = 3  # spill old results to disk too
        results.append(predictor.add_new_points_or_box(s, 0, 1, points=[[obj_x, 48]], labels=[1])[2])
        results += [m for _, _, m in predictor.propagate_in_video(s, progress=False)]
        results.append(predictor.add_new_points_or_box(s, 5, 1, points=[[obj_x + 20, 40]], labels=[0],
                                                       clear_old_points=False)[2])
        results.append(predictor.add_new_points_or_box(s, 3, 2, box=[60, 20, 120, 90])[2])
        results += [m for _, _, m in predictor.propagate_in_video(s, start_frame_idx=6, reverse=True,
                                                                  progress=False)]
    return results


def assert_identical(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        if isinstance(x, tuple):
            assert_identical(x, y)
        elif isinstance(x, torch.Tensor):
            assert torch.equal(x, y)
        else:
            np.testing.assert_array_equal(x, y)


def test_four_threads_on_one_model_equal_serial_work(model):
    """Two image predictors and two video sessions on one model, in four threads at once with
    their steps interleaved, give bit for bit what each gives alone. (One intra-op thread per
    caller, so that the serial and threaded runs also split their matrix products alike.)"""
    videos = SAM2VideoPredictor(model)
    frames_a, frames_b = moving_frames(7), moving_frames(7, shift=12)
    jobs = [lambda: image_work(model, 1), lambda: image_work(model, 2),
            lambda: video_work(videos, frames_a, 30), lambda: video_work(videos, frames_b, 42)]
    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        serial = [job() for job in jobs]
        threaded: list = [None] * 4
        errors = []
        start = threading.Barrier(4)

        def run(i):
            try:
                start.wait()
                threaded[i] = jobs[i]()
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)
        workers = [threading.Thread(target=run, args=(i,)) for i in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    finally:
        torch.set_num_threads(threads_before)
    assert not errors, errors
    for s, t in zip(serial, threaded):
        assert_identical(s, t)


def test_closed_sessions_leave_nothing_in_the_model():
    """50 sessions opened, tracked and closed: the model keeps only what derives from its
    weights (a constant number of entries), and no session's tensors survive it. (A model
    of tiny's structure with narrower layers, for speed.)"""
    model = build_model(SMALL21)
    predictor = SAM2VideoPredictor(model)
    frames = moving_frames(6)

    def one_session():
        s = predictor.init_state(frames)
        s.window = 2
        predictor.add_new_points_or_box(s, 0, 1, points=[[30, 48]], labels=[1])
        for _ in predictor.propagate_in_video(s, progress=False):
            pass
        assert s.memory_cache, "memory attention kept this session's key terms in the session"
        refs = [weakref.ref(s), weakref.ref(s.maskmem_pos)]
        refs += [weakref.ref(t) for entry in s.memory_cache.values() for t in entry[1:]]
        s.close()
        assert not s.memory_cache and s.resident_outputs == 0
        return refs

    one_session()
    entries = model.cache_entries()
    refs = [r for _ in range(50) for r in one_session()]
    gc.collect()
    assert model.cache_entries() == entries
    assert all(r() is None for r in refs)


# ---- session lifecycle -----------------------------------------------------------------------

def test_session_spill_folder_budget_context_and_finalizer(model, tmp_path):
    predictor = SAM2VideoPredictor(model)
    frames = moving_frames(10)
    with predictor.init_state(frames, spill_dir=tmp_path) as s:
        s.window = 2
        assert s.spill.root is None  # made only when something is spilled
        predictor.add_new_points_or_box(s, 0, 1, points=[[30, 48]], labels=[1])
        for _ in predictor.propagate_in_video(s, progress=False):
            pass
        root = s.spill.root
        assert root.parent == tmp_path and root.name.startswith(PREFIX) and root.is_dir()
        per_file = s.spill.nbytes / len(list(root.glob("*.pt")))
        # one frame of one object: low-res logits (64x64 fp32) and memory (64x16x16 bf16)
        assert 16384 + 32768 <= per_file <= 16384 + 32768 + 4096
    assert not root.exists()

    # a budget for about three files: the fourth spill is refused, with nothing half-written
    s = predictor.init_state(frames, spill_dir=tmp_path, spill_limit_bytes=int(3.5 * per_file))
    s.window = 2
    predictor.add_new_points_or_box(s, 0, 1, points=[[30, 48]], labels=[1])
    with pytest.raises(SpillLimitError, match=r"disk budget of .*spill_limit_bytes="):
        for _ in predictor.propagate_in_video(s, progress=False):
            pass
    assert s.spill.nbytes <= s.spill.limit_bytes and len(list(s.spill.root.glob("*.pt"))) == 3
    assert not list(s.spill.root.glob(".*.tmp"))
    root = s.spill.root
    del s
    gc.collect()  # not closed: the finalizer removes the folder
    assert not root.exists()


KILLED_OWNER = """
import os, sys, time, numpy as np, torch
sys.path.insert(0, {tests!r})
from test_engine import make_model, moving_frames
from sam2kit import SAM2VideoPredictor
p = SAM2VideoPredictor(make_model())
s = p.init_state(moving_frames(6), spill_dir={dir!r})
s.window = 1
p.add_new_points_or_box(s, 0, 1, points=[[30, 48]], labels=[1])
for _ in p.propagate_in_video(s, progress=False):
    pass
print(s.spill.root, flush=True)
time.sleep(600)
"""


def test_stale_spill_folders_of_dead_processes_are_removed(model, tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", KILLED_OWNER.format(tests=str(Path(__file__).parent),
                                                                      dir=str(tmp_path))],
                            stdout=subprocess.PIPE, text=True)
    try:
        dead = Path(proc.stdout.readline().strip())
        assert dead.is_dir() and list(dead.glob("*.pt"))
        # while its owner lives, nobody removes it
        live = SAM2VideoPredictor(model).init_state(moving_frames(4), spill_dir=tmp_path)
        assert remove_stale_spill_folders(tmp_path) == [] and dead.is_dir()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        # the next spill folder made here removes it first; this process's own live one stays
        live.spill.save("x.pt", {"t": torch.zeros(3)})
        assert not dead.exists() and live.spill.root.is_dir()
        assert remove_stale_spill_folders(tmp_path) == [] and live.spill.root.is_dir()
        live.close()
    finally:
        proc.kill()
        proc.wait()


def test_a_new_session_clears_stale_folders_first(model, tmp_path):
    stale = tmp_path / f"{PREFIX}12345-abc"
    stale.mkdir()
    (stale / "1-2-3.pt").write_bytes(b"x")
    past = time.time() - 3600
    os.utime(stale, (past, past))  # no lock file and old: its owner died before locking it
    young = tmp_path / f"{PREFIX}12346-def"
    young.mkdir()  # no lock file yet, but just made: perhaps being set up right now
    with SAM2VideoPredictor(model).init_state(moving_frames(4), spill_dir=tmp_path) as s:
        s.spill.save("x.pt", {"t": torch.zeros(3)})
        assert not stale.exists() and young.exists()


# ---- the host process is left alone ----------------------------------------------------------

NOTEBOOK = """
import ctypes, sys
looked_up = []
class Recording(ctypes.CDLL):
    def __getattr__(self, name):
        looked_up.append(name)
        return super().__getattr__(name)
    def __getitem__(self, name):
        looked_up.append(name)
        return super().__getitem__(name)
ctypes.CDLL = Recording
import numpy as np, torch
sys.path.insert(0, {tests!r})
from conftest import synthetic_image
from sam2kit import SAM2ImagePredictor, SAM2VideoPredictor
pred = SAM2ImagePredictor.from_pretrained({ckpt!r}, image_size=256)
pred.set_image(synthetic_image(64, 80))
pred.predict([[20, 20]], [1])
video = SAM2VideoPredictor(pred.model)
with video.init_state([synthetic_image(64, 80, i) for i in range(3)]) as s:
    video.add_new_points_or_box(s, 0, 1, points=[[20, 20]], labels=[1])
    list(video.propagate_in_video(s, progress=False))
import sam2kit.devices as d
print(sorted(set(n for n in looked_up if "mall" in n)), d._allocator_tuned)
"""


def test_a_notebook_host_sees_no_allocator_calls(checkpoint):
    """Loading a model, an image and a video change nothing process-wide: no mallopt, no
    malloc_trim (those are the command line's and the server's, or the host's to call)."""
    code = NOTEBOOK.format(tests=str(Path(__file__).parent), ckpt=str(checkpoint))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[-2] == "[] False"


def test_the_command_line_tunes_the_allocator(tmp_path, checkpoint):
    code = ("import sam2kit.devices as d, sam2kit.cli as c; "
            f"rc = c.main(['image', '-o', {str(tmp_path / 'o')!r}, '--model', {str(checkpoint)!r}, "
            "'--resolution', '256', '--grid', '1x1', '-q']); print(rc, d._allocator_tuned)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    glibc = sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    assert out.stdout.split() == ["0", str(glibc)]


# ---- one loading path --------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [SAM2ImagePredictor, SAM2VideoPredictor, SAM2AutomaticMaskGenerator])
def test_from_pretrained_is_the_same_everywhere(cls, checkpoint):
    obj = cls.from_pretrained(str(checkpoint), image_size=256, quantize="int8")
    model = obj.model if hasattr(obj, "model") else obj.predictor.model
    assert model.image_size == 256 and model.config.name == "sam2.1-hiera-tiny"
    assert any("quantized" in type(m).__module__ for m in model.modules())
    with pytest.raises(TypeError, match="unexpected keyword arguments \\['fill_hole_aera'\\]"):
        cls.from_pretrained(str(checkpoint), image_size=256, fill_hole_aera=8)
    with pytest.raises(TypeError):
        cls(model, no_such_option=1)


def test_video_options_reach_the_constructor(checkpoint):
    pred = SAM2VideoPredictor.from_pretrained(str(checkpoint), image_size=256, fill_hole_area=0,
                                              non_overlap_masks=True)
    assert pred.fill_hole_area == 0 and pred.non_overlap_masks


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}


def test_no_import_cycle_between_loading_and_predictors():
    predictors = {"predictor", "video_predictor", "automatic"}
    assert not {m.lstrip(".") for m in _imports(SRC / "build.py")} & predictors


def test_the_command_line_uses_the_library_for_models_and_prompts():
    """No model-name tables or prompt batching of its own: the jobs it runs (sam2kit.jobs) call
    sam2kit.model_id, sam2kit.load_model and predict_many."""
    common, image = (SRC / "jobs" / "model.py").read_text(), (SRC / "jobs" / "image.py").read_text()
    assert "SIZES" not in (SRC / "cli" / "common.py").read_text()
    assert "sam2kit.model_id(" in common and "sam2kit.load_model(" in common
    assert "from_pretrained" not in common and "SIZES" not in common
    assert "predict_many(" in image and "point_coords=" not in image


def test_model_id_names(checkpoint):
    assert sam2kit.model_id("b+", sam21=True) == "facebook/sam2.1-hiera-base-plus"
    assert sam2kit.model_id(None) == "facebook/sam2-hiera-tiny"
    assert sam2kit.model_id("sam2-hiera-large") == "sam2-hiera-large"
    assert sam2kit.model_id(str(checkpoint)) == str(checkpoint)
    for bad, match in (("huge", "unknown model 'huge'"), ("missing.pt", "does not exist"),
                       ("sam2-hiera-tiny", "SAM 2.0 model")):
        with pytest.raises(ValueError, match=match):
            sam2kit.model_id(bad, sam21=bad == "sam2-hiera-tiny")


# ---- many prompts of one image -----------------------------------------------------------------

def test_predict_many_equals_one_at_a_time(model):
    pred = SAM2ImagePredictor(model)
    pred.set_image(synthetic_image(90, 140, 3))
    prompts = [{"points": [[x, y]], "labels": [1]} for x, y in [(20, 20), (70, 45), (120, 80)]]
    prompts += [{"box": [10, 10, 60, 50]}, {"points": [[30, 30], [50, 40]], "labels": [1, 0],
                                             "box": [5, 5, 90, 80]}, {"box": [50, 20, 130, 85]}]
    seen = []
    many = pred.predict_many(prompts, batch_size=2, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (6, 6) and len(seen) == 4  # 2 + 1 single clicks, 2 boxes, 1 box with points
    for pr, (masks, scores, logits) in zip(prompts, many):
        m1, s1, l1 = pred.predict(point_coords=pr.get("points"), point_labels=pr.get("labels"),
                                  box=pr.get("box"))
        assert masks.shape == m1.shape == (3, 90, 140)
        np.testing.assert_allclose(logits, l1, atol=1e-4)
        np.testing.assert_allclose(scores, s1, atol=1e-5)
        assert (masks == m1).mean() >= 0.999
    with pytest.raises(ValueError, match="prompt 1 has neither points nor a box"):
        pred.predict_many([{"box": [1, 1, 5, 5]}, {}])


# ---- bad input -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [dict(point_coords=[[np.nan, 3]], point_labels=[1]),
                                    dict(point_coords=[[np.inf, 3]], point_labels=[1]),
                                    dict(box=[0, 0, np.nan, 10]),
                                    dict(box=[0, -np.inf, 5, 10])])
def test_image_predictor_refuses_non_finite_coordinates(model, kwargs):
    pred = SAM2ImagePredictor(model)
    pred.set_image(synthetic_image(40, 50))
    with pytest.raises(ValueError, match="NaN or infinite"):
        pred.predict(**kwargs)


@pytest.mark.parametrize("kwargs", [dict(points=[[np.nan, 3]], labels=[1]),
                                    dict(points=[[1, np.inf]], labels=[1]),
                                    dict(box=[0, 0, np.nan, 10])])
def test_video_predictor_refuses_non_finite_coordinates(model, kwargs):
    predictor = SAM2VideoPredictor(model)
    with predictor.init_state(moving_frames(2)) as s:
        with pytest.raises(ValueError, match="NaN or infinite"):
            predictor.add_new_points_or_box(s, 0, 1, **kwargs)
        assert s.obj_ids == [] or all(not o.point_inputs for o in s.objects)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_first_frame_is_named_when_the_folder_is_opened(model, tmp_path, damage):
    from PIL import Image

    for i in range(3):
        Image.fromarray(synthetic_image(48, 64, i)).save(tmp_path / f"{i:05d}.jpg")
    first = tmp_path / "00000.jpg"
    data = first.read_bytes()
    first.write_bytes(b"not a jpeg at all" if damage == "garbage" else data[: len(data) // 3])
    with pytest.raises(ValueError, match=r"cannot read frame image .*00000\.jpg.*damaged.*replace it"):
        SAM2VideoPredictor(model).init_state(str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "sam2kit", "video", str(tmp_path), "-o", str(tmp_path / "o"),
                          "--model", "nonexistent.pt"], capture_output=True, text=True)
    assert out.returncode == 2 and not (tmp_path / "o").exists()


def test_decompression_bombs_are_refused_with_the_limit_and_how_to_raise_it(tmp_path):
    from PIL import Image

    from sam2kit.image.io import ImageReadError, read_image

    bomb = tmp_path / "bomb.png"
    Image.new("L", (12000, 9000)).save(bomb)  # 108 Mpx of zeros: a ~100 kB file
    assert bomb.stat().st_size < 1_000_000
    with pytest.raises(ImageReadError, match=r"12000x9000 = 108,000,000 pixels, over the limit of "
                                             r"89,478,485 pixels.*raise the limit \(max_pixels="):
        read_image(bomb)
    with pytest.raises(ImageReadError, match="over the limit of 1,000 pixels"):
        read_image(bomb, max_pixels=1000)
    out = subprocess.run([sys.executable, "-m", "sam2kit", "image", str(bomb), "-o", str(tmp_path / "o"),
                          "--model", str(bomb)], capture_output=True, text=True)  # (read before the model)
    assert out.returncode == 2 and "108,000,000 pixels" in out.stderr and "--max-pixels" in out.stderr
    assert not (tmp_path / "o").exists()
    code = ("import sam2kit.cli.image as i, sys\n"
            "try:\n    i.load_image(sys.argv[1], 10**6)\nexcept Exception as e:\n    print(type(e).__name__, e)\n"
            "a = i.load_image(sys.argv[1], 2 * 10**8)\nprint(a.shape)")
    out = subprocess.run([sys.executable, "-c", code, str(bomb)], capture_output=True, text=True, check=True)
    first, second = out.stdout.strip().split("\n")
    assert first.startswith("InputError") and "--max-pixels" in first  # (the CLI's CLIError)
    assert second == "(9000, 12000, 3)"  # --max-pixels raised far enough: it opens
