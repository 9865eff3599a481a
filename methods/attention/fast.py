"""Attention statistics without N×N maps: the fast path (`fused` mode).

Everything here runs under `torch.no_grad()` in at least float32 (float64 inputs stay float64,
which the tests use), from the q/k a block used (see `LayerQK`). Shapes: q, k ``[B, H, N, d]``;
A = softmax(q kᵀ·scale) over keys (rows sum to 1); C = softmax of the same scores over *queries*
(columns sum to 1). Layers are given in forward order, and every rollout is the product with
later layers on the left, R = M_{n-1} ··· M_1 M_0, as in the original code.

- `cls_row_softmax(layer, token=0) -> [B, H, N]`: A[token, :], O(N·d) (FFVT MAWS, per layer).
- `cls_column_softmax(layer, token=0) -> [B, H, N]`: C[:, token], O(N·d) (FFVT MAWS).
- `rollout_row(layers, token=0, chunk=None) -> [B, H, N]`: row `token` of A_{n-1}···A_0 per head,
  no identity term (TransFG's part selection, Mix-ViT's attention term).
- `rollout_column(layers, token=0, chunk=None) -> [B, H, N]`: column `token` of C_{n-1}···C_0
  per head (Mix-ViT's contribution term).
- `residual_rollout_column_mean(layers, chunk=None) -> [B, N]`: the mean over all N rows of
  Â_{n-1}···Â_0 with Â = 0.5·(mean_h A + I) (RAMS-Trans' patch scores).

A rollout propagates one vector through the layers instead of multiplying matrices: O(N²·d) per
layer instead of O(N³). Each layer's A is recomputed from q, k in slices of `chunk` query rows,
so memory is O(B·H·chunk·N); C is handled as the row softmax of the transposed scores
(`transposed`). `chunk=None` picks the largest slice within `CHUNK_ELEMENTS` elements.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Sequence

import torch

if TYPE_CHECKING:
    from methods.attention.capture import LayerQK

CHUNK_ELEMENTS = 1 << 25  # elements of one [B, H, chunk, N] slice (128 MiB in float32)


def compute_dtype(t: torch.Tensor) -> torch.dtype:
    """float32 for half/bfloat16/float32 inputs, float64 for float64 (statistics never run in 16 bits)."""
    return torch.promote_types(t.dtype, torch.float32)


def wide(t: torch.Tensor) -> torch.Tensor:
    """`t` in its `compute_dtype`: losses and statistics never run in 16 bits."""
    return t.to(compute_dtype(t))


def _qk(layer: "LayerQK") -> tuple[torch.Tensor, torch.Tensor]:
    dtype = compute_dtype(layer.q)
    return layer.q.to(dtype), layer.k.to(dtype)


def chunk_size(layer: "LayerQK", chunk: int | None) -> int:
    B, H, N, _ = layer.q.shape
    if chunk is None:
        return max(1, min(N, CHUNK_ELEMENTS // max(1, B * H * N)))
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    return chunk


def _check_token(layer: "LayerQK", token: int) -> None:
    if not 0 <= token < layer.num_tokens:
        raise ValueError(f"token {token} out of range for {layer.num_tokens} tokens")


def transposed(layer: "LayerQK") -> "LayerQK":
    """The layer with q and k swapped: its scores are Sᵀ = k qᵀ·scale, so its row softmax is the
    transpose of C. Column statistics become row statistics, whose softmax runs over the
    contiguous last axis (on a GPU, a softmax down the columns of a chunk is several times slower)."""
    return replace(layer, q=layer.k, k=layer.q, probs=None)


@torch.no_grad()
def cls_row_softmax(layer: "LayerQK", token: int = 0) -> torch.Tensor:
    """Softmax over keys of query `token`'s scores: ``[B, H, N]``."""
    _check_token(layer, token)
    q, k = _qk(layer)
    scores = torch.einsum("bhd,bhnd->bhn", q[:, :, token] * layer.scale, k)
    return scores.softmax(dim=-1)


