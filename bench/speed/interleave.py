"""Cases measured side by side: their steps alternate one by one instead of running case after case.

On a shared machine the load of other processes drifts over minutes, so two cases timed one after
the other see different machines (wall-time ratios moved by up to 2x between runs). Here every
case of a group is built once, then each round runs one step of every case in turn, each timed
alone by the run's clock (thread CPU time on a single-threaded CPU run: the work of this thread,
whatever else runs): first steps, warm-ups and timed steps of training, then of inference. A
drift then lands on all cases of a round alike. A case whose step fails leaves the rotation with
its error; the others go on. There is no out-of-memory back-off here (a CPU run rarely needs it;
`--interleave off` has it). Peak-memory meters cannot separate models that run in turn, so the
memory figure of each case is its profiled training step (`bench.speed.activations`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from bench.errors import one_line
from bench.speed.activations import step_memory
from bench.speed.steps import InferStep, TrainStep, synthetic_batch
from bench.speed.timing import synchronize


@dataclass
class Entry:
    case: Any
    row: dict[str, Any]
    model: Any = None
    forward: Any = None
    steps: dict[str, Callable[[], Any]] = field(default_factory=dict)
    error: str | None = None


def timed(run: Callable[[], Any], settings) -> float:
    synchronize(settings.device)
    started = settings.clock()
    run()
    synchronize(settings.device)
    return settings.clock() - started


def summarize(prefix: str, first: float, seconds: list[float], samples: int, warmup: int) -> dict[str, Any]:
    """The columns `bench.speed.timing.time_steps` gives, from per-step times (warm-ups already dropped)."""
    total = sum(seconds)
    return {
        f"{prefix}_samples_per_sec": samples * len(seconds) / total if total > 0 else None,
        f"{prefix}_step_ms_median": float(np.median(seconds)) * 1000.0,
        f"{prefix}_step_ms_p90": float(np.percentile(seconds, 90)) * 1000.0,
        f"{prefix}_timed_steps": len(seconds),
        f"{prefix}_warmup_steps": warmup,
        f"{prefix}_first_step_s": first,
        f"{prefix}_step_ms": [s * 1000.0 for s in seconds],
    }


def fail(entry: Entry, phase: str, exc: BaseException) -> None:
    entry.error = f"{phase}: {one_line(f'{type(exc).__name__}: {exc}', limit=300)}"
    entry.steps.clear()


def measure_interleaved(cases: Sequence[Any], settings, build: Callable[[Any, dict], tuple]) -> list[dict[str, Any]]:
    """Rows of `cases` measured in rotation (see the module). `build(case, row)` gives (model, forward)
    and fills the row's build columns (as `bench.speed.suite` does for one case)."""
    entries = []
    for case in cases:
        row = {"method": case.workload.label, "attention": case.workload.attention, "compile": case.compiled,
               "img_size": case.workload.recipe.img_size, "batch_size": case.workload.recipe.batch_size}
        entry = Entry(case, row)
        try:
            entry.model, entry.forward = build(case, row)
        except Exception as exc:  # noqa: BLE001 - a row with the error, as for one case
            entry.error = one_line(f"{type(exc).__name__}: {exc}", limit=300)
        entries.append(entry)
    for phase in ("train", "infer"):
        rotation(phase, [e for e in entries if e.model is not None and e.error is None], settings)
    rows = []
    for entry in entries:
        entry.row["error"] = "; ".join(filter(None, [entry.error, entry.row.pop("memory_error", None)])) or None
        rows.append(entry.row)
    return rows


def prepare(entry: Entry, phase: str, settings) -> Callable[[], Any]:
    workload, device = entry.case.workload, settings.device
    batch = workload.recipe.batch_size
    images, targets = synthetic_batch(batch, workload.recipe.img_size, workload.num_classes, device)
    if phase == "train":
        entry.model.train()
        step = TrainStep(entry.model, entry.forward, workload, settings.precision, device)
        return lambda: step(images, targets)
    step = InferStep(entry.forward, settings.precision, device)
    return lambda: step(images)


def rotation(phase: str, entries: list[Entry], settings) -> None:
    """First step of each, then `warmup - 1` untimed and `steps` timed rounds, one step of each a round."""
    for entry in entries:
        try:
            entry.steps[phase] = prepare(entry, phase, settings)
        except Exception as exc:  # noqa: BLE001
            fail(entry, phase, exc)
    live = [e for e in entries if phase in e.steps]
    firsts: dict[int, float] = {}
    times: dict[int, list[float]] = {id(e): [] for e in live}
    for round_ in range(settings.warmup + settings.steps):
        for entry in list(live):
            try:
                seconds = timed(entry.steps[phase], settings)
            except Exception as exc:  # noqa: BLE001 - this case leaves the rotation with its error
                fail(entry, phase, exc)
                live.remove(entry)
                continue
            if round_ == 0:
                firsts[id(entry)] = seconds
            elif round_ >= settings.warmup:
                times[id(entry)].append(seconds)
    for entry in live:
        batch = entry.case.workload.recipe.batch_size
        entry.row.update(summarize(phase, firsts[id(entry)], times[id(entry)], batch, settings.warmup))
        entry.row[f"{phase}_batch_size"] = batch
        entry.row[f"{phase}_batches_tried"] = [batch]
        if phase == "train":
            try:
                entry.row.update(step_memory(entry.steps[phase], entry.model, settings.device))
            except Exception as exc:  # noqa: BLE001 - the timing stands; the memory figure is missing
                entry.row["memory_error"] = one_line(f"{type(exc).__name__}: {exc}", limit=200)
            entry.model.zero_grad(set_to_none=True)
        entry.steps.pop(phase, None)
    if settings.device.type == "cuda":
        torch.cuda.empty_cache()
