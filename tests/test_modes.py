"""The speed work: memory attention's rewritten algebra and caches, and the opt-in modes
(bf16, int8, torch.compile) against the fp32 path."""

from __future__ import annotations

import json
import math
import platform
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import synthetic_image
from small_model import SMALL
from sam2kit import SAM2ImagePredictor, SAM2VideoPredictor, modes
from sam2kit.build import build_model
from sam2kit.cli import main
from sam2kit.modeling.memory_attention import MemoryBank, MemoryTokens
from sam2kit.modeling.position_encoding import axial_rope_angles

# bf16 is offered only where the CPU flags name native bf16; the accuracy test also runs where
# torch can emulate it (oneDNN on AVX-512), the refusal forced off for the test alone
BF16 = modes.bf16_supported(torch.device("cpu"))
BF16_EMULATED = not BF16 and bool(torch.backends.mkldnn.is_available()
                                  and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


# ---- memory attention: the rewritten algebra equals the textbook formula -------------------

def plain_rope(x, n):
    """RoPE as SAM 2 writes it: consecutive channel pairs as complex numbers."""
    ang = axial_rope_angles(x.shape[-1], int(math.isqrt(n)), int(math.isqrt(n)))
    xc = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)).contiguous())
    r = n and x.shape[-2] // n
    rot = torch.polar(torch.ones_like(ang), ang).repeat(r, 1)
    return torch.view_as_real(xc * rot).flatten(-2)


def plain_memory_attention(ma, curr, curr_pos, frames, ptrs, ptr_pos):
    """The reference's memory attention written out: keys = RoPE(Wk(memory + pos) + b) with
    the object-pointer tokens not rotated, values = Wv memory + b, one head."""
    memory = torch.cat([f.features for f in frames] + [ptrs], 1)
    memory_pos = torch.cat([f.pos.expand_as(f.features) + f.tpos for f in frames] + [ptr_pos], 1)
    n_ptr = ptrs.shape[1]
    x = curr + 0.1 * curr_pos
    n = x.shape[1]
    for layer in ma.layers:
        t = layer.norm1(x)
        sa = layer.self_attn
        q, k = plain_rope(sa.q_proj(t), n), plain_rope(sa.k_proj(t), n)
        x = x + sa.out_proj(F.scaled_dot_product_attention(q, k, sa.v_proj(t)))
        t = layer.norm2(x)
        ca = layer.cross_attn_image
        q = plain_rope(ca.q_proj(t), n)
        k = ca.k_proj(memory + memory_pos)
        k = torch.cat([plain_rope(k[:, :-n_ptr], n), k[:, -n_ptr:]], 1)
        x = x + ca.out_proj(F.scaled_dot_product_attention(q, k, ca.v_proj(memory)))
        x = x + layer.linear2(F.relu(layer.linear1(layer.norm3(x))))
    return ma.norm(x)


def test_memory_attention_algebra_and_caches():
    torch.manual_seed(0)
    model = build_model(SMALL)
    for p in model.parameters():  # no zero biases: every term of the split keys matters
        p.data.add_(0.05 * torch.randn_like(p))
    ma, tpos = model.memory_attention, model.maskmem_tpos_enc
    n, c, m = 64, SMALL.d_model, SMALL.mem_dim
    curr, curr_pos = torch.randn(1, n, c), torch.randn(1, n, c)
    pos = torch.randn(1, n, m)
    frames = [MemoryTokens(torch.randn(1, n, m), pos, tpos[i].view(-1), {}) for i in (6, 2, 0)]
    caches = [f.cache for f in frames]
    ptrs, ptr_pos = torch.randn(1, 8, m), torch.randn(1, 8, m)
    with torch.inference_mode():
        expected = plain_memory_attention(ma, curr, curr_pos, frames, ptrs, ptr_pos)
        first = ma(curr, curr_pos, MemoryBank(frames, (ptrs, ptr_pos)))
        assert all(len(cache) == SMALL.memory_attention_layers for cache in caches)  # keys kept
        again = ma(curr, curr_pos, MemoryBank(frames, (ptrs, ptr_pos)))  # from the caches
        torch.testing.assert_close(first, expected, atol=2e-5, rtol=1e-5)
        assert torch.equal(first, again)
        # the same memory frame read from another slot: the slot part changes, the cache stays
        moved = [MemoryTokens(f.features, pos, tpos[i].view(-1), f.cache) for f, i in zip(frames, (5, 1, 0))]
        torch.testing.assert_close(ma(curr, curr_pos, MemoryBank(moved, (ptrs, ptr_pos))),
                                   plain_memory_attention(ma, curr, curr_pos, moved, ptrs, ptr_pos),
                                   atol=2e-5, rtol=1e-5)
    # new weights: nothing derived from the old ones is used
    with torch.no_grad():
        ma.layers[0].cross_attn_image.k_proj.weight.mul_(1.5)
        ma.layers[0].self_attn.q_proj.bias.add_(0.3)
    with torch.inference_mode():
        fresh = [MemoryTokens(f.features, pos, f.tpos, {}) for f in frames]
        torch.testing.assert_close(ma(curr, curr_pos, MemoryBank(fresh, (ptrs, ptr_pos))),
                                   plain_memory_attention(ma, curr, curr_pos, frames, ptrs, ptr_pos),
                                   atol=2e-5, rtol=1e-5)


