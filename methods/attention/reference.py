"""Attention statistics from full N×N maps: the slow, obviously-correct path (`eager` mode).

Same names and shapes as `methods.attention.fast`, computed the way the original repositories
do: materialise every layer's probability map (or reuse the one the block computed, in eager
mode), take a second full softmax over the query axis for column statistics, and multiply the
N×N matrices of all layers (O(N³) per layer). The tests hold the fast path to these in float64;
`--opt attention=eager` runs them for side-by-side speed and memory figures.
`chunk` is accepted for signature parity and ignored: nothing here is chunked. Like the fast path,
no autograd and no autocast (`fast.statistic`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch

from methods.attention.fast import compute_dtype, statistic

if TYPE_CHECKING:
    from methods.attention.capture import LayerQK


def scores(layer: "LayerQK") -> torch.Tensor:
    """S = q kᵀ·scale: ``[B, H, N, N]``."""
    dtype = compute_dtype(layer.q)
    return torch.einsum("bhid,bhjd->bhij", layer.q.to(dtype), layer.k.to(dtype)) * layer.scale


def row_probs(layer: "LayerQK") -> torch.Tensor:
    """A = softmax over keys: the block's own map when it was recorded, else from q, k."""
    if layer.probs is not None:
        return layer.probs.to(compute_dtype(layer.q))
    return scores(layer).softmax(dim=-1)


def column_probs(layer: "LayerQK") -> torch.Tensor:
    """C = softmax over queries (the originals' second softmax, `dim=-2`)."""
    return scores(layer).softmax(dim=-2)


@statistic
def cls_row_softmax(layer: "LayerQK", token: int = 0) -> torch.Tensor:
    return row_probs(layer)[:, :, token, :]


@statistic
def cls_column_softmax(layer: "LayerQK", token: int = 0) -> torch.Tensor:
    return column_probs(layer)[:, :, :, token]


@statistic
def rollout_row(layers: Sequence["LayerQK"], token: int = 0, chunk: int | None = None) -> torch.Tensor:
    """TransFG's loop: R = A_0; R = A_i @ R for i = 1..n-1; then row `token`."""
    product = row_probs(layers[0])
    for layer in layers[1:]:
        product = row_probs(layer) @ product
    return product[:, :, token, :]


@statistic
def rollout_column(layers: Sequence["LayerQK"], token: int = 0, chunk: int | None = None) -> torch.Tensor:
    """Mix-ViT's loop over column-softmax maps; then column `token`."""
    product = column_probs(layers[0])
    for layer in layers[1:]:
        product = column_probs(layer) @ product
    return product[:, :, :, token]


@statistic
def residual_rollout_column_mean(layers: Sequence["LayerQK"], chunk: int | None = None) -> torch.Tensor:
    """RAMS-Trans' DPPM: head mean, add I, row-normalise, multiply (later on the left), column mean."""
    product = None
    for layer in layers:
        mean = row_probs(layer).mean(dim=1)
        eye = torch.eye(mean.shape[-1], dtype=mean.dtype, device=mean.device)
        aug = mean + eye
        aug = aug / aug.sum(dim=-1, keepdim=True)
        product = aug if product is None else aug @ product
    return product.mean(dim=-2)
