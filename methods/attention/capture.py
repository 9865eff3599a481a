"""Record q and k (and, in eager mode, the attention probabilities) of timm attention layers.

The methods need attention *statistics*, not the maps themselves, so the blocks keep running
their own attention kernel (fused `scaled_dot_product_attention` by default) and a forward hook on
each block's `attn.qkv` keeps the projection output. q and k are views of that output, which
autograd saves for the backward pass anyway: recording them costs no memory in training and
O(L·B·N·D) in evaluation, never O(N²).

In eager mode (`attn.fused_attn == False`, see `methods.attention.mode`) timm materialises the
row-softmax probabilities and passes them through `attn.attn_drop`; a hook there records them
(before dropout, as the reference code returns them), so the reference statistics reuse the very
maps the blocks computed, as the originals do.

    with AttentionCapture(vit.blocks[:-1], outputs=True) as cap:
        x = vit.blocks[:-1](x)
    layers = cap.layers      # [LayerQK] in block order
    hidden = cap.outputs     # block outputs, still attached to the autograd graph
    stats = cap.statistics   # methods.attention.fast or .reference, by the blocks' mode
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Iterable

import torch
from timm.layers import Attention
from torch import nn

from methods.attention.mode import attention_mode, statistics


@dataclass(frozen=True, eq=False)
class LayerQK:
    """One attention layer's inputs to the softmax, detached.

    q, k: ``[B, H, N, d]`` (N tokens including the prefix tokens); scale: the softmax
    temperature ``d ** -0.5``; probs: ``[B, H, N, N]`` row-softmax from the block itself, only
    recorded in eager mode (None otherwise).
    """

    q: torch.Tensor
    k: torch.Tensor
    scale: float
    probs: torch.Tensor | None = None

    @property
    def num_tokens(self) -> int:
        return self.q.shape[-2]


def attention_of(block: nn.Module) -> Attention:
    """The timm `Attention` of a block (or the module itself), checked to be one we can read."""
    attn = getattr(block, "attn", block)
    if not isinstance(attn, Attention):
        raise TypeError(f"expected a timm Attention (or a block with .attn), got {type(attn).__name__}")
    if not (isinstance(attn.q_norm, nn.Identity) and isinstance(attn.k_norm, nn.Identity)):
        raise ValueError("q/k normalisation is on: the softmax inputs are not the qkv projection")
    return attn


class AttentionCapture:
    """Context manager recording q/k (eager mode: also probabilities) of `blocks` for one forward.

    blocks: timm blocks (or their `Attention` modules), all in the same attention mode. Each must
    run exactly once inside the context. outputs: also keep each block's output tensor (with its
    autograd graph; FFVT gathers tokens from them).
    """

    def __init__(self, blocks: Iterable[nn.Module], outputs: bool = False):
        self.blocks = list(blocks)
        if not self.blocks:
            raise ValueError("AttentionCapture needs at least one block")
        self.attentions = [attention_of(b) for b in self.blocks]
        modes = {attention_mode(a) for a in self.attentions}
        if len(modes) != 1:
            raise ValueError(f"blocks mix attention modes {sorted(modes)}; set one with set_attention_mode")
        self.mode: str = modes.pop()
        self.keep_outputs = outputs
        self._handles: list = []
        self._clear()

    @property
    def statistics(self) -> ModuleType:
        """The statistics implementation for this mode (`fast` when fused, `reference` when eager)."""
        return statistics(self.mode)

    def _clear(self) -> None:
        n = len(self.blocks)
        self._qkv: list[torch.Tensor | None] = [None] * n
        self._probs: list[torch.Tensor | None] = [None] * n
        self._outputs: list[torch.Tensor | None] = [None] * n

    def __enter__(self) -> "AttentionCapture":
        self._clear()
        for i, (block, attn) in enumerate(zip(self.blocks, self.attentions)):
            self._handles.append(attn.qkv.register_forward_hook(self._store(self._qkv, i, "qkv", detach=True)))
            if self.mode == "eager":
                hook = self._store(self._probs, i, "attention probabilities", detach=True, from_input=True)
                self._handles.append(attn.attn_drop.register_forward_hook(hook))
            if self.keep_outputs:
                self._handles.append(block.register_forward_hook(self._store(self._outputs, i, "output")))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @staticmethod
    def _store(slots: list, index: int, what: str, detach: bool = False, from_input: bool = False):
        def hook(module, inputs, output):
            if slots[index] is not None:
                raise RuntimeError(f"block {index} ran twice inside one AttentionCapture ({what}); "
                                   f"use one capture per forward pass")
            value = inputs[0] if from_input else output
            slots[index] = value.detach() if detach else value

        return hook

    def _require(self, slots: list, what: str) -> list[torch.Tensor]:
        missing = [i for i, v in enumerate(slots) if v is None]
        if missing:
            raise RuntimeError(f"no {what} recorded for block(s) {missing}: they did not run inside the capture")
        return list(slots)

    @property
    def layers(self) -> list[LayerQK]:
        """One `LayerQK` per block, in the order the blocks were given."""
        out = []
        for attn, qkv, probs in zip(self.attentions, self._require(self._qkv, "q/k"), self._probs):
            B, N, _ = qkv.shape
            q, k, _v = qkv.reshape(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            out.append(LayerQK(q=q, k=k, scale=float(attn.scale), probs=probs))
        return out

    @property
    def outputs(self) -> list[torch.Tensor]:
        """Each block's output ``[B, N, D]`` (attached to autograd); needs `outputs=True`."""
        if not self.keep_outputs:
            raise RuntimeError("block outputs were not kept; use AttentionCapture(blocks, outputs=True)")
        return self._require(self._outputs, "output")
