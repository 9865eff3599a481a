"""Learning-rate schedule of the originals: linear warm-up from 0, then cosine (or linear) decay to 0.

`lr_multiplier(s)` is the factor applied to the base lr at scheduler step s (FFVT
`utils/scheduler.py`: WarmupCosineSchedule / WarmupLinearSchedule).
"""

from __future__ import annotations

import math
import warnings
from functools import partial

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def lr_multiplier(step: int, warmup_steps: int, total_steps: int, schedule: str = "cosine") -> float:
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: Optimizer, recipe) -> LambdaLR:
    """LambdaLR stepped once per optimizer update; `recipe.lr_step_offset` picks the update order."""
    fn = partial(_shifted, offset=recipe.lr_step_offset, warmup_steps=recipe.warmup_steps,
                 total_steps=recipe.steps, schedule=recipe.schedule)
    return LambdaLR(optimizer, fn)


def _shifted(step: int, offset: int, warmup_steps: int, total_steps: int, schedule: str) -> float:
    return lr_multiplier(step + offset, warmup_steps, total_steps, schedule)


def fast_forward(scheduler: LambdaLR, steps: int) -> None:
    """Advance a fresh schedule by `steps` updates (a resumed run), as the interrupted run left it.

    The schedule is a function of the step alone, so stepping it before the restored optimizer's
    first `step()` is intended; torch's warning about that order does not apply here.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
        for _ in range(steps):
            scheduler.step()
