"""Tiny checkpoints in the Google ViT `.npz` layout, written at test time (nothing is downloaded).

Key names and shapes are those of the released `ViT-B_16.npz` / `R50+ViT-B_16.npz` files
(see the datasets write-up §6.1), scaled down.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def vit_arrays(rng: np.random.Generator, *, patch: int, dim: int, depth: int, heads: int, grid: int,
               mlp_ratio: int = 4, in_chans: int = 3, head_classes: int = 21) -> dict[str, np.ndarray]:
    def normal(*shape, std=0.2):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    d = dim // heads
    a = {
        "embedding/kernel": normal(patch, patch, in_chans, dim),  # HWIO
        "embedding/bias": normal(dim),
        "cls": normal(1, 1, dim),
        "Transformer/posembed_input/pos_embedding": normal(1, 1 + grid * grid, dim),
        "Transformer/encoder_norm/scale": 1 + normal(dim),
        "Transformer/encoder_norm/bias": normal(dim),
        "head/kernel": normal(dim, head_classes),
        "head/bias": normal(head_classes),
        "pre_logits/kernel": normal(dim, dim),
        "pre_logits/bias": normal(dim),
    }
    for i in range(depth):
        b = f"Transformer/encoderblock_{i}/"
        mha = b + "MultiHeadDotProductAttention_1/"
        for ln in ("LayerNorm_0", "LayerNorm_2"):
            a[f"{b}{ln}/scale"] = 1 + normal(dim)
            a[f"{b}{ln}/bias"] = normal(dim)
        for n in ("query", "key", "value"):
            a[f"{mha}{n}/kernel"] = normal(dim, heads, d)
            a[f"{mha}{n}/bias"] = normal(heads, d)
        a[f"{mha}out/kernel"] = normal(heads, d, dim)
        a[f"{mha}out/bias"] = normal(dim)
        a[f"{b}MlpBlock_3/Dense_0/kernel"] = normal(dim, mlp_ratio * dim)
        a[f"{b}MlpBlock_3/Dense_0/bias"] = normal(mlp_ratio * dim)
        a[f"{b}MlpBlock_3/Dense_1/kernel"] = normal(mlp_ratio * dim, dim)
        a[f"{b}MlpBlock_3/Dense_1/bias"] = normal(dim)
    return a


def hybrid_arrays(rng: np.random.Generator, backbone, **vit_kwargs) -> dict[str, np.ndarray]:
    """R50+ViT layout for the stem/stages of `backbone` (a timm ResNetV2, read for channel counts)."""
    def normal(*shape, std=0.2):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    def hwio(conv) -> np.ndarray:
        o, i, h, w = conv.weight.shape
        return normal(h, w, i, o)

    a = {"conv_root/kernel": hwio(backbone.stem.conv),
         "gn_root/scale": 1 + normal(1, 1, 1, backbone.stem.conv.weight.shape[0]),  # BiT stores GN params 4-D
         "gn_root/bias": normal(1, 1, 1, backbone.stem.conv.weight.shape[0])}
    for s, stage in enumerate(backbone.stages):
        for u, block in enumerate(stage.blocks):
            p = f"block{s + 1}/unit{u + 1}/"
            for r in (1, 2, 3):
                conv = getattr(block, f"conv{r}")
                a[f"{p}conv{r}/kernel"] = hwio(conv)
                a[f"{p}gn{r}/scale"] = 1 + normal(conv.weight.shape[0])
                a[f"{p}gn{r}/bias"] = normal(conv.weight.shape[0])
            if block.downsample is not None:
                a[f"{p}conv_proj/kernel"] = hwio(block.downsample.conv)
                a[f"{p}gn_proj/scale"] = 1 + normal(block.downsample.conv.weight.shape[0])
                a[f"{p}gn_proj/bias"] = normal(block.downsample.conv.weight.shape[0])
    channels = backbone.num_features
    a.update(vit_arrays(rng, patch=1, in_chans=channels, **vit_kwargs))
    return a


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    np.savez(path, **arrays)
    return path
