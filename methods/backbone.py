"""The shared ViT backbone: timm's VisionTransformer configured like the reference code.

The FFVT/TransFG/Mix-ViT/RAMS-Trans code (jeonsworld ViT-pytorch lineage) puts dropout after the
embeddings and inside the MLP only: none after the attention projection and none on attention
probabilities. The classification head starts at zero, as FFVT and Mix-ViT read their
`zero_head=True`; TransFG stores the flag without reading it and RAMS-Trans never zeroes, so those
adapters restore PyTorch's default `Linear` init (their `head_init` option).

Public API:

- `BackboneConfig`: geometry (any image size that is a multiple of the patch size), dropout,
  `extra_tokens` (prefix tokens after the class token: RAMS-Trans' second class token, timm
  `reg_tokens`), `hybrid_layers` (ResNetV2 stage depths of a hybrid stem; ``(3, 4, 9)`` is
  R50+ViT-B/16) and `hybrid_stem` (`methods.resnet_stem`: the released code's ResNetV2 by default,
  or timm's TF-"same" one), `patch_stride` (overlapping patches: TransFG's `split='overlap'`), `pretrained`
  (a `PretrainedFile` or None) and `pos_embed_resize`.
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
from timm.layers import HybridEmbed, PatchEmbed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from bench.errors import UsageError
from methods.pretrained import LoadReport, PretrainedFile, check_resize_mode, load_pretrained, plan_load
from methods.resnet_stem import HYBRID_STEMS


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
    hybrid_stem: str = "released"  # which ResNetV2 (methods.resnet_stem): released (jeonsworld port) or timm
    patch_stride: int = 0  # stride of the patch convolution; 0 = patch_size (non-overlapping patches)
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
        if not 0 <= self.patch_stride <= self.patch_size:
            raise UsageError(f"patch_stride must be between 1 and the patch size {self.patch_size} "
                             f"(0 = non-overlapping), got {self.patch_stride}")
        if self.hybrid_stem not in HYBRID_STEMS:
            raise UsageError(f"hybrid_stem must be one of {', '.join(HYBRID_STEMS)}, got {self.hybrid_stem!r}")
        if self.patch_stride and self.hybrid_layers:
            raise UsageError("overlapping patches (patch_stride) need the linear patch embedding, not a hybrid stem")
        check_resize_mode(self.pos_embed_resize)

    @property
    def stride(self) -> int:
        return self.patch_stride or self.patch_size

    @property
    def grid_size(self) -> int:
        """Patches per side: (S - P) // stride + 1, i.e. S / P without overlap."""
        return (self.img_size - self.patch_size) // self.stride + 1

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
        if not self.patch_stride:
            del ident["patch_stride"]  # added later: the ids of non-overlapping backbones stay as they were
        if not self.hybrid_layers:
            del ident["hybrid_stem"]  # likewise for backbones without a ResNet stem
        return ident


class OverlapPatchEmbed(PatchEmbed):
    """timm's `PatchEmbed` with a convolution stride below the kernel (TransFG's overlapping split).

    The kernel is unchanged, so a checkpoint's patch embedding loads as is; only the grid grows,
    to (S - P) // stride + 1 per side (37 x 37 at 448 px, patch 16, stride 12), and the position
    embedding with it.
    """

    def __init__(self, *args: Any, stride: int, **kwargs: Any):
        super().__init__(*args, **kwargs)
        conv = self.proj
        self.proj = nn.Conv2d(conv.in_channels, conv.out_channels, kernel_size=conv.kernel_size, stride=stride,
                              bias=conv.bias is not None)
        self.stride = stride
        self.grid_size = tuple((s - p) // stride + 1 for s, p in zip(self.img_size, self.patch_size))
        self.num_patches = self.grid_size[0] * self.grid_size[1]


def build_vit(cfg: BackboneConfig, num_classes: int) -> VisionTransformer:
    """A randomly initialised timm ViT with the reference dropout placement and a zero head."""
    hybrid = bool(cfg.hybrid_layers)
    if hybrid:
        embed_layer = partial(HybridEmbed, backbone=HYBRID_STEMS[cfg.hybrid_stem](cfg.hybrid_layers))
    elif cfg.patch_stride:
        embed_layer = partial(OverlapPatchEmbed, stride=cfg.patch_stride)
    else:
        embed_layer = PatchEmbed
    model = VisionTransformer(
        img_size=cfg.img_size,
        patch_size=1 if hybrid else cfg.patch_size,
        embed_layer=embed_layer,
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


HEAD_INITS = ("torch", "zero")  # a method's classifier: PyTorch's default Linear init, or zeros


def zero_head(head: nn.Module) -> None:
    if isinstance(head, nn.Linear):
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
