"""The measured steps: one training update and one inference forward, as `bench.py run` does them.

Mixed precision is `torch.autocast` around the forward (what accelerate and timm's `amp` do),
with a `GradScaler` for fp16; the optimizer is the recipe's over the adapter's parameter groups
(`bench.optim`), gradients are clipped when the recipe clips, and `zero_grad(set_to_none=True)`
ends the step. Nothing in a step reads a value back to the host, except fp16's scaler, which
must (accelerate's does too).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from bench.optim import build_optimizer

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str):
    """The forward's mixed-precision context (`no`: full precision)."""
    if precision not in AUTOCAST_DTYPES:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])


def synthetic_batch(batch_size: int, img_size: int, num_classes: int, device: torch.device,
                    seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """One normalised-looking float image batch and random labels, reused every step (no input pipeline)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, 3, img_size, img_size, generator=generator)
    targets = torch.randint(0, num_classes, (batch_size,), generator=generator)
    return images.to(device), targets.to(device)


class TrainStep:
    """`step(images, targets)`: forward with targets, backward, clip, optimizer step, zero_grad."""

    def __init__(self, model: nn.Module, forward, workload, precision: str, device: torch.device):
        self.forward = forward  # the model, or its torch.compile wrapper
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(workload.param_groups(model), workload.recipe)
        self.clip = workload.recipe.clip_grad
        self.precision = precision
        self.device = device
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        with autocast(self.device, self.precision):
            loss = self.forward(images, targets)["loss"]
        if self.scaler is None:
            loss.backward()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        if self.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        if self.scaler is None:
            self.optimizer.step()
        else:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)


class InferStep:
    """`step(images)`: the evaluation forward (logits), under `no_grad` like `bench.runner.evaluate`."""

    def __init__(self, forward, precision: str, device: torch.device):
        self.forward = forward
        self.precision = precision
        self.device = device

    def __call__(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> None:
        with torch.no_grad(), autocast(self.device, self.precision):
            self.forward(images)
