"""The shared ViT backbone: timm's VisionTransformer configured like the reference code.

The FFVT/TransFG/Mix-ViT/RAMS-Trans code (jeonsworld ViT-pytorch lineage) puts dropout after the
embeddings and inside the MLP only: none after the attention projection and none on attention
probabilities. The classification head starts at zero (`zero_head=True` in the originals).

Public API:

- `BackboneConfig`: geometry (any image size that is a multiple of the patch size), dropout,
  `extra_tokens` (prefix tokens after the class token: RAMS-Trans' second class token, timm
  `reg_tokens`), `hybrid_layers` (ResNetV2 stage depths of a hybrid stem; ``(3, 4, 9)`` is
  R50+ViT-B/16), `pretrained` (a `PretrainedFile` or None) and `pos_embed_resize`.
  `identity()` is what enters a cell id (the weights' sha256, not their path).
- `create_vit(cfg, num_classes)`: the model, weights loaded when `cfg.pretrained` is set (the
  `LoadReport` is left on it as `.pretrained_report`), head zeroed. `build_vit(cfg, num_classes)`
  builds without loading; `check_pretrained(cfg)` runs the load checks on a `meta`-device model.
- `embed_tokens(vit, images)`: patch + position embedding with dropout, ``[B, N, D]``, for
  adapters that run the blocks themselves.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import torch
from timm.layers import HybridEmbed, PatchEmbed, StdConv2dSame
from timm.models.resnetv2 import ResNetV2
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from bench.errors import UsageError
from methods.pretrained import LoadReport, PretrainedFile, check_resize_mode, load_pretrained, plan_load


@dataclass(frozen=True)
class BackboneConfig:
    img_size: int
    patch_size: int = 16  # for a hybrid: the stem's total stride
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    drop_rate: float = 0.1  # embeddings and MLP (reference placement)
    extra_tokens: int = 0  # prefix tokens after the class token, each with its own position entry
    hybrid_layers: tuple[int, ...] = ()  # ResNetV2 stage depths; () = linear patch embedding
    pretrained: PretrainedFile | None = None
    pos_embed_resize: str = "bilinear"  # how a checkpoint's position grid is resampled (see methods.pretrained)

    def __post_init__(self) -> None:
        if self.img_size % self.patch_size:
            raise UsageError(
                f"img_size {self.img_size} is not a multiple of the patch size {self.patch_size}; "
                f"use a multiple of {self.patch_size}"
            )
        if self.embed_dim % self.num_heads:
            raise UsageError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.extra_tokens < 0:
            raise UsageError(f"extra_tokens must be >= 0, got {self.extra_tokens}")
        if self.hybrid_layers and self.patch_size != self.hybrid_stride:
            raise UsageError(f"a ResNetV2 stem with {len(self.hybrid_layers)} stages has stride {self.hybrid_stride}, "
                             f"but patch_size is {self.patch_size}")
        check_resize_mode(self.pos_embed_resize)

    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    @property
    def num_prefix_tokens(self) -> int:
        return 1 + self.extra_tokens

    @property
    def hybrid_stride(self) -> int:
        """Stem /4, then every stage after the first halves the resolution."""
        return 2 ** (len(self.hybrid_layers) + 1)

    def identity(self) -> dict[str, Any]:
        """The fields that decide what a run learns: the weights by content (sha256), not by path."""
        ident = asdict(self)
        ident["pretrained"] = self.pretrained.sha256 if self.pretrained else None
        return ident


def hybrid_stem(layers: tuple[int, ...]) -> nn.Module:
    """The BiT ResNetV2 of timm's `vit_base_r50_s16_*` (TF-"same" padding, as the Google weights)."""
    return ResNetV2(layers=layers, num_classes=0, global_pool="", in_chans=3, preact=False, stem_type="same",
                    conv_layer=partial(StdConv2dSame, eps=1e-8))


def build_vit(cfg: BackboneConfig, num_classes: int) -> VisionTransformer:
    """A randomly initialised timm ViT with the reference dropout placement and a zero head."""
    hybrid = bool(cfg.hybrid_layers)
    model = VisionTransformer(
        img_size=cfg.img_size,
        patch_size=1 if hybrid else cfg.patch_size,
        embed_layer=partial(HybridEmbed, backbone=hybrid_stem(cfg.hybrid_layers)) if hybrid else PatchEmbed,
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio,
        num_classes=num_classes,
        qkv_bias=True,
        reg_tokens=cfg.extra_tokens,
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


def create_vit(cfg: BackboneConfig, num_classes: int) -> VisionTransformer:
    """`build_vit`, then the checkpoint of `cfg.pretrained` if any (the head stays zero)."""
    model = build_vit(cfg, num_classes)
    if cfg.pretrained is not None:
        model.pretrained_report = load_pretrained(model, cfg.pretrained, cfg.pos_embed_resize)
    return model


def check_pretrained(cfg: BackboneConfig) -> LoadReport | None:
    """Run every load check of `cfg.pretrained` against a `meta`-device backbone (no weights allocated)."""
    if cfg.pretrained is None:
        return None
    with torch.device("meta"):
        model = build_vit(cfg, num_classes=1)
    return plan_load(model.state_dict(), cfg.pretrained, cfg.pos_embed_resize)[1]


def embed_tokens(vit: VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    """Images -> ``[B, prefix + patches, D]`` tokens entering the first block (what timm's
    `forward_features` does before `blocks`)."""
    x = vit.patch_embed(images)
    x = vit._pos_embed(x)
    x = vit.patch_drop(x)
    return vit.norm_pre(x)


def zero_head(head: nn.Module) -> None:
    if isinstance(head, nn.Linear):
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
