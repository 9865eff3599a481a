"""The BiT ResNetV2 stems of hybrid (R50+ViT) backbones, by name (`HYBRID_STEMS`).

Both are timm's `ResNetV2` (post-activation bottlenecks, weight-standardised convolutions,
GroupNorm), so a Google R50+ViT-B/16 `.npz` loads into either under the same names; they differ in
padding and constants, which changes the features by a relative L2 of about 1 on the same weights:

- ``released`` (default): the ResNetV2 of the jeonsworld ViT-pytorch port that the released
  PyTorch code uses (MixViT `models/modeling_resnet.py`): symmetric PyTorch padding (7x7/2 pad 3,
  3x3 pad 1), a 3x3/2 max-pool *without* padding (a 111x111 map after it at 448 px, not 112),
  weight standardisation (w - mean) / sqrt(var + 1e-5), GroupNorm(32 groups, eps 1e-6) in the root
  and the units, and a projection-shortcut GroupNorm with one group per channel and eps 1e-5.
- ``timm``: timm's `vit_base_r50_s16_*` stem, the layout of the JAX code that trained the Google
  checkpoint: TF-"same" padding (asymmetric at stride 2) in the convolutions and the max-pool, and
  32-group shortcut norms; timm's constants are (w - mean) / sqrt(var + 1e-8) and GroupNorm eps 1e-5
  (JAX: (w - mean) / (std + 1e-5), eps 1e-6), a difference of rounding size, not of layout.

At every multiple of 16 both give S/16 x S/16 features after three stages (28 x 28 at 448 px).
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Mapping

from timm.layers import GroupNormAct, StdConv2d, StdConv2dSame
from timm.models.resnetv2 import ResNetV2
from torch import nn


def released_resnetv2(layers: tuple[int, ...]) -> ResNetV2:
    """The jeonsworld port's ResNetV2 (what MixViT's part model and the lineage's hybrids run)."""
    model = ResNetV2(layers=layers, num_classes=0, global_pool="", in_chans=3, preact=False, stem_type="",
                     conv_layer=partial(StdConv2d, eps=1e-5), norm_layer=partial(GroupNormAct, num_groups=32, eps=1e-6))
    model.stem.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=0)
    for stage in model.stages:
        for block in stage.blocks:
            if block.downsample is not None:
                channels = block.downsample.norm.num_channels
                block.downsample.norm = GroupNormAct(channels, num_groups=channels, eps=1e-5, apply_act=False)
    return model


def timm_resnetv2(layers: tuple[int, ...]) -> ResNetV2:
    """timm's `vit_base_r50_s16_*` stem (TF-"same" padding, as the JAX code that trained the weights)."""
    return ResNetV2(layers=layers, num_classes=0, global_pool="", in_chans=3, preact=False, stem_type="same",
                    conv_layer=partial(StdConv2dSame, eps=1e-8))


HYBRID_STEMS: Mapping[str, Callable[[tuple[int, ...]], ResNetV2]] = {
    "released": released_resnetv2,
    "timm": timm_resnetv2,
}
