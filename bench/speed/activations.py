"""Activation memory of one training step, exact on any device: the profiler's allocation events.

A process's RSS cannot tell a fused step from an eager one on a CPU (weights, the allocator's
cached pages and the interpreter dominate it: 0.8-0.9x for every method), so speed runs one extra,
untimed training step per case under `torch.profiler` with memory profiling and reports:

- ``train_peak_live_mb``: the peak of the bytes allocated during the step and not yet freed
  (replaying the allocation/free events in order), above what was live when it started:
  activations, the attention maps and statistics' transients, gradients and the optimizer's
  temporaries; weights and optimizer state that persist across steps are not in it;
- ``train_saved_mb``: the bytes autograd saved for the backward pass (`saved_tensors_hooks`), each
  storage counted once and parameters left out: the activations proper.

On CUDA the device's allocation events are replayed (CPU tensors are the host's), so the figure
is the same kind on both; the CUDA peak-allocated column stays beside it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Callable

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile


@contextlib.contextmanager
def quiet_stderr():
    """The profiler's C++ side prints start/stop lines (and, without a GPU, a device-count error) on
    file descriptor 2 whatever its log level: send them to /dev/null while it runs. Python errors
    surface after the descriptor is back."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as sink:
            os.dup2(sink.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def replay_peak(events: list[tuple[int, int]]) -> int:
    """Peak running sum of `(time, signed bytes)` allocation events, taken in time order (>= 0)."""
    live = peak = 0
    for _, nbytes in sorted(events, key=lambda event: event[0]):
        live += nbytes
        peak = max(peak, live)
    return peak


def step_memory(step: Callable[[], Any], model: nn.Module, device: torch.device) -> dict[str, float]:
    """Run `step()` once under the profiler; `train_peak_live_mb` and `train_saved_mb` (see the module)."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.device == device or storage.device.type == device.type:
            pointer = storage.data_ptr()
            if pointer not in parameters:
                saved[pointer] = storage.nbytes()
        return tensor

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with quiet_stderr(), torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), \
            profile(activities=activities, profile_memory=True) as prof:
        step()
    wanted = "CUDA" if device.type == "cuda" else "CPU"
    events = [(event.start_ns(), event.nbytes()) for event in prof.profiler.kineto_results.events()
              if event.name() == "[memory]" and str(event.device_type()).endswith(wanted)]
    return {"train_peak_live_mb": replay_peak(events) / 2**20, "train_saved_mb": sum(saved.values()) / 2**20}
