"""Attention modes: `fused` (the default) and `eager`, switchable on a built model.

- ``fused``: timm blocks call `F.scaled_dot_product_attention` (flash / memory-efficient kernels
  on GPU); statistics come from `methods.attention.fast`, which never forms an N×N map.
- ``eager``: timm blocks materialise the softmax probabilities (as the original repositories
  do); statistics come from `methods.attention.reference`, the full-map products of the
  originals. Same maths, the originals' cost: the `speed` benchmark flips this to measure the gain.

The mode lives in one place, each timm `Attention.fused_attn` flag, so a model cannot be half in
one mode and half in the other without `AttentionCapture` noticing.
"""

from __future__ import annotations

from types import ModuleType

from timm.layers import Attention
from torch import nn

from methods.attention import fast, reference

STATISTICS: dict[str, ModuleType] = {"fused": fast, "eager": reference}
ATTENTION_MODES: tuple[str, ...] = tuple(STATISTICS)


def statistics(mode: str) -> ModuleType:
    """The module implementing the statistics for `mode` (same function names in both)."""
    try:
        return STATISTICS[mode]
    except KeyError:
        raise ValueError(f"unknown attention mode {mode!r}; expected one of: {', '.join(ATTENTION_MODES)}") from None


def attention_mode(attn: Attention) -> str:
    return "fused" if attn.fused_attn else "eager"


def set_attention_mode(model: nn.Module, mode: str) -> int:
    """Put every timm `Attention` inside `model` in `mode`; returns how many were switched."""
    statistics(mode)  # validates the name
    switched = 0
    for module in model.modules():
        if isinstance(module, Attention):
            module.fused_attn = mode == "fused"
            switched += 1
    return switched