@torch.no_grad()
def cls_column_softmax(layer: "LayerQK", token: int = 0) -> torch.Tensor:
    """Softmax over queries of key `token`'s scores: ``[B, H, N]``."""
    return cls_row_softmax(transposed(layer), token)


@torch.no_grad()
def row_times_attention(v: torch.Tensor, layer: "LayerQK", chunk: int | None = None) -> torch.Tensor:
    """v·A for row vectors v ``[B, H, N]``; A's rows are built `chunk` at a time."""
    q, k = _qk(layer)
    q, keys_t = q * layer.scale, k.transpose(-2, -1)
    v = v.to(q.dtype)
    step = chunk_size(layer, chunk)
    out = torch.zeros_like(v)
    for start in range(0, layer.num_tokens, step):
        rows = slice(start, start + step)
        probs = torch.softmax(q[:, :, rows] @ keys_t, dim=-1)  # [B, H, chunk, N]
        out += (v[:, :, None, rows] @ probs).squeeze(-2)
    return out


@torch.no_grad()
def column_softmax_times(layer: "LayerQK", u: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """C·u for column vectors u ``[B, H, N]``; C·u = u·Cᵀ, a row product with the transposed layer."""
    return row_times_attention(u, transposed(layer), chunk)


def _nonempty(layers: Sequence["LayerQK"]) -> list["LayerQK"]:
    layers = list(layers)
    if not layers:
        raise ValueError("a rollout needs at least one layer")
    return layers


@torch.no_grad()
def rollout_row(layers: Sequence["LayerQK"], token: int = 0, chunk: int | None = None) -> torch.Tensor:
    """Row `token` of A_{n-1}···A_0, per head: ``[B, H, N]``."""
    *earlier, last = _nonempty(layers)
    v = cls_row_softmax(last, token)
    for layer in reversed(earlier):
        v = row_times_attention(v, layer, chunk)
    return v


@torch.no_grad()
def rollout_column(layers: Sequence["LayerQK"], token: int = 0, chunk: int | None = None) -> torch.Tensor:
    """Column `token` of C_{n-1}···C_0, per head: ``[B, H, N]``."""
    first, *later = _nonempty(layers)
    u = cls_column_softmax(first, token)
    for layer in later:
        u = column_softmax_times(layer, u, chunk)
    return u


@torch.no_grad()
def residual_rollout_column_mean(layers: Sequence["LayerQK"], chunk: int | None = None) -> torch.Tensor:
    """Column means of Â_{n-1}···Â_0, Â = 0.5·(mean_h A + I): ``[B, N]``.

    (1/N)·1ᵀ·Â_{n-1}···Â_0 is a row vector pushed through the layers, last layer first, with the
    head mean folded into the product: v·mean_h(A_h) = (1/H)·[v, …, v]·[A_0; …; A_H-1], one batched
    (1 × H·rows)·(H·rows × N) product per slice of query rows instead of H vector products and a
    mean (which measured slower than the full-matrix reference on an H100).
    """
    layers = _nonempty(layers)
    B, H, N, _ = layers[0].q.shape
    dtype = compute_dtype(layers[0].q)
    v = torch.full((B, N), 1.0 / N, dtype=dtype, device=layers[0].q.device)
    for layer in reversed(layers):
        q, keys_t = layer.q.to(dtype) * layer.scale, layer.k.to(dtype).transpose(-2, -1)
        step = chunk_size(layer, chunk)
        weighted = v * (0.5 / H)  # the 0.5 of Â and the head mean, folded into the vector
        pushed = None
        for start in range(0, N, step):
            probs = torch.softmax(q[:, :, start:start + step] @ keys_t, dim=-1)  # [B, H, r, N]
            r = probs.shape[2]
            weights = weighted[:, None, start:start + step].expand(B, H, r).reshape(B, 1, H * r)
            part = torch.bmm(weights, probs.reshape(B, H * r, N)).squeeze(1)
            pushed = part if pushed is None else pushed + part
        v = torch.add(pushed, v, alpha=0.5)  # 0.5·(v·mean_h A) + 0.5·v
    return v
