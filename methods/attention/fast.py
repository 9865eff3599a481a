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
(`transposed`). A slice is one buffer: the scores, turned into probabilities in place by the
fused softmax kernel (`softmax_`). Folding the normalisation into the propagated vector instead
(an in-place exp, v·softmax(S) = (v / rowsum(exp S))·exp S) needs a max, a subtraction, an exp
and a sum: four passes, measured 1.2-1.5x slower per layer than the one fused kernel on cache-sized
slices on a CPU (faster only on whole maps), with the same single buffer.

`chunk=None` picks the largest slice within the device's element budget (`chunk_elements`):
measured on a CPU, where a slice that fits the caches is much faster than one whole map (see
`DEFAULT_CHUNK_ELEMENTS`); the environment variable ``FGBENCH_STATS_CHUNK_ELEMENTS`` overrides it.

Precision: float32 (float64 inputs stay float64) even inside a `torch.autocast` region, which
is switched off around every statistic (`statistic`), so the matmuls never drop to 16 bits.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from dataclasses import replace
from typing import TYPE_CHECKING, Callable, Sequence, TypeVar

import torch

if TYPE_CHECKING:
    from methods.attention.capture import LayerQK

CHUNK_ELEMENTS_ENV = "FGBENCH_STATS_CHUNK_ELEMENTS"
# Elements of one [B, H, chunk, N] score slice, per device type. CPU: measured at 785 tokens
# (B 4, H 4, d 16, one thread, thread CPU time): 2^17..2^19 (0.5-2 MiB of float32, cache-sized)
# ran the rollouts 3-4x faster than the former whole-map budget of 2^25, whose fresh 50-130 MB
# allocations page-fault on every layer; 2^16 and 2^20 were 10-50% slower than 2^18, 2^14 2-3x.
# CUDA: not measured on a GPU yet, derived: 2^25 (128 MiB) keeps a few large kernels per layer at
# ViT-B/16 batch 16 (about 220 query rows a slice), which a GPU needs to stay busy.
DEFAULT_CHUNK_ELEMENTS: dict[str, int] = {"cpu": 1 << 18, "cuda": 1 << 25}
FALLBACK_CHUNK_ELEMENTS = 1 << 25  # other device types

F = TypeVar("F", bound=Callable)
AUTOCAST_DEVICE_TYPES = ("cpu", "cuda")


def chunk_elements(device: torch.device) -> int:
    """The slice budget on `device`: ``FGBENCH_STATS_CHUNK_ELEMENTS`` if set, else the device's default."""
    text = os.environ.get(CHUNK_ELEMENTS_ENV)
    if text:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise ValueError(f"{CHUNK_ELEMENTS_ENV} must be a positive integer (elements), got {text!r}")
        return value
    return DEFAULT_CHUNK_ELEMENTS.get(device.type, FALLBACK_CHUNK_ELEMENTS)


_AROUND_STATISTICS: list[Callable[[], contextlib.AbstractContextManager]] = []
_depth = threading.local()


@contextlib.contextmanager
def around_statistics(factory: Callable[[], contextlib.AbstractContextManager]):
    """Inside this block, every outermost statistic call runs inside `factory()` (e.g. a MAC
    counter that leaves the statistics out of a model's MACs, `bench.speed.flops`)."""
    _AROUND_STATISTICS.append(factory)
    try:
        yield
    finally:
        _AROUND_STATISTICS.remove(factory)