# ---- opt-in modes against fp32 -------------------------------------------------------------

def image_figures(ckpt, mode: dict, img: np.ndarray) -> tuple[float, float]:
    """(lowest mask IoU, largest score difference) of a mode against fp32 on a few prompts."""
    h, w = img.shape[:2]
    prompts = [dict(point_coords=np.array([[w * 0.5, h * 0.5]]), point_labels=np.array([1])),
               dict(point_coords=np.array([[w * 0.3, h * 0.6], [w * 0.8, h * 0.2]]), point_labels=np.array([1, 0])),
               dict(box=np.array([w * 0.2, h * 0.2, w * 0.7, h * 0.9]))]
    out = []
    for kwargs in ({}, mode):
        pred = SAM2ImagePredictor.from_pretrained(ckpt, image_size=512, **kwargs)
        pred.set_image(img)
        res = [pred.predict(**p, multimask_output=True) for p in prompts]
        assert all(m.dtype == np.float32 and s.dtype == np.float32 for m, s, _ in res)
        out.append(res)
    ious = [iou(a > 0, b > 0) for (ma, _, _), (mb, _, _) in zip(*out) for a, b in zip(ma, mb)]
    score = max(float(np.abs(sa - sb).max()) for (_, sa, _), (_, sb, _) in zip(*out))
    return min(ious), score


def video_figures(ckpt, mode: dict, frames: list[np.ndarray]) -> float:
    """Lowest per-frame mask IoU of a mode against fp32 over a short tracking run."""
    runs = []
    for kwargs in ({}, mode):
        pred = SAM2VideoPredictor.from_pretrained(ckpt, image_size=512, **kwargs)
        state = pred.init_state(frames)
        pred.add_new_points_or_box(state, 0, 1, points=[[120, 90]], labels=[1])
        runs.append([m[0, 0].numpy() > 0 for _, _, m in pred.propagate_in_video(state)])
        state.close()
    assert sum(m.any() for m in runs[0]) == len(frames)
    return min(iou(a, b) for a, b in zip(*runs))


@pytest.mark.skipif(not (BF16 or BF16_EMULATED), reason="torch cannot run bf16 on this CPU at all")
def test_bf16_close_to_fp32(tiny_ckpt, monkeypatch):
    if not BF16:  # emulated here (slow, refused to users): accuracy is still what bf16 gives
        monkeypatch.setattr(modes, "bf16_supported", lambda device: True)
    worst_iou, score = image_figures(tiny_ckpt, {"precision": "bf16"}, synthetic_image(180, 240, 3))
    print(f"\nACCURACY bf16 image: min mask IoU {worst_iou:.4f}, max score diff {score:.2e}")
    assert worst_iou >= 0.97 and score <= 0.01
    frames = [synthetic_image(180, 240, 20 + i) for i in range(4)]
    v = video_figures(tiny_ckpt, {"precision": "bf16"}, frames)
    print(f"ACCURACY bf16 video: min mask IoU {v:.4f}")
    assert v >= 0.95


def test_int8_close_to_fp32(tiny_ckpt):
    model = SAM2ImagePredictor.from_pretrained(tiny_ckpt, image_size=512, quantize="int8").model
    quantised = [m for m in model.modules() if type(m) is torch.ao.nn.quantized.dynamic.Linear]
    left = [n for n, m in model.named_modules() if type(m) is torch.nn.Linear]
    assert len(quantised) > 50  # really quantised: all but RoPE attention's query/key projections
    assert all(m.weight().qscheme() == torch.per_channel_affine for m in quantised)  # a scale per row
    assert left and all(n.endswith(("q_proj", "k_proj")) and "memory_attention" in n for n in left)
    worst_iou, score = image_figures(tiny_ckpt, {"quantize": "int8"}, synthetic_image(180, 240, 3))
    print(f"\nACCURACY int8 image: min mask IoU {worst_iou:.4f}, max score diff {score:.2e}")
    assert worst_iou >= 0.95 and score <= 0.01


def test_compile_matches_eager():
    torch.manual_seed(0)
    eager = SAM2ImagePredictor(build_model(SMALL))
    compiled = SAM2ImagePredictor(modes.apply_modes(build_model(SMALL), compile=True))
    compiled.model.load_state_dict(eager.model.state_dict())
    img = synthetic_image(100, 140, 1)
    for p in (eager, compiled):
        p.set_image(img)
    torch.testing.assert_close(compiled.get_image_embedding(), eager.get_image_embedding(), atol=1e-4, rtol=1e-4)
    m1, s1, _ = eager.predict(np.array([[70, 50]]), np.array([1]))
    m2, s2, _ = compiled.predict(np.array([[70, 50]]), np.array([1]))
    assert min(iou(a > 0, b > 0) for a, b in zip(m1, m2)) >= 0.999 and np.abs(s1 - s2).max() < 1e-4
    with torch.inference_mode():  # a model made under inference mode (its weights keep no versions)
        made_here = SAM2ImagePredictor(modes.apply_modes(build_model(SMALL), compile=True))
        made_here.model.load_state_dict(eager.model.state_dict())
        made_here.set_image(img)
    torch.testing.assert_close(made_here.get_image_embedding(), eager.get_image_embedding(), atol=1e-4, rtol=1e-4)


