"""backend="openvino": the image encoder exported to OpenVINO, against PyTorch's encoder."""

from __future__ import annotations

import json
import os
import sys
import threading

import pytest
import torch

from conftest import synthetic_image
from sam2kit import SAM2ImagePredictor, modes
from sam2kit.modes import openvino as openvino_backend
from sam2kit.cli import main
from test_modes import BF16, image_figures, video_figures


@pytest.fixture(scope="module", autouse=True)
def ov_cache(tmp_path_factory):
    """One export cache for the module (each set of weights is exported once)."""
    path = tmp_path_factory.mktemp("openvino-cache")
    old = os.environ.get("SAM2KIT_OPENVINO_CACHE")
    os.environ["SAM2KIT_OPENVINO_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("SAM2KIT_OPENVINO_CACHE")
    else:
        os.environ["SAM2KIT_OPENVINO_CACHE"] = old


def exports(cache) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if p.is_dir() and p.name != "compiled")


def test_fp32_features_and_masks_match_torch(tiny_ckpt):
    img = synthetic_image(180, 240, 3)
    ours = SAM2ImagePredictor.from_pretrained(tiny_ckpt, image_size=512, backend="openvino")
    plain = SAM2ImagePredictor.from_pretrained(tiny_ckpt, image_size=512)
    assert ours.model.encoder_backend is not None and plain.model.encoder_backend is None
    for p in (ours, plain):
        p.set_image(img)
    emb_o, emb_p = ours.get_image_embedding(), plain.get_image_embedding()
    assert emb_o.dtype == torch.float32 and emb_o.shape == emb_p.shape == (1, 256, 32, 32)
    assert float((emb_o - emb_p).norm() / emb_p.norm()) < 1e-5  # f32 in OpenVINO: float noise only
    worst_iou, score = image_figures(tiny_ckpt, {"backend": "openvino"}, img)
    print(f"\nACCURACY openvino fp32 image: min mask IoU {worst_iou:.4f}, max score diff {score:.2e}")
    assert worst_iou >= 0.999 and score <= 1e-4
    frames = [synthetic_image(180, 240, 20 + i) for i in range(4)]
    v = video_figures(tiny_ckpt, {"backend": "openvino"}, frames)
    print(f"ACCURACY openvino fp32 video: min mask IoU {v:.4f}")
    assert v >= 0.999


@pytest.mark.skipif(not BF16, reason="bf16 is offered only on CPUs with native bf16 instructions")
def test_bf16_close_to_fp32(tiny_ckpt):
    worst_iou, score = image_figures(tiny_ckpt, {"backend": "openvino", "precision": "bf16"},
                                     synthetic_image(180, 240, 3))
    print(f"\nACCURACY openvino bf16 image: min mask IoU {worst_iou:.4f}, max score diff {score:.2e}")
    assert worst_iou >= 0.97 and score <= 0.01  # the bounds torch's bf16 is held to
    frames = [synthetic_image(180, 240, 20 + i) for i in range(4)]
    v = video_figures(tiny_ckpt, {"backend": "openvino", "precision": "bf16"}, frames)
    print(f"ACCURACY openvino bf16 video: min mask IoU {v:.4f}")
    assert v >= 0.95


def test_batches_and_threads_give_the_single_image_features(tiny_ckpt):
    ours = SAM2ImagePredictor.from_pretrained(tiny_ckpt, image_size=512, backend="openvino")
    imgs = [synthetic_image(150, 200, 5), synthetic_image(200, 150, 6)]
    single = []
    for img in imgs:
        ours.set_image(img)
        single.append(ours.get_image_embedding())
    ours.set_image_batch(imgs)
    torch.testing.assert_close(ours.get_image_embedding(), torch.cat(single), rtol=0, atol=0)
    # the shared model from several threads at once (one inference request per call)
    got = [None, None]

    def encode(i):
        p = SAM2ImagePredictor(ours.model)
        p.set_image(imgs[i])
        got[i] = p.get_image_embedding()

    threads = [threading.Thread(target=encode, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(got, single):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_export_is_cached_per_weights(tiny_ckpt, ov_cache, tmp_path, monkeypatch):
    SAM2ImagePredictor.from_pretrained(tiny_ckpt, image_size=512, backend="openvino")
    before = exports(ov_cache)
    assert before and all((ov_cache / d / "encoder.bin").is_file() for d in before)
    assert not [p for p in ov_cache.iterdir() if p.name.startswith(".")]  # no half-written export left

    def no_export(*a, **k):
        raise AssertionError("exported again")

    monkeypatch.setattr(torch.export, "export", no_export)
    SAM2ImagePredictor.from_pretrained(tiny_ckpt, image_size=512, backend="openvino")  # from the cache
    assert exports(ov_cache) == before
    sd = torch.load(tiny_ckpt, weights_only=True)["model"]
    sd["image_encoder.neck.convs.0.conv.bias"].add_(0.1)  # other weights: another graph
    other = tmp_path / "other.pt"
    torch.save({"model": sd}, other)
    with pytest.raises(AssertionError, match="exported again"):
        SAM2ImagePredictor.from_pretrained(other, image_size=512, backend="openvino")
    assert exports(ov_cache) == before  # the failed export left nothing behind


def test_errors(tiny_ckpt, tmp_path, monkeypatch, capsys):
    with pytest.raises(ValueError, match="backend must be one of torch, openvino"):
        SAM2ImagePredictor.from_pretrained(tiny_ckpt, backend="onnx")
    with pytest.raises(ValueError, match="not together with compile or quantize"):
        SAM2ImagePredictor.from_pretrained(tiny_ckpt, backend="openvino", quantize="int8")
    with pytest.raises(ValueError, match="not together with compile or quantize"):
        SAM2ImagePredictor.from_pretrained(tiny_ckpt, backend="openvino", compile=True)
    monkeypatch.setattr(modes, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    with pytest.raises(ValueError, match="bf16 is not supported on this CPU"):
        SAM2ImagePredictor.from_pretrained(tiny_ckpt, backend="openvino", precision="bf16")
    monkeypatch.undo()
    img = tmp_path / "photo.png"
    from PIL import Image

    Image.fromarray(synthetic_image(120, 160, 2)).save(img)
    out = tmp_path / "out"
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install 'sam2kit\[openvino\]'"):
        openvino_backend.import_openvino()
    rc = main(["image", str(img), "-o", str(out), "--model", str(tiny_ckpt), "--resolution", "256",
               "--backend", "openvino", "-q"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "sam2kit[openvino]" in err and len(err.splitlines()) == 1 and not out.exists()
    monkeypatch.undo()
    rc = main(["image", str(img), "-o", str(out), "--model", str(tiny_ckpt), "--resolution", "256",
               "--backend", "openvino", "-q"])
    assert rc == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    assert res["backend"] == "openvino" and res["precision"] == "fp32" and len(res["prompts"]) == 9
