"""Attention toolkit shared by the method adapters: capture, statistics, modes.

Public API (shapes: B batch, H heads, N tokens including prefix tokens, d head width):

- `AttentionCapture(blocks, outputs=False)`: context manager; inside it the timm blocks run as
  usual (fused SDPA by default) while q/k are recorded. After the forward: `.layers` ->
  `list[LayerQK]` (q, k ``[B, H, N, d]``, `scale`, `probs` ``[B, H, N, N]`` in eager mode only),
  `.outputs` -> block outputs ``[B, N, D]`` (with `outputs=True`), `.statistics` -> the module
  implementing the statistics for the blocks' mode, `.mode`.
- statistics, same names in `fast` (no N×N maps) and `reference` (full maps, the originals' way):
  `cls_row_softmax(layer, token=0)` and `cls_column_softmax(layer, token=0)` -> ``[B, H, N]``;
  `rollout_row(layers, token=0, chunk=None)` and `rollout_column(layers, token=0, chunk=None)`
  -> ``[B, H, N]``; `residual_rollout_column_mean(layers, chunk=None)` -> ``[B, N]``.
  See `methods.attention.fast` for the exact maths.
- `ATTENTION_MODES` (``("fused", "eager")``), `set_attention_mode(model, mode)`,
  `statistics(mode)`: every adapter exposes the mode as its `attention` option
  (`methods.base.COMMON_OPTIONS`).

Statistics are computed under `torch.no_grad()` in float32 or wider; the selections they drive
carry no gradient in the originals either.
"""

from methods.attention import fast, reference
from methods.attention.capture import AttentionCapture, LayerQK, attention_of
from methods.attention.mode import ATTENTION_MODES, attention_mode, set_attention_mode, statistics

__all__ = [
    "ATTENTION_MODES",
    "AttentionCapture",
    "LayerQK",
    "attention_mode",
    "attention_of",
    "fast",
    "reference",
    "set_attention_mode",
    "statistics",
]
