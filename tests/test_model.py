"""Unit tests of the model on small random configs: shapes, wiring, keys of every config."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from small_model import SMALL
from sam2kit.build import _expected_shapes, build_model, identify_config
from sam2kit.configs import CONFIGS, get_config
from sam2kit.modeling.sam2 import SAM2Model

# Parameters only the video tracker reads (memory encoder/attention, object pointers).
VIDEO_ONLY_PREFIXES = ("memory_attention.", "memory_encoder.", "maskmem_tpos_enc", "no_mem_pos_enc",
                       "no_obj_ptr", "mask_downsample.", "obj_ptr_proj.", "obj_ptr_tpos_proj.",
                       "no_obj_embed_spatial")


def test_eight_official_configs():
    assert sorted(CONFIGS) == sorted(
        f"{v}-hiera-{s}" for v in ("sam2", "sam2.1") for s in ("tiny", "small", "base-plus", "large"))
    tiny, large = CONFIGS["sam2-hiera-tiny"], CONFIGS["sam2.1-hiera-large"]
    assert (tiny.embed_dim, tiny.num_heads, tiny.stages, tiny.global_att_blocks) == (96, 1, (1, 2, 7, 2), (5, 7, 9))
    assert (large.embed_dim, large.num_heads, large.stages, large.window_spec) == (144, 2, (2, 6, 36, 4), (8, 4, 16, 8))
    assert CONFIGS["sam2-hiera-base-plus"].window_pos_embed_bkg_spatial_size == (14, 14)
    assert tiny.backbone_channel_list == (768, 384, 192, 96)
    for name, cfg in CONFIGS.items():
        sam21 = name.startswith("sam2.1")
        assert cfg.no_obj_embed_spatial == cfg.add_tpos_enc_to_obj_ptrs == cfg.proj_tpos_enc_in_obj_ptrs \
            == cfg.use_signed_tpos_enc_to_obj_ptrs == sam21
        assert cfg.hub_id == f"facebook/{name}"
        assert cfg.checkpoint_file == name.replace("-hiera-", "_hiera_").replace("base-plus", "base_plus") + ".pt"
    assert get_config("facebook/sam2-hiera-small") is CONFIGS["sam2-hiera-small"]
    assert get_config("sam2-hiera-tiny", image_size=512).image_size == 512
    with pytest.raises(ValueError, match="unknown model 'sam3'.*sam2-hiera-tiny"):
        get_config("sam3")
    with pytest.raises(ValueError, match="multiple of 32"):
        get_config("sam2-hiera-tiny", image_size=500)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_config_has_distinct_keys_and_is_identified(name):
    shapes = _expected_shapes(CONFIGS[name])
    fake = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    assert identify_config(fake) is CONFIGS[name]
    sam21_keys = {"no_obj_embed_spatial", "obj_ptr_tpos_proj.weight", "obj_ptr_tpos_proj.bias"}
    assert (sam21_keys <= set(shapes)) == name.startswith("sam2.1")


def test_official_key_counts():
    # numbers of tensors and parameters in the reference's state dicts (sam2==1.1.0)
    assert len(_expected_shapes(CONFIGS["sam2-hiera-tiny"])) == 468
    assert len(_expected_shapes(CONFIGS["sam2.1-hiera-tiny"])) == 471
    with torch.device("meta"):
        n = sum(p.numel() for p in SAM2Model(CONFIGS["sam2-hiera-tiny"]).state_dict().values())
    assert n == 38_946_242


@pytest.mark.parametrize("size", [256, 384, 512])
def test_shapes_at_several_sizes(size):
    cfg = dataclasses.replace(SMALL, image_size=size)
    model = build_model(cfg)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        feats = model.encode_image(x)
        h = size // 16
        assert feats.vision_features.shape == (2, 32, h, h)
        assert feats.high_res[0].shape == (2, 4, 4 * h, 4 * h)
        assert feats.high_res[1].shape == (2, 8, 2 * h, 2 * h)
        assert feats.vision_pos.shape == (2, 32, h, h)
        emb = model.image_embedding(feats)[:1]
        pts = (torch.rand(3, 2, 2) * size, torch.tensor([[1, 0], [1, 1], [2, 3]]))
        for multi, m in ((True, 3), (False, 1)):
            out = model.decode_masks(emb, tuple(f[:1] for f in feats.high_res), pts, None, multi)
            assert out.masks.shape == (3, m, 4 * h, 4 * h)
            assert out.iou.shape == (3, m)
            assert out.object_score_logits.shape == (3, 1)
            assert torch.isfinite(out.masks).all() and ((out.iou >= 0) & (out.iou <= 1)).all()
        mask_in = torch.randn(3, 1, 4 * h, 4 * h)
        out = model.decode_masks(emb, tuple(f[:1] for f in feats.high_res), pts, mask_in, True)
        assert out.masks.shape == (3, 3, 4 * h, 4 * h)


def test_every_image_path_parameter_is_used():
    """A backward pass through encode + decode reaches every parameter but the video-only ones."""
    model = build_model(SMALL).train(False)
    x = torch.randn(1, 3, 256, 256)
    feats = model.encode_image(x)
    emb = model.image_embedding(feats)
    pts = (torch.tensor([[[30.0, 40.0], [100.0, 120.0], [10.0, 10.0], [200.0, 220.0]]]),
           torch.tensor([[1, 0, 2, 3]]))
    loss = 0
    for multi in (True, False):
        out = model.decode_masks(emb, feats.high_res, pts, torch.randn(1, 1, 64, 64), multi)
        loss = loss + out.masks.sum() + out.iou.sum() + out.object_score_logits.sum()
    out = model.decode_masks(emb, feats.high_res, pts, None, True)
    loss = loss + out.masks.sum()
    # the single-mask token is chosen only where its mask is stable: force that once
    model.sam_mask_decoder.stability_thresh = -1.0
    out = model.decode_masks(emb, feats.high_res, pts, None, False)
    loss = loss + out.masks.sum()
    loss.backward()
    unused = {n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0}
    unexpected = {n for n in unused if not n.startswith(VIDEO_ONLY_PREFIXES)}
    assert not unexpected, unexpected
    assert any(n.startswith("memory_attention.") for n in unused)


def test_build_does_not_load_random_weights_silently(tmp_path, monkeypatch):
    """build_sam2 without a checkpoint goes to the hub and fails clearly when offline."""
    import huggingface_hub.constants as hc

    import sam2kit

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(sam2kit.CheckpointNotFoundError, match="sam2_hiera_tiny.pt.*offline"):
        sam2kit.build_sam2("sam2-hiera-tiny")


@pytest.mark.parametrize("size", [512, 768])
def test_official_tiny_at_other_sizes(size):
    model = build_model(get_config("sam2.1-hiera-tiny", image_size=size))
    with torch.no_grad():
        feats = model.encode_image(torch.randn(1, 3, size, size))
        h = size // 16
        assert feats.vision_features.shape == (1, 256, h, h)
        out = model.decode_masks(model.image_embedding(feats), feats.high_res,
                                 (torch.tensor([[[size / 2, size / 3]]]), torch.tensor([[1]])), None, True)
    assert out.masks.shape == (1, 3, 4 * h, 4 * h) and torch.isfinite(out.masks).all()
