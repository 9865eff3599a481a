"""Out-of-memory back-off, as timm's `benchmark.py` does it.

A phase that runs out of memory is retried at the next batch of `timm.utils.decay_batch_step`
(16, 12, 8, 6, 4, 3, 2, 1), after the failed attempt's tensors are released. Errors after which
the device is unusable (`check_batch_size_retry`: illegal memory access) and any error that is
not an out-of-memory error are raised. The batch that finally ran is the reported one.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from timm.utils import check_batch_size_retry, decay_batch_step

from bench.errors import one_line
from bench.oom import is_oom


def retryable(exc: BaseException) -> bool:
    """An out-of-memory error (CUDA, or the CPU allocator's) that leaves the device usable."""
    return is_oom(exc) and check_batch_size_retry(str(exc))


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class OutOfMemory(RuntimeError):
    """Every batch down to 1 ran out of memory."""


@dataclass
class BackedOff:
    result: Any
    batch_size: int
    tried: list[int] = field(default_factory=list)  # every batch attempted, the last one ran
    error: str | None = None  # the last out-of-memory message when a retry happened


def run_with_backoff(phase: Callable[[int], Any], batch_size: int, device: torch.device) -> BackedOff:
    """`phase(batch)` at `batch_size`, then smaller batches while it runs out of memory."""
    tried: list[int] = []
    error = None
    batch = batch_size
    while batch > 0:
        tried.append(batch)
        try:
            return BackedOff(phase(batch), batch, tried, error)
        except Exception as exc:  # noqa: BLE001 - only a retryable OOM is caught; the rest re-raises
            if not retryable(exc):
                raise
            error = one_line(f"{type(exc).__name__}: {exc}", limit=200)
        release(device)  # outside the except block: the traceback no longer pins the attempt's tensors
        batch = decay_batch_step(batch)
    raise OutOfMemory(f"out of memory at every batch size tried ({', '.join(map(str, tried))}): {error}")
