"""One speed case (a workload, compiled or not) measured in three phases, and the loop over cases.

Per case, on a freshly built model: training on a synthetic batch, training fed by the real
loader (`--with-data`), then inference on the synthetic batch. Training and inference each back
off their batch on out-of-memory (`bench.speed.backoff`); the data phase runs at the batch
training ran at. Peak memory is reset at the start of each synthetic phase (training: weights,
gradients, optimizer state and activations; inference: weights and activations), and one extra
profiled training step gives the step's own peak and saved-for-backward bytes
(`bench.speed.activations`). A failing case becomes a row with an `error`, and the loop goes on.

`Settings.interleave` groups cases whose steps alternate one by one (`bench.speed.interleave`):
``modes`` (the attention modes of one method, size, batch and compile setting), ``all`` (every
case of one size and batch) or ``off`` (case after case, as above).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from bench.errors import UsageError, one_line
from bench.meters import PeakMemory
from bench.speed.activations import step_memory
from bench.speed.backoff import release, run_with_backoff
from bench.speed.flops import model_gmacs
from bench.speed.interleave import measure_interleaved
from bench.speed.peaks import mfu
from bench.speed.steps import InferStep, TrainStep, synthetic_batch
from bench.speed.timing import synchronize, time_steps
from bench.speed.workload import Workload


@dataclass(frozen=True)
class Settings:
    device: torch.device
    precision: str
    warmup: int
    steps: int
    counter: str  # a key of bench.speed.flops.COUNTERS
    peak_tflops: float | None = None  # the device's dense peak for the precision; None: no MFU
    compile_backend: str = "inductor"
    compile_mode: str | None = None
    clock: Callable[[], float] = time.perf_counter
    interleave: str = "off"  # a key of INTERLEAVE


INTERLEAVE: dict[str, Callable[["Case"], tuple] | None] = {
    "off": None,
    "modes": lambda case: (case.workload.label, case.compiled, case.workload.recipe.img_size,
                           case.workload.recipe.batch_size),
    "all": lambda case: (case.workload.recipe.img_size, case.workload.recipe.batch_size),
}


@dataclass(frozen=True)
class Case:
    workload: Workload
    compiled: bool = False

    @property
    def describe(self) -> str:
        r = self.workload.recipe
        return (f"{self.workload.label} {self.workload.attention}{' compiled' if self.compiled else ''} "
                f"{r.img_size}px batch {r.batch_size}")


def memory_columns(prefix: str, peak) -> dict[str, float | None]:
    return {f"{prefix}_peak_allocated_mb": peak.allocated_mb, f"{prefix}_peak_reserved_mb": peak.reserved_mb,
            f"{prefix}_peak_rss_mb": peak.rss_mb}


def compile_columns(prefix: str, timing: dict[str, Any], compiled: bool) -> dict[str, float | None]:
    """Compile time = the first step's excess over a typical step (tracing and code generation)."""
    if not compiled or timing.get(f"{prefix}_step_ms_median") is None:
        return {f"{prefix}_compile_s": None}
    excess = timing[f"{prefix}_first_step_s"] - timing[f"{prefix}_step_ms_median"] / 1000.0
    return {f"{prefix}_compile_s": max(0.0, excess)}


def train_phase(model, forward, workload: Workload, batch: int, settings: Settings, feed=None,
                prefix: str = "train") -> dict[str, Any]:
    """Timed training steps at `batch`: on one synthetic batch, or on `feed()` batches (the loader)."""
    device = settings.device
    if feed is None:
        images, targets = synthetic_batch(batch, workload.recipe.img_size, workload.num_classes, device)
    model.train()
    step = TrainStep(model, forward, workload, settings.precision, device)
    run = (lambda: step(images, targets)) if feed is None else (lambda: step(*feed()))
    try:
        memory = PeakMemory(device).start()
        try:
            timing = time_steps(run, device, settings.warmup, settings.steps, batch, prefix, settings.clock)
        finally:
            peak = memory.stop()
        if feed is None:  # after the peak meter: its own, profiled step
            timing.update(step_memory(run, model, device), **memory_columns(prefix, peak))
    finally:
        model.zero_grad(set_to_none=True)
    return timing


def infer_phase(model, forward, workload: Workload, batch: int, settings: Settings) -> dict[str, Any]:
    device = settings.device
    images, _ = synthetic_batch(batch, workload.recipe.img_size, workload.num_classes, device)
    model.eval()
    step = InferStep(forward, settings.precision, device)
    memory = PeakMemory(device).start()
    try:
        timing = time_steps(lambda: step(images), device, settings.warmup, settings.steps, batch, "infer",
                            settings.clock)
    finally:
        peak = memory.stop()
    return {**timing, **memory_columns("infer", peak)}


def measure_case(case: Case, settings: Settings, data=None) -> dict[str, Any]:
    """The row of one case (without the FLOP and ratio columns, added by `run_suite`)."""
    try:
        return _measure(case, settings, data)
    finally:  # the case's model, optimizer and compiled code are gone once `_measure` returns
        release(settings.device)


def build_model(case: Case, settings: Settings, row: dict[str, Any]) -> tuple:
    """(model on the device, what a step calls: the model or its torch.compile wrapper); adds `param_count`."""
    model = case.workload.build().to(settings.device)
    row["param_count"] = sum(p.numel() for p in model.parameters()) / 1e6
    forward = model
    if case.compiled:
        forward = torch.compile(model, backend=settings.compile_backend, mode=settings.compile_mode)
    return model, forward


