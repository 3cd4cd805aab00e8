"""A small random SAM 2 configuration for fast unit tests (shapes and wiring, not numbers)."""

from sam2kit.configs import SAM2Config

SMALL = SAM2Config(
    name="test-small", hub_id="test/small", checkpoint_file="small.pt",
    embed_dim=8, num_heads=1, stages=(1, 2, 2, 1), global_att_blocks=(4,),
    window_pos_embed_bkg_spatial_size=(4, 4), window_spec=(4, 2, 2, 2),
    image_size=256, d_model=32, mem_dim=16, memory_attention_layers=2, memory_attention_ffn=64,
)