def test_mode_errors(tiny_ckpt, monkeypatch):
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16"):
        SAM2ImagePredictor.from_pretrained(tiny_ckpt, precision="fp16")
    with pytest.raises(ValueError, match="quantize must be None or 'int8'"):
        SAM2ImagePredictor.from_pretrained(tiny_ckpt, quantize="int4")
    monkeypatch.setattr(modes, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_vnni"}))
    assert modes.native_bf16_cpu() is None
    with pytest.raises(ValueError, match="bf16 is not supported on this CPU: .*neither amx_bf16 nor avx512_bf16"):
        SAM2ImagePredictor.from_pretrained(tiny_ckpt, precision="bf16")
    monkeypatch.setattr(modes, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert modes.native_bf16_cpu() == "avx512_bf16" and modes.bf16_supported(torch.device("cpu"))
    monkeypatch.setattr(modes, "cpu_flags", lambda: frozenset({"amx_tile", "amx_bf16", "avx512_bf16"}))
    assert modes.native_bf16_cpu() == "amx_bf16"
    monkeypatch.setattr(modes, "bf16_supported", lambda device: True)
    with pytest.raises(ValueError, match="not both"):
        SAM2ImagePredictor.from_pretrained(tiny_ckpt, precision="bf16", quantize="int8")
    monkeypatch.setattr(modes.shutil, "which", lambda name: None)
    with pytest.raises(ValueError, match="compile=True needs a C.. compiler"):
        SAM2ImagePredictor.from_pretrained(tiny_ckpt, compile=True)


def test_cli_modes(tiny_ckpt, tmp_path, capsys):
    img = tmp_path / "photo.png"
    from PIL import Image

    Image.fromarray(synthetic_image(120, 160, 2)).save(img)
    out = tmp_path / "out"
    rc = main(["image", str(img), "-o", str(out), "--model", str(tiny_ckpt), "--resolution", "256",
               "--int8", "--precision", "bf16", "-q"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "not both" in err and len(err.splitlines()) == 1 and not out.exists()
    rc = main(["image", str(img), "-o", str(out), "--model", str(tiny_ckpt), "--resolution", "256", "--int8", "-q"])
    assert rc == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    assert res["int8"] is True and res["precision"] == "fp32" and len(res["prompts"]) == 9


def test_grid_prompts_as_one_batch_match_one_at_a_time(tiny_ckpt):
    """A 3x3 grid decoded in one call (the decoder runs it in passes of CPU_CHUNK) gives the
    masks of nine separate calls, up to float rounding."""
    pred = SAM2ImagePredictor.from_pretrained(tiny_ckpt, image_size=512)
    img = synthetic_image(240, 320, 6)
    pred.set_image(img)
    grid = np.array([[(c + 0.5) * 320 / 3, (r + 0.5) * 240 / 3] for r in range(3) for c in range(3)])
    masks, scores, low = pred.predict(grid[:, None, :], np.ones((9, 1)), multimask_output=True)
    assert masks.shape == (9, 3, 240, 320) and scores.shape == (9, 3)
    for k, p in enumerate(grid):
        m1, s1, l1 = pred.predict(p[None], np.array([1]), multimask_output=True)
        np.testing.assert_allclose(l1, low[k], atol=1e-5)
        np.testing.assert_allclose(s1, scores[k], atol=1e-6)
        assert (m1 == masks[k]).mean() >= 0.9999


def test_cpu_allocator_tuning():
    """glibc keeps large freed buffers (no mmap per activation) unless turned off."""
    import os
    import subprocess

    code = "from sam2kit.devices import tune_cpu_allocator as t; print(t(), t())"
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "SAM2KIT_MALLOC_TUNING": "0"})
    assert off.stdout.split() == ["False", "False"]
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert on.stdout.split() == [str(glibc)] * 2


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_release_free_memory_returns_heap_holes():
    """Freed buffers pinned between live ones stay resident until released (video calls it)."""
    import subprocess

    code = """
import torch
from sam2kit.devices import release_free_memory, tune_cpu_allocator
tune_cpu_allocator()  # as after loading a model: large buffers come from the heap
def rss():
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1]) // 1024
keep, big = [], []
for i in range(96):
    big.append(torch.ones(2 ** 18))  # 1 MB each
    keep.append(torch.ones(16))      # small live allocations between them
del big
before = rss()
done = release_free_memory()
print(done, before - rss())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "True"
    assert int(out[1]) >= 64, f"only {out[1]} MB of the 96 MB freed went back"
