"""`sovit7`, `sovit10`, `sovit14`, `sovit19`: the original So-ViT-N architectures, trained from scratch.

A ResNet-style convolutional visual-token stem, the T2T-ViT-7/10/14/19 transformer widths (without
the T2T module), a fixed 1-D sinusoidal position table and the So-ViT head of `methods.sovit`
(SV:src/so_vit.py, src/model/visualTokens.py, src/model/vitBlock.py at c2d076e). The transformer is
timm's VisionTransformer with the stem as its `embed_layer`, so `forward_features` gives the
final-norm tokens exactly as on the shared backbone.

Differences from the released code (write-up §1.1, §3.1):

- the stem's last bottleneck always has stride 2 and a projection shortcut, so any input size that
  is a multiple of 16 gives (S/16)² tokens. The original's has stride `img_size // 112`, with a
  projection only when that is 2: from 224 to 335 px it is this network (S/16 tokens per side);
  from 336 px (stride 3, no projection) its residual shapes differ and it crashes; from 112 to
  223 px (stride 1) it gives S/8 tokens per side (14 x 14 at 112, here 7 x 7); below 112 (stride 0)
  it fails;
- each variant is an immutable config: the original mutates module-level dicts, so building a
  second model in one process raises or silently loses its dropout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import Any, ClassVar, Mapping

import torch
from timm.layers import trunc_normal_
from timm.models.resnet import Bottleneck
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from bench.errors import UsageError
from methods.backbone import BackboneConfig
from methods.base import COMMON_OPTIONS
from methods.registry import register_method
from methods.sovit import HEAD_OPTIONS, SoViTAdapterBase, SoViTClassifier, build_head, maybe_sync_batchnorm

STEM_STRIDE = 16


@dataclass(frozen=True)
class SoViTArch:
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    head_dims: tuple[int, int]  # d1 x d2 of the second-order head
    head_dropout: float  # Dropout on the flattened second-order feature (0 = none)
    weight_decay: float  # AdamW weight decay of the ImageNet recipe (SV:So_ViT_N.sh)


ARCHS: Mapping[str, SoViTArch] = MappingProxyType({
    "sovit7": SoViTArch(256, 7, 4, 2.0, (48, 24), 0.0, 0.03),  # SV:src/so_vit.py:161-177
    "sovit10": SoViTArch(256, 10, 4, 2.0, (48, 24), 0.0, 0.03),  # :143-159
    "sovit14": SoViTArch(384, 14, 6, 3.0, (64, 48), 0.5, 0.05),  # :132-141 (module defaults :19-55)
    "sovit19": SoViTArch(448, 19, 7, 3.0, (96, 48), 0.5, 0.05),  # :115-130
})


def stem_bottleneck(inplanes: int) -> Bottleneck:
    """ResNet v1.5 bottleneck 64 -> 256, stride 2 in the 3x3 conv, projection shortcut.

    Main-path BNs with eps 1e-3 / momentum 0.01, the shortcut BN with PyTorch defaults
    (SV:src/model/visualTokens.py:9-55); timm's module names match the original's.
    """
    shortcut = nn.Sequential(nn.Conv2d(inplanes, 256, kernel_size=1, stride=2, bias=False), nn.BatchNorm2d(256))
    return Bottleneck(inplanes, 64, stride=2, downsample=shortcut,
                      norm_layer=partial(nn.BatchNorm2d, eps=1e-3, momentum=0.01))


class ConvTokenStem(nn.Module):
    """So-ViT's visual-token embedding: 3x3 conv (with bias, no BN/ReLU), 3x3/2 max-pool, three
    stride-2 bottlenecks, 1x1 transition conv to the width; `[B, 3, S, S] -> [B, (S/16)², C]`.

    Takes timm's `embed_layer` keywords; PyTorch's default init, as in the original.
    """

    def __init__(self, img_size: int = 224, patch_size: int = STEM_STRIDE, in_chans: int = 3, embed_dim: int = 384,
                 token_dim: int = 64, **_: Any):  # **_: PatchEmbed keywords (bias, dynamic_img_pad) without use here
        super().__init__()
        if img_size % STEM_STRIDE:
            raise UsageError(f"img_size {img_size} is not a multiple of {STEM_STRIDE} (the So-ViT stem's stride)")
        self.img_size = (img_size, img_size)
        self.patch_size = (STEM_STRIDE, STEM_STRIDE)
        self.grid_size = (img_size // STEM_STRIDE, img_size // STEM_STRIDE)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.stem = nn.Sequential(nn.Conv2d(in_chans, token_dim, kernel_size=3, padding=1),
                                  nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        self.stage = nn.Sequential(stem_bottleneck(token_dim), stem_bottleneck(256), stem_bottleneck(256))
        self.transition = nn.Conv2d(256, embed_dim, kernel_size=1)

    def feat_ratio(self, as_scalar: bool = True) -> int:
        return STEM_STRIDE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.transition(self.stage(self.stem(x))).flatten(2).transpose(1, 2)


def sinusoid_table(n_position: int, dim: int) -> torch.Tensor:
    """`[1, n_position, dim]` table: sin on even, cos on odd channels of pos / 10000^(2*(j//2)/dim).

    The T2T-ViT table So-ViT uses (SV:src/model/vitBlock.py:70-80), computed in float64 like numpy.
    """
    position = torch.arange(n_position, dtype=torch.float64)[:, None]
    exponent = 2 * torch.div(torch.arange(dim), 2, rounding_mode="floor").double() / dim
    angles = position / torch.pow(10000.0, exponent)
    table = torch.where(torch.arange(dim) % 2 == 0, torch.sin(angles), torch.cos(angles))
    return table.float().unsqueeze(0)


def create_sovit(arch: SoViTArch, num_classes: int, img_size: int = 224, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.1) -> VisionTransformer:
    """The So-ViT-N trunk as a timm VisionTransformer (its `head` is the class-token classifier)."""
    vit = VisionTransformer(
        img_size=img_size,
        patch_size=STEM_STRIDE,
        embed_layer=ConvTokenStem,
        num_classes=num_classes,
        global_pool="token",
        embed_dim=arch.embed_dim,
        depth=arch.depth,
        num_heads=arch.num_heads,
        mlp_ratio=arch.mlp_ratio,
        qkv_bias=False,
        norm_layer=nn.LayerNorm,  # eps 1e-5 (timm's default LayerNorm has 1e-6)
        pos_drop_rate=drop_rate,
        proj_drop_rate=drop_rate,  # attention projection and both MLP dropouts, as in the original
        attn_drop_rate=0.0,
        drop_rate=0.0,
        drop_path_rate=drop_path_rate,  # linear 0 -> rate over the blocks, as in the original
    )
    with torch.no_grad():
        vit.pos_embed.copy_(sinusoid_table(vit.pos_embed.shape[1], arch.embed_dim))
    vit.pos_embed.requires_grad_(False)  # fixed, but a Parameter like the original's (counted in params)
    trunc_normal_(vit.cls_token, std=0.02)
    return vit


def scratch_recipe(weight_decay: float) -> dict[str, Any]:
    """The ImageNet-1K from-scratch recipe of SV:So_ViT_N.sh + main.py, as far as `Recipe` can say it.

    AdamW lr 1e-3 at 8 GPUs x 64 = 512 (not rescaled), no gradient clipping, label smoothing 0.1,
    224 crop out of 256 (timm's crop_pct .875). Not expressible (see README): 310 epochs with
    5 warm-up epochs from 1e-6 and min lr 1e-5, RandomResizedCrop, RandAugment, random erasing,
    mixup/cutmix, EMA.
    """
    return {"optimizer": "adamw", "lr": 1e-3, "weight_decay": weight_decay, "batch_size": 64, "img_size": 224,
            "resize_size": 256, "clip_grad": 0.0, "label_smoothing": 0.1, "schedule": "cosine"}


class SoViTScratch(SoViTAdapterBase):
    """One original So-ViT-N: its own trunk (only `img_size` is taken from the preset's backbone)."""

    arch: ClassVar[SoViTArch]
    family = "sovit_scratch"  # cards' `recipes.sovit` holds the fine-tuning recipe of the `sovit` head
    in_all = False  # from scratch, a conv stem at full resolution: too slow for the CPU demo

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        arch = ARCHS[cls.name]
        cls.arch = arch
        cls.summary = (f"original So-ViT-{arch.depth} from scratch: conv token stem, {arch.embed_dim} wide, "
                       f"{arch.depth} blocks, head {arch.head_dims[0]}x{arch.head_dims[1]}")
        cls.options = {**COMMON_OPTIONS, **HEAD_OPTIONS, "dropout": arch.head_dropout, "sync_bn": False,
                       "drop_path_rate": 0.1, "drop_rate": 0.0}
        cls.recipe = scratch_recipe(arch.weight_decay)

    def check_options(self, options: Mapping[str, Any]) -> None:
        super().check_options(options)
        for key in ("drop_path_rate", "drop_rate"):
            if not 0.0 <= options[key] < 1.0:
                raise UsageError(f"bad options for {self.name}: {key} must be in [0, 1) (got {options[key]})")

    def check_backbone(self, backbone: BackboneConfig) -> None:
        if backbone.img_size % STEM_STRIDE:
            multiple = STEM_STRIDE * max(1, math.floor(backbone.img_size / STEM_STRIDE))
            raise UsageError(f"{self.name}: img_size {backbone.img_size} is not a multiple of {STEM_STRIDE} "
                             f"(the conv stem's stride); use e.g. --img-size {multiple}")

    def build(self, num_classes: int, backbone: BackboneConfig, options, recipe) -> nn.Module:
        vit = create_sovit(self.arch, num_classes, backbone.img_size, options["drop_rate"], options["drop_path_rate"])
        head = build_head(options, self.arch.embed_dim, num_classes, self.arch.head_dims)
        model = SoViTClassifier(vit, head, options["cls_logits"], recipe.label_smoothing)
        return maybe_sync_batchnorm(model, options["sync_bn"])


@register_method
class SoViT7(SoViTScratch):
    name = "sovit7"


@register_method
class SoViT10(SoViTScratch):
    name = "sovit10"


@register_method
class SoViT14(SoViTScratch):
    name = "sovit14"


@register_method
class SoViT19(SoViTScratch):
    name = "sovit19"