def _measure(case: Case, settings: Settings, data) -> dict[str, Any]:
    workload, device = case.workload, settings.device
    requested = workload.recipe.batch_size
    row: dict[str, Any] = {"method": workload.label, "attention": workload.attention, "compile": case.compiled,
                           "img_size": workload.recipe.img_size, "batch_size": requested}
    errors: list[str] = []
    try:
        if case.compiled:
            torch._dynamo.reset()  # a fresh model: start from empty caches (and recompile limits)
        model, forward = build_model(case, settings, row)
    except Exception as exc:  # noqa: BLE001 - e.g. a method without an eager mode: a row with the error
        row["error"] = one_line(f"{type(exc).__name__}: {exc}", limit=300)
        return row
    phases = [("train", lambda b: train_phase(model, forward, workload, b, settings)),
              ("infer", lambda b: infer_phase(model, forward, workload, b, settings))]
    for name, phase in phases:
        try:
            ran = run_with_backoff(phase, requested, device)
        except Exception as exc:  # noqa: BLE001 - recorded in the row; the other phases still run
            errors.append(f"{name}: {one_line(f'{type(exc).__name__}: {exc}', limit=300)}")
            continue
        row.update(ran.result)
        row.update(compile_columns(name, ran.result, case.compiled))
        row[f"{name}_batch_size"] = ran.batch_size
        row[f"{name}_batches_tried"] = ran.tried
        if name == "train" and data is not None:
            errors += data_phase(row, model, forward, workload, ran.batch_size, settings, data)
    row["error"] = "; ".join(errors) or None
    return row


def data_phase(row: dict[str, Any], model, forward, workload: Workload, batch: int, settings: Settings,
               data) -> list[str]:
    """End-to-end training rate from the loader, at the batch the synthetic phase ran at."""
    row.update(dataset=data.name, data_workers=data.workers)
    try:
        recipe = dataclasses.replace(workload.recipe, batch_size=batch)
        feed = data.feed(recipe, settings.device)
        row.update(train_phase(model, forward, workload, batch, settings, feed=feed, prefix="data"))
        return []
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001
        return [f"data: {one_line(f'{type(exc).__name__}: {exc}', limit=300)}"]


def add_flops(row: dict[str, Any], gmacs: dict[str, float | None], peak: float | None) -> None:
    row.update(gmacs)
    row["train_mfu"] = mfu(row.get("train_samples_per_sec"), gmacs.get("train_gmacs"), peak, train=True)
    row["infer_mfu"] = mfu(row.get("infer_samples_per_sec"), gmacs.get("infer_gmacs"), peak, train=False)


def groups(cases: Sequence[Case], interleave: str) -> list[list[Case]]:
    """Cases measured together, in the order their first case comes (`INTERLEAVE`)."""
    key = INTERLEAVE[interleave]
    if key is None:
        return [[case] for case in cases]
    grouped: dict[tuple, list[Case]] = {}
    for case in cases:
        grouped.setdefault(key(case), []).append(case)
    return list(grouped.values())


def measure_group(group: list[Case], settings: Settings, data=None) -> list[dict[str, Any]]:
    if len(group) == 1 or data is not None:  # the loader phase is measured case by case
        return [measure_case(case, settings, data) for case in group]
    if any(case.compiled for case in group):
        torch._dynamo.reset()
    try:
        return measure_interleaved(group, settings, lambda case, row: build_model(case, settings, row))
    finally:
        release(settings.device)


def run_suite(cases: Sequence[Case], settings: Settings, data=None,
              log=lambda text: print(text, file=sys.stderr, flush=True)) -> list[dict[str, Any]]:
    """Every case (the eager and fused rows of a configuration next to each other), interleaved as
    `settings.interleave` says, with model GMACs counted once per method and size on the fused
    model, and MFU against the peak."""
    counted: dict[tuple, dict[str, float | None]] = {}
    position = {id(case): index for index, case in enumerate(cases)}
    measured: list[tuple[int, dict[str, Any]]] = []
    for group in groups(cases, settings.interleave):
        for case in group:
            workload = case.workload
            key = (workload.label, workload.recipe.img_size)
            if key not in counted:
                try:
                    counted[key] = model_gmacs(workload.build_fused, workload.recipe.img_size, workload.num_classes,
                                               settings.device, settings.counter)
                except Exception as exc:  # noqa: BLE001 - reported with the method's rows
                    counted[key] = {"infer_gmacs": None, "train_gmacs": None,
                                    "flops_error": one_line(f"{type(exc).__name__}: {exc}", limit=300)}
                release(settings.device)
        synchronize(settings.device)
        for case, row in zip(group, measure_group(group, settings, data)):
            gmacs = dict(counted[(case.workload.label, case.workload.recipe.img_size)])
            flops_error = gmacs.pop("flops_error", None)
            if flops_error:
                row["error"] = "; ".join(filter(None, [row.get("error"), f"flops: {flops_error}"]))
            add_flops(row, gmacs, settings.peak_tflops)
            measured.append((position[id(case)], row))
            log(f"[{len(measured)}/{len(cases)}] {case.describe}: " + progress_line(row))
    return [row for _, row in sorted(measured, key=lambda pair: pair[0])]  # in the order of the cases


def progress_line(row: dict[str, Any]) -> str:
    if row.get("error") and row.get("train_samples_per_sec") is None:
        return f"error: {row['error']}"
    parts = []
    for prefix in ("train", "data", "infer"):
        rate = row.get(f"{prefix}_samples_per_sec")
        if rate is not None:
            parts.append(f"{prefix} {rate:.1f}/s")
    return ", ".join(parts) + (f" (error: {row['error']})" if row.get("error") else "")
