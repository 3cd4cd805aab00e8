"""Checkpoint loading: strict, safe, and with errors that name the cause."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from small_model import SMALL
from sam2kit import CheckpointError, CheckpointNotFoundError
from sam2kit.build import build_model, load_checkpoint

SMALL21 = dataclasses.replace(SMALL, name="test-small-2.1", no_obj_embed_spatial=True,
                              add_tpos_enc_to_obj_ptrs=True, proj_tpos_enc_in_obj_ptrs=True,
                              use_signed_tpos_enc_to_obj_ptrs=True)


def _save(tmp_path, config, name="ckpt.pt", seed=0):
    torch.manual_seed(seed)
    model = build_model(config)
    path = tmp_path / name
    torch.save({"model": model.state_dict()}, path)
    return model, path


def test_loads_exact_weights(tmp_path):
    model, path = _save(tmp_path, SMALL)
    loaded = load_checkpoint(SMALL, path)
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    assert loaded.pixel_mean.device.type == "cpu" and not loaded.training
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(x).vision_features, model.encode_image(x).vision_features)


def test_loaded_at_other_image_size(tmp_path):
    _, path = _save(tmp_path, SMALL)
    model = load_checkpoint(dataclasses.replace(SMALL, image_size=512), path)
    assert model.image_size == 512 and model.sam_prompt_encoder.image_embedding_size == (32, 32)


def test_sam21_checkpoint_given_to_sam20_config(tmp_path):
    _, path = _save(tmp_path, SMALL21)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(SMALL, path)
    msg = str(e.value)
    assert "unexpected keys" in msg and "no_obj_embed_spatial" in msg
    assert "SAM 2.1 checkpoint given to a SAM 2.0 config" in msg


def test_sam20_checkpoint_given_to_sam21_config(tmp_path):
    _, path = _save(tmp_path, SMALL)
    with pytest.raises(CheckpointError, match="missing keys.*SAM 2.0 checkpoint given to a SAM 2.1"):
        load_checkpoint(SMALL21, path)


def test_other_size(tmp_path):
    _, path = _save(tmp_path, dataclasses.replace(SMALL, embed_dim=16))
    with pytest.raises(CheckpointError, match="another shape.*different model size"):
        load_checkpoint(SMALL, path)


def test_partial_state_dict(tmp_path):
    model = build_model(SMALL)
    sd = model.state_dict()
    sd.pop("sam_mask_decoder.iou_token.weight")
    torch.save({"model": sd}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="1 missing keys.*iou_token.*truncated or partial"):
        load_checkpoint(SMALL, tmp_path / "partial.pt")


def test_truncated_file(tmp_path):
    _, path = _save(tmp_path, SMALL)
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot read checkpoint.*truncated download"):
        load_checkpoint(SMALL, tmp_path / "cut.pt")


def test_not_official_format(tmp_path):
    model = build_model(SMALL)
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="expected a dict with a 'model' state dict"):
        load_checkpoint(SMALL, tmp_path / "bare.pt")


def test_pickled_code_is_refused(tmp_path):
    torch.save({"model": {"x": torch.zeros(1)}, "extra": dataclasses.replace(SMALL)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(SMALL, tmp_path / "evil.pt")


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        load_checkpoint(SMALL, tmp_path / "nope.pt")


def test_devices():
    from sam2kit.devices import resolve_device

    assert resolve_device("cpu").type == "cpu"
    auto = resolve_device("auto")
    if torch.cuda.is_available():
        assert auto.type == "cuda"
    else:
        assert auto.type in ("cpu", "mps")
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device|unsupported device"):
        resolve_device("tpu7")