def statistic(fn: F) -> F:
    """No autograd and no autocast: the statistics run in their `compute_dtype` whatever region
    calls them (under autocast their matmuls would run in 16 bits, the float32 upcast wasted).
    Only the outermost call of nested statistics sets this up (and enters `around_statistics`);
    under `torch.compile` a plain no-grad, autocast-off region, which dynamo traces in one graph."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if torch.compiler.is_compiling():  # what dynamo traces without a graph break (no hooks there)
            with torch.no_grad(), torch.autocast("cpu", enabled=False), torch.autocast("cuda", enabled=False):
                return fn(*args, **kwargs)
        depth = getattr(_depth, "value", 0)
        if depth:
            return fn(*args, **kwargs)
        _depth.value = 1
        try:
            with contextlib.ExitStack() as stack:
                stack.enter_context(torch.no_grad())
                for device_type in AUTOCAST_DEVICE_TYPES:  # only the regions that are on: nothing to pay otherwise
                    if torch.is_autocast_enabled(device_type):
                        stack.enter_context(torch.autocast(device_type, enabled=False))
                for factory in list(_AROUND_STATISTICS):
                    stack.enter_context(factory())
                return fn(*args, **kwargs)
        finally:
            _depth.value = 0
    return wrapper  # type: ignore[return-value]


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
        return max(1, min(N, chunk_elements(layer.q.device) // max(1, B * H * N)))
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


@statistic
def cls_row_softmax(layer: "LayerQK", token: int = 0) -> torch.Tensor:
    """Softmax over keys of query `token`'s scores: ``[B, H, N]``."""
    _check_token(layer, token)
    q, k = _qk(layer)
    scores = torch.einsum("bhd,bhnd->bhn", q[:, :, token] * layer.scale, k)
    return scores.softmax(dim=-1)


@statistic
def cls_column_softmax(layer: "LayerQK", token: int = 0) -> torch.Tensor:
    """Softmax over queries of key `token`'s scores: ``[B, H, N]``."""
    return cls_row_softmax(transposed(layer), token)


@statistic
def row_times_attention(v: torch.Tensor, layer: "LayerQK", chunk: int | None = None) -> torch.Tensor:
    """v·A for row vectors v ``[B, H, N]``; A's rows are built `chunk` at a time."""
    q, k = _qk(layer)
    q, keys_t = q * layer.scale, k.transpose(-2, -1)
    v = v.to(q.dtype)
    step = chunk_size(layer, chunk)
    out = torch.zeros_like(v)
    for start in range(0, layer.num_tokens, step):
        rows = slice(start, start + step)
        probs = softmax_(q[:, :, rows] @ keys_t)  # [B, H, chunk, N]
        out += (v[:, :, None, rows] @ probs).squeeze(-2)
    return out


def softmax_(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis written over `scores` (the slice's only N-wide buffer). The
    kernels read each element before writing it, so the aliased output gives the same bits as
    `scores.softmax(-1)`."""
    return torch.softmax(scores, dim=-1, out=scores)


@statistic
def column_softmax_times(layer: "LayerQK", u: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """C·u for column vectors u ``[B, H, N]``; C·u = u·Cᵀ, a row product with the transposed layer."""
    return row_times_attention(u, transposed(layer), chunk)


def _nonempty(layers: Sequence["LayerQK"]) -> list["LayerQK"]:
    layers = list(layers)
    if not layers:
        raise ValueError("a rollout needs at least one layer")
    return layers


@statistic
def rollout_row(layers: Sequence["LayerQK"], token: int = 0, chunk: int | None = None) -> torch.Tensor:
    """Row `token` of A_{n-1}···A_0, per head: ``[B, H, N]``."""
    *earlier, last = _nonempty(layers)
    v = cls_row_softmax(last, token)
    for layer in reversed(earlier):
        v = row_times_attention(v, layer, chunk)
    return v


@statistic
def rollout_column(layers: Sequence["LayerQK"], token: int = 0, chunk: int | None = None) -> torch.Tensor:
    """Column `token` of C_{n-1}···C_0, per head: ``[B, H, N]``."""
    first, *later = _nonempty(layers)
    u = cls_column_softmax(first, token)
    for layer in later:
        u = column_softmax_times(layer, u, chunk)
    return u


@statistic
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
            probs = softmax_(q[:, :, start:start + step] @ keys_t)  # [B, H, r, N]
            r = probs.shape[2]
            weights = weighted[:, None, start:start + step].expand(B, H, r).reshape(B, 1, H * r)
            part = torch.bmm(weights, probs.reshape(B, H * r, N)).squeeze(1)
            pushed = part if pushed is None else pushed + part
        v = torch.add(pushed, v, alpha=0.5)  # 0.5·(v·mean_h A) + 0.5·v
    return v
