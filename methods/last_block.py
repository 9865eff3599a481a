"""The new last block (and final norm) that FFVT and TransFG run on their selected tokens.

Both methods drop the pretrained last encoder block: FFVT's `ff_last_layer` and TransFG's
`part_layer` are new blocks that `load_from` skips, so they start from the reference init —
attention Linears at PyTorch's default, MLP Linears xavier-uniform with N(0, 1e-6) biases,
LayerNorms at ones and zeros (F:models/modeling.py:136-140, 286-289, 413-416). Here the new block
*is* the timm backbone's last block, re-initialised, so parameter names, the attention mode and
checkpoint loading stay the backbone's; the load report is corrected to say what was kept.
"""

from __future__ import annotations

from typing import Callable

from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn


def reset_block_like_reference(block: Block) -> None:
    """The jeonsworld `Block` init. q/k/v share one Linear in timm; its default init draws from the
    same U(±1/sqrt(fan_in)) as three separate D x D Linears, since fan_in is D either way."""
    block.norm1.reset_parameters()
    block.norm2.reset_parameters()
    block.attn.qkv.reset_parameters()
    block.attn.proj.reset_parameters()
    for fc in (block.mlp.fc1, block.mlp.fc2):
        nn.init.xavier_uniform_(fc.weight)
        nn.init.normal_(fc.bias, std=1e-6)


def renew_last_layers(vit: VisionTransformer, *, keep_last_block: bool, keep_final_norm: bool,
                      fresh_block: Callable[[Block], None] = reset_block_like_reference) -> None:
    """Re-initialise the last block (with `fresh_block`) and/or the final norm unless kept (from a
    checkpoint, if any)."""
    fresh = []
    if not keep_last_block:
        fresh_block(vit.blocks[-1])
        fresh.append(f"blocks.{len(vit.blocks) - 1}.")
    if not keep_final_norm:
        vit.norm.reset_parameters()
        fresh.append("norm.")
    report = getattr(vit, "pretrained_report", None)
    if report is not None and fresh:
        moved = [key for key in report.loaded if key.startswith(tuple(fresh))]
        report.loaded = [key for key in report.loaded if key not in moved]
        report.initialised = [*report.initialised, *moved]
