"""Google ViT `.npz` checkpoints (ViT-B/16, B/32, R50+ViT-B/16) as timm state-dict tensors.

The key layout is the one the original JAX code writes and the FFVT / TransFG / Mix-ViT /
RAMS-Trans loaders read (jeonsworld `load_from`); timm's `_load_weights` reads it too, and the
tests hold this conversion to it. Converting to names instead of copying into a model lets one
loader (`methods.pretrained.loader`) check, adapt and report every format the same way.

    embedding/kernel [p, p, 3, D] (HWIO)          -> patch_embed.proj.weight [D, 3, p, p]
    cls [1, 1, D]                                 -> cls_token
    Transformer/posembed_input/pos_embedding      -> pos_embed [1, 1 + g², D]
    Transformer/encoderblock_{i}/
      LayerNorm_0, LayerNorm_2 {scale, bias}      -> blocks.i.norm1, norm2
      MultiHeadDotProductAttention_1/
        {query,key,value}/kernel [D, H, d]        -> blocks.i.attn.qkv.weight [3·H·d, D] (q, k, v)
        out/kernel [H, d, D]                      -> blocks.i.attn.proj.weight [D, H·d]
      MlpBlock_3/Dense_{0,1}/kernel [in, out]     -> blocks.i.mlp.fc{1,2}.weight [out, in]
    Transformer/encoder_norm                      -> norm
    conv_root, gn_root, block{s}/unit{u}/...      -> patch_embed.backbone.* (R50 hybrid only)
    head/*, pre_logits/*                          -> not converted (fgbench owns the classifier)
"""

from __future__ import annotations

import re
from typing import Callable, Mapping

import numpy as np
import torch

from bench.errors import UsageError

Array = np.ndarray


def conv(w: Array) -> Array:
    """HWIO -> OIHW."""
    return w.transpose(3, 2, 0, 1)


def dense(w: Array) -> Array:
    """[in, out] -> [out, in]."""
    return w.T


def vector(w: Array) -> Array:
    """GroupNorm/LayerNorm parameters, stored [C] or [1, 1, 1, C] in BiT files."""
    return w.reshape(-1)


def same(w: Array) -> Array:
    return w


class _Converter:
    def __init__(self, arrays: Mapping[str, Array], source: str):
        self.arrays = arrays
        self.source = source
        self.out: dict[str, torch.Tensor] = {}
        self.used: set[str] = set()

    def get(self, key: str) -> Array:
        try:
            value = self.arrays[key]
        except KeyError:
            raise UsageError(f"{self.source}: the Google ViT checkpoint lacks {key!r}") from None
        self.used.add(key)
        return np.asarray(value)

    def put(self, dest: str, key: str, fn: Callable[[Array], Array] = same) -> None:
        self.out[dest] = torch.from_numpy(np.ascontiguousarray(fn(self.get(key))))

    def put_tensor(self, dest: str, value: Array) -> None:
        self.out[dest] = torch.from_numpy(np.ascontiguousarray(value))


def _indices(keys, pattern: str) -> list[tuple[int, ...]]:
    found = {tuple(int(g) for g in m.groups()) for k in keys if (m := re.match(pattern, k))}
    return sorted(found)


def convert(arrays: Mapping[str, Array], source: str = "checkpoint") -> tuple[dict[str, torch.Tensor], list[str]]:
    """Google-layout arrays -> (timm-named tensors, keys left unconverted)."""
    if "embedding/kernel" not in arrays:
        raise UsageError(f"{source}: not a Google ViT .npz (no 'embedding/kernel' key)")
    c = _Converter(arrays, source)
    _convert_hybrid_stem(c)
    c.put("patch_embed.proj.weight", "embedding/kernel", conv)
    c.put("patch_embed.proj.bias", "embedding/bias")
    c.put("cls_token", "cls")
    c.put("pos_embed", "Transformer/posembed_input/pos_embedding")
    c.put("norm.weight", "Transformer/encoder_norm/scale")
    c.put("norm.bias", "Transformer/encoder_norm/bias")
    for (i,) in _indices(arrays, r"Transformer/encoderblock_(\d+)/"):
        _convert_block(c, i)
    return c.out, sorted(set(arrays) - c.used)


def _convert_block(c: _Converter, i: int) -> None:
    src, dst = f"Transformer/encoderblock_{i}/", f"blocks.{i}."
    mha = src + "MultiHeadDotProductAttention_1/"
    for ln, norm in (("LayerNorm_0", "norm1"), ("LayerNorm_2", "norm2")):
        c.put(f"{dst}{norm}.weight", f"{src}{ln}/scale")
        c.put(f"{dst}{norm}.bias", f"{src}{ln}/bias")
    kernels = [c.get(f"{mha}{n}/kernel") for n in ("query", "key", "value")]  # [D, H, d]
    biases = [c.get(f"{mha}{n}/bias") for n in ("query", "key", "value")]  # [H, d]
    c.put_tensor(f"{dst}attn.qkv.weight", np.concatenate([k.reshape(k.shape[0], -1).T for k in kernels]))
    c.put_tensor(f"{dst}attn.qkv.bias", np.concatenate([b.reshape(-1) for b in biases]))
    out = c.get(f"{mha}out/kernel")  # [H, d, D]
    c.put_tensor(f"{dst}attn.proj.weight", out.reshape(-1, out.shape[-1]).T)
    c.put(f"{dst}attn.proj.bias", f"{mha}out/bias")
    for r in range(2):
        c.put(f"{dst}mlp.fc{r + 1}.weight", f"{src}MlpBlock_3/Dense_{r}/kernel", dense)
        c.put(f"{dst}mlp.fc{r + 1}.bias", f"{src}MlpBlock_3/Dense_{r}/bias")


def _convert_hybrid_stem(c: _Converter) -> None:
    """BiT ResNetV2 stem and stages of the R50+ViT files, named as timm's `HybridEmbed(ResNetV2)`."""
    if "conv_root/kernel" not in c.arrays:
        return
    base = "patch_embed.backbone."
    c.put(base + "stem.conv.weight", "conv_root/kernel", conv)
    c.put(base + "stem.norm.weight", "gn_root/scale", vector)
    c.put(base + "stem.norm.bias", "gn_root/bias", vector)
    for s, u in _indices(c.arrays, r"block(\d+)/unit(\d+)/"):
        src, dst = f"block{s}/unit{u}/", f"{base}stages.{s - 1}.blocks.{u - 1}."
        for r in (1, 2, 3):
            c.put(f"{dst}conv{r}.weight", f"{src}conv{r}/kernel", conv)
            c.put(f"{dst}norm{r}.weight", f"{src}gn{r}/scale", vector)
            c.put(f"{dst}norm{r}.bias", f"{src}gn{r}/bias", vector)
        if f"{src}conv_proj/kernel" in c.arrays:
            c.put(f"{dst}downsample.conv.weight", f"{src}conv_proj/kernel", conv)
            c.put(f"{dst}downsample.norm.weight", f"{src}gn_proj/scale", vector)
            c.put(f"{dst}downsample.norm.bias", f"{src}gn_proj/bias", vector)
