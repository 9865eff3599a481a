"""Fit the per-device batch before training: probe one forward/backward, halve on out-of-memory.

Halving means the largest divisor of the requested batch at most half the current one, so
accumulation can make up the difference exactly (12 -> 6 -> 3 -> 1).

The probe runs the plain (unwrapped) model on synthetic inputs of the cell's shape, with the
global RNG forked and BatchNorm statistics restored afterwards, so it leaves no trace in the
run. Every rank probes; the ranks agree on the smallest batch that fit everywhere (all-reduce
MAX of the number of halvings), and the recipe keeps its global batch by doubling gradient
accumulation each time the per-device batch halves.
"""

from __future__ import annotations

import dataclasses
import gc

import torch


CPU_ALLOCATION_FAILURE = "can't allocate memory"  # DefaultCPUAllocator's RuntimeError (no OutOfMemoryError type)


def is_oom(exc: BaseException) -> bool:
    """Out of memory on a GPU, or the CPU allocator refusing an allocation: the batch probe halves
    on both, and a cell that fails so is recorded `oom`."""
    message = str(exc).lower()
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in message or CPU_ALLOCATION_FAILURE in message


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def probe_fits(model: torch.nn.Module, batch_size: int, img_size: int, num_classes: int, accelerator,
               train: bool = True) -> bool:
    """One training forward/backward (or an evaluation forward) at `batch_size`; False if it ran out of memory."""
    device = accelerator.device
    buffers = {name: buf.detach().clone() for name, buf in model.named_buffers()}
    was_training = model.training
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(0)
            images = torch.randn(batch_size, 3, img_size, img_size, device=device)
            targets = torch.randint(0, num_classes, (batch_size,), device=device)
            model.train(train)
            if train:
                with accelerator.autocast():
                    out = model(images, targets)
                out["loss"].backward()
            else:
                with torch.no_grad(), accelerator.autocast():
                    model(images)
        return True
    except Exception as exc:  # noqa: BLE001 - only OOM is a verdict; anything else is a real error
        if not is_oom(exc):
            raise
        return False
    finally:
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            for name, buf in model.named_buffers():
                if name in buffers:
                    buf.copy_(buffers[name])
        model.train(was_training)
        _release(device)


def next_smaller_divisor(requested: int, current: int) -> int:
    """The largest divisor of `requested` that is at most half of `current` (keeps the global batch exact)."""
    return max(d for d in range(1, current // 2 + 1) if requested % d == 0)


def _agreed_fit(model, batch: int, img_size: int, num_classes: int, accelerator, train: bool) -> bool:
    fits = probe_fits(model, batch, img_size, num_classes, accelerator, train)
    mine = torch.tensor(0 if fits else 1, device=accelerator.device)
    return accelerator.reduce(mine, reduction="sum").item() == 0


def fit_batch(model: torch.nn.Module, recipe, num_classes: int, accelerator):
    """The recipe with the largest per-device batches that fit on every rank, and the training halvings.

    Training: the per-device batch shrinks and accumulation grows so the global batch is unchanged.
    Evaluation: only the evaluation batch shrinks (it does not change any result).
    """
    model.to(accelerator.device)
    halvings = 0
    batch = recipe.batch_size
    while not _agreed_fit(model, batch, recipe.img_size, num_classes, accelerator, train=True):
        if batch == 1:
            raise torch.OutOfMemoryError(
                f"out of memory even at a per-device batch of 1 (requested {recipe.batch_size})")
        batch = next_smaller_divisor(recipe.batch_size, batch)
        halvings += 1
    eval_batch = recipe.eval_batch_size
    while not _agreed_fit(model, eval_batch, recipe.img_size, num_classes, accelerator, train=False):
        if eval_batch == 1:
            raise torch.OutOfMemoryError("out of memory in evaluation even at a batch of 1")
        eval_batch //= 2
    factor = recipe.batch_size // batch
    fitted = dataclasses.replace(recipe, batch_size=batch, grad_accum=recipe.grad_accum * factor,
                                 eval_batch_size=eval_batch)
    return fitted, halvings
