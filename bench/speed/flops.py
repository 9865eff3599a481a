"""Model MACs per sample from one named counter, for the GMACs column and model FLOPs utilisation.

Counters (`--flop-counter`):

- ``deepspeed``: DeepSpeed's flops profiler (`FlopsProfiler`, the counter behind
  `get_model_profile`, which timm's benchmark uses). It patches `torch.nn.functional`
  (scaled-dot-product attention included) and tensor matmuls. Its MACs are used, never its FLOPs,
  which also count element-wise operations.
- ``torch``: `torch.utils.flop_counter.FlopCounterMode`; every formula it has counts a
  multiply-accumulate as 2 FLOPs, so MACs are its FLOPs / 2. torch has no formula for the CPU
  flash-attention kernel, so one is registered here (the same as for the CUDA kernels); without
  it fused attention would count as zero on a CPU.
- ``auto`` (default): ``deepspeed`` when it is installed, else ``torch``.

What is counted: the fast-path (fused) model of the case, so the eager and fused rows of a method
share one model-FLOPs figure (the eager reference's extra N×N work is waste, not model FLOPs),
without the attention statistics (rollouts, MAWS scores): they select tokens, carry no gradient
and are not the model's arithmetic, so counting them would inflate MFU (they are left out through
`methods.attention.fast.around_statistics`: a nested counter subtracted for torch's, a scratch
frame DeepSpeed's patched functions write into and that is dropped).
Inference: an evaluation forward at batch 1 (timm's convention). Training: a training forward
with targets at batch 2 (the smallest batch that methods mixing samples accept), per sample.
Both in float32 and under `no_grad`.
"""

from __future__ import annotations

import contextlib
from importlib import metadata
from typing import Any, Callable

import torch
from torch import nn

from bench.errors import UsageError
from bench.speed.steps import synthetic_batch
from methods.attention.fast import around_statistics

COUNTER_NAMES = ("auto", "deepspeed", "torch")


def _register_cpu_flash_attention() -> None:
    from torch.utils import flop_counter

    aten = torch.ops.aten
    for op, formula in (("_scaled_dot_product_flash_attention_for_cpu", flop_counter.sdpa_flop),
                        ("_scaled_dot_product_flash_attention_for_cpu_backward", flop_counter.sdpa_backward_flop)):
        packet = getattr(aten, op, None)
        if packet is not None and packet not in flop_counter.flop_registry:
            flop_counter.register_flop_formula(packet, get_raw=True)(formula)  # already shape-wrapped


def torch_macs(model: nn.Module, run: Callable[[], Any]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    _register_cpu_flash_attention()
    statistics: list[int] = []

    @contextlib.contextmanager
    def counted_apart():  # an inner mode sees the statistics' ops first; the outer one too
        with FlopCounterMode(display=False) as inner:
            yield
        statistics.append(inner.get_total_flops())

    with FlopCounterMode(display=False) as counter, around_statistics(counted_apart):
        run()
    return (counter.get_total_flops() - sum(statistics)) // 2


def deepspeed_macs(model: nn.Module, run: Callable[[], Any]) -> int:
    from deepspeed.profiling.flops_profiler import FlopsProfiler
    from deepspeed.profiling.flops_profiler import profiler as ds

    @contextlib.contextmanager
    def dropped():  # the patched functions append to the innermost frame: give them a scratch one
        ds.module_flop_count.append([])
        ds.module_mac_count.append([])
        try:
            yield
        finally:
            ds.module_flop_count.pop()
            ds.module_mac_count.pop()

    profiler = FlopsProfiler(model)
    profiler.start_profile()
    try:
        with around_statistics(dropped):
            run()
        return int(profiler.get_total_macs())
    finally:
        profiler.end_profile()


COUNTERS: dict[str, Callable[[nn.Module, Callable[[], Any]], int]] = {"deepspeed": deepspeed_macs, "torch": torch_macs}


def resolve_counter(name: str) -> str:
    """The counter `name` means here: `auto` -> deepspeed when installed, else torch."""
    if name not in COUNTER_NAMES:
        raise UsageError(f"--flop-counter must be one of {', '.join(COUNTER_NAMES)}, got {name!r}")
    has_deepspeed = _installed("deepspeed")
    if name == "deepspeed" and not has_deepspeed:
        raise UsageError("--flop-counter deepspeed needs DeepSpeed: pip install 'fgbench[deepspeed]' (or use torch)")
    if name == "auto":
        return "deepspeed" if has_deepspeed else "torch"
    return name


def counter_label(name: str) -> str:
    """What the output names: the counter and its library version."""
    what = {"deepspeed": "FlopsProfiler", "torch": "FlopCounterMode"}[name]
    return f"{name} {metadata.version(name)} {what}"


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


def count_macs(model: nn.Module, run: Callable[[], Any], counter: str) -> int:
    return COUNTERS[counter](model, run)


def model_gmacs(build: Callable[[], nn.Module], img_size: int, num_classes: int, device: torch.device,
                counter: str) -> dict[str, float]:
    """`infer_gmacs` (evaluation forward, batch 1) and `train_gmacs` (training forward, per sample)."""
    model = build().to(device)
    try:
        with torch.no_grad():
            model.eval()
            images, _ = synthetic_batch(1, img_size, num_classes, device)
            infer = count_macs(model, lambda: model(images), counter)
            model.train()
            images, targets = synthetic_batch(2, img_size, num_classes, device)
            train = count_macs(model, lambda: model(images, targets), counter) / 2
    finally:
        del model
    return {"infer_gmacs": infer / 1e9, "train_gmacs": train / 1e9}
