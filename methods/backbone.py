"""The shared ViT backbone: timm's VisionTransformer configured like the reference code.

The FFVT/TransFG/Mix-ViT/RAMS-Trans code (jeonsworld ViT-pytorch lineage) puts dropout after the
embeddings and inside the MLP only: none after the attention projection and none on attention
probabilities. The classification head starts at zero (`zero_head=True` in the originals).
"""

from __future__ import annotations

from dataclasses import dataclass

from timm.models.vision_transformer import VisionTransformer
from torch import nn

from bench.errors import UsageError


@dataclass(frozen=True)
class BackboneConfig:
    img_size: int
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    drop_rate: float = 0.1  # embeddings and MLP (reference placement)

    def __post_init__(self) -> None:
        if self.img_size % self.patch_size:
            raise UsageError(
                f"img_size {self.img_size} is not a multiple of the patch size {self.patch_size}; "
                f"use a multiple of {self.patch_size}"
            )
        if self.embed_dim % self.num_heads:
            raise UsageError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")

    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2


def create_vit(cfg: BackboneConfig, num_classes: int) -> VisionTransformer:
    """A timm ViT with the reference dropout placement and a zero-initialised head."""
    model = VisionTransformer(
        img_size=cfg.img_size,
        patch_size=cfg.patch_size,
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio,
        num_classes=num_classes,
        qkv_bias=True,
        global_pool="token",
        pos_drop_rate=cfg.drop_rate,
        proj_drop_rate=cfg.drop_rate,  # drives both MLP dropouts (and attn.proj_drop, zeroed below)
        attn_drop_rate=0.0,
        drop_rate=0.0,
        drop_path_rate=0.0,
    )
    for block in model.blocks:
        block.attn.proj_drop = nn.Dropout(0.0)  # reference: no dropout after the attention projection
    zero_head(model.head)
    return model


def zero_head(head: nn.Module) -> None:
    if isinstance(head, nn.Linear):
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
