"""Presets: a backbone geometry plus recipe overrides, chosen with `--preset`.

`tiny` is for CPUs (tests, `make demo`): a small ViT trained from scratch. Randomly initialised
ViTs barely move under the papers' SGD recipe within a CPU budget, so `tiny` switches to AdamW;
it is a smoke scale, not a reproduction. `base` is ViT-B/16 at the dataset's paper resolution with
the method's published recipe; `base32` (ViT-B/32, RAMS-Trans' released configuration) and
`base_r50` (R50+ViT-B/16 hybrid with the released code's ResNetV2, the jeonsworld port) and
`base_r50_timm` (the same with timm's TF-"same" ResNetV2, the layout the Google weights were
trained with in JAX; `methods.resnet_stem`) are the same with another patch embedding. The `base*` presets are meant to start from `--pretrained` weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.errors import UsageError


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    backbone: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="tiny",
            description="CPU scale: ViT with patch 8, width 64, 4 blocks, 4 heads at 64 px, AdamW from scratch",
            backbone=dict(patch_size=8, embed_dim=64, depth=4, num_heads=4, drop_rate=0.0),
            recipe=dict(
                img_size=64,
                resize_size=72,
                batch_size=32,
                eval_batch_size=64,
                steps=300,
                warmup_steps=30,
                optimizer="adamw",
                lr=2e-3,
                weight_decay=0.05,
                eval_every=100,
            ),
        ),
        Preset(
            name="base",
            description="ViT-B/16 (768 wide, 12 blocks, 12 heads) at the paper resolution with the published recipe",
            backbone=dict(patch_size=16, embed_dim=768, depth=12, num_heads=12),
            recipe={},
        ),
        Preset(
            name="base32",
            description="ViT-B/32 (768 wide, 12 blocks, 12 heads, patch 32) at the paper resolution",
            backbone=dict(patch_size=32, embed_dim=768, depth=12, num_heads=12),
            recipe={},
        ),
        Preset(
            name="base_r50",
            description="R50+ViT-B/16 hybrid (ResNetV2 stages 3,4,9 as the patch embedding; the released "
                        "code's ResNetV2: PyTorch padding) at the paper resolution",
            backbone=dict(patch_size=16, embed_dim=768, depth=12, num_heads=12, hybrid_layers=(3, 4, 9),
                          hybrid_stem="released"),
            recipe={},
        ),
        Preset(
            name="base_r50_timm",
            description="R50+ViT-B/16 hybrid with timm's ResNetV2 (TF-\"same\" padding, as the JAX code that "
                        "trained the Google weights) at the paper resolution",
            backbone=dict(patch_size=16, embed_dim=768, depth=12, num_heads=12, hybrid_layers=(3, 4, 9),
                          hybrid_stem="timm"),
            recipe={},
        ),
    )
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise UsageError(f"unknown preset {name!r}; expected one of: {', '.join(PRESETS)}") from None
