"""The timing loop: warm-up steps, then timed steps, per-step times kept.

The first step runs alone between two device synchronisations and is timed on the host: it pays
for lazy initialisation, kernel selection and, under `--compile`, tracing and compiling, so it is
reported on its own (`first_step_s`) and never enters a rate. The remaining warm-up steps and the
timed steps run back to back through `bench.meters.StepTimer` (CUDA events on a GPU, read after
one synchronisation at the end; a monotonic clock on a CPU), which leaves the warm-up intervals
out of the summary. Rates are samples over the summed timed step times.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch

from bench.meters import StepTimer


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step: Callable[[], Any], device: torch.device, warmup: int, steps: int, samples: int, prefix: str,
               clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Run `warmup` (>= 1) untimed and `steps` timed calls of `step`, each worth `samples` samples.

    Returns `{prefix}_samples_per_sec`, `_step_ms_median`, `_step_ms_p90`, `_timed_steps`,
    `_warmup_steps`, `_first_step_s` and `_step_ms` (every timed step, in order).
    """
    if warmup < 1 or steps < 1:
        raise ValueError(f"need warmup >= 1 and steps >= 1, got {warmup} and {steps}")
    synchronize(device)
    started = clock()
    step()
    synchronize(device)
    first = clock() - started
    timer = StepTimer(device, warmup=warmup - 1, clock=clock)
    timer.start()
    for _ in range(warmup - 1 + steps):
        step()
        timer.mark(samples)
    seconds = timer.step_seconds()[warmup - 1:]
    return {
        **timer.summary(prefix),
        f"{prefix}_warmup_steps": warmup,
        f"{prefix}_first_step_s": first,
        f"{prefix}_step_ms": [s * 1000.0 for s in seconds],
    }
