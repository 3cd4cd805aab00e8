"""Model configurations as code: one frozen dataclass, eight official entries.

Every number comes from the reference's YAML files (``sam2/configs/sam2*/sam2*_hiera_*.yaml``).
Numbers that are the same in all eight files and that no caller changes (hidden width 256,
memory width 64, four memory-attention layers, ...) live as defaults here, so each entry only
states what differs. SAM 2.0 and SAM 2.1 differ only in the four flags at the end.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["SAM2Config", "CONFIGS", "HUB_IDS", "get_config"]


@dataclass(frozen=True)
class SAM2Config:
    name: str
    hub_id: str
    checkpoint_file: str
    # Hiera trunk
    embed_dim: int
    num_heads: int
    stages: tuple[int, ...]
    global_att_blocks: tuple[int, ...]
    window_pos_embed_bkg_spatial_size: tuple[int, int]
    window_spec: tuple[int, ...] = (8, 4, 14, 7)
    # input resolution; 512 and 768 work as well as the trained 1024
    image_size: int = 1024
    # widths shared by every official model
    d_model: int = 256
    mem_dim: int = 64
    memory_attention_layers: int = 4
    memory_attention_ffn: int = 2048
    rope_theta: float = 10000.0
    backbone_stride: int = 16
    # tracking
    num_maskmem: int = 7
    max_obj_ptrs_in_encoder: int = 16
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0
    multimask_min_pt_num: int = 0
    multimask_max_pt_num: int = 1
    # SAM 2.1 flags (all off for SAM 2.0)
    no_obj_embed_spatial: bool = False
    add_tpos_enc_to_obj_ptrs: bool = False
    proj_tpos_enc_in_obj_ptrs: bool = False
    use_signed_tpos_enc_to_obj_ptrs: bool = False

    def __post_init__(self):
        if self.image_size % 32 != 0 or self.image_size < 256:
            raise ValueError(
                f"image_size must be a multiple of 32 and at least 256, got {self.image_size} "
                "(the trained size is 1024; 512 and 768 work too)"
            )
        if len(self.stages) != len(self.window_spec):
            raise ValueError("stages and window_spec must have the same length")

    @property
    def is_sam21(self) -> bool:
        return self.no_obj_embed_spatial

    @property
    def backbone_channel_list(self) -> tuple[int, ...]:
        """Channels of the trunk's stages, deepest first (the neck's input order)."""
        return tuple(self.embed_dim * 2**i for i in reversed(range(len(self.stages))))

    @property
    def feature_sizes(self) -> tuple[tuple[int, int], ...]:
        """Spatial sizes of the three feature levels the heads use (strides 4, 8, 16)."""
        s = self.image_size
        return ((s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16))

    def with_image_size(self, image_size: int | None) -> "SAM2Config":
        if image_size is None or image_size == self.image_size:
            return self
        return dataclasses.replace(self, image_size=int(image_size))


_SAM21_FLAGS = dict(
    no_obj_embed_spatial=True,
    add_tpos_enc_to_obj_ptrs=True,
    proj_tpos_enc_in_obj_ptrs=True,
    use_signed_tpos_enc_to_obj_ptrs=True,
)

# (size name, hub file stem, trunk numbers) as in sam2_hiera_{t,s,b+,l}.yaml
_TRUNKS = {
    "tiny": dict(embed_dim=96, num_heads=1, stages=(1, 2, 7, 2), global_att_blocks=(5, 7, 9),
                 window_pos_embed_bkg_spatial_size=(7, 7)),
    "small": dict(embed_dim=96, num_heads=1, stages=(1, 2, 11, 2), global_att_blocks=(7, 10, 13),
                  window_pos_embed_bkg_spatial_size=(7, 7)),
    "base-plus": dict(embed_dim=112, num_heads=2, stages=(2, 3, 16, 3),
                      global_att_blocks=(12, 16, 20), window_pos_embed_bkg_spatial_size=(14, 14)),
    "large": dict(embed_dim=144, num_heads=2, stages=(2, 6, 36, 4), global_att_blocks=(23, 33, 43),
                  window_pos_embed_bkg_spatial_size=(7, 7), window_spec=(8, 4, 16, 8)),
}


def _make_configs() -> dict[str, SAM2Config]:
    out = {}
    for version, flags in (("sam2", {}), ("sam2.1", _SAM21_FLAGS)):
        for size, trunk in _TRUNKS.items():
            name = f"{version}-hiera-{size}"
            out[name] = SAM2Config(
                name=name,
                hub_id=f"facebook/{name}",
                checkpoint_file=f"{version}_hiera_{size.replace('-', '_')}.pt",
                **trunk,
                **flags,
            )
    return out


CONFIGS: dict[str, SAM2Config] = _make_configs()
HUB_IDS: dict[str, str] = {c.hub_id: n for n, c in CONFIGS.items()}


def get_config(name: str, image_size: int | None = None) -> SAM2Config:
    """Look up a model by name (``sam2-hiera-tiny``) or hub id (``facebook/sam2-hiera-tiny``)."""
    key = HUB_IDS.get(name, name)
    if key not in CONFIGS:
        known = ", ".join(CONFIGS)
        raise ValueError(f"unknown model {name!r}; known models: {known}")
    return CONFIGS[key].with_image_size(image_size)

