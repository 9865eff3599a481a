"""Run one cell on accelerate: data, model, training loop, evaluation, record.

The runner is method-agnostic: it builds the adapter's module, calls `model(images, targets)`
for the loss and `model(images)` for logits (see `methods.base`), and measures. Any exception
inside a cell becomes a record with status failed/oom/diverged and the caller goes on; a stop
signal checkpoints the cell and records it as interrupted (it resumes on the next run).
"""

from __future__ import annotations

import gc
import time
import traceback
import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import gather_object, set_seed

from bench import checkpoint, progress, records, trackers
from bench.classes import ClassTally
from bench.data import check_files, get_card, open_dataset
from bench.data.cache import resized_images
from bench.data.transforms import normalize
from bench.data.valsplit import choose_val
from bench.envinfo import environment
from bench.errors import Diverged, one_line
from bench.loaders import BatchStream, build_loaders
from bench.matrix import Cell
from bench.meters import PeakMemory, StepTimer
from bench.models import save_model
from bench.oom import fit_batch, is_oom
from bench.optim import build_optimizer
from bench.schedule import build_scheduler, fast_forward
from bench.signals import Interrupted, StopRequest
from bench.strategy import input_dtype, is_deepspeed
from methods import get_method
from methods.pretrained import pretrained_reports

LOG_EVERY = 10  # steps between host syncs (loss readout, divergence and stop checks across ranks)


@dataclass
class RunContext:
    accelerator: Accelerator
    data_root: Path
    results_dir: Path
    workers: int = 0
    progress: bool = True
    progress_style: str = "bar"  # bar | plain | none (see bench.progress)
    data_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    cache_dir: Path | None = None  # decode-and-resize cache; None reads images every time
    stop: StopRequest = field(default_factory=StopRequest)
    checkpoint_every: int = 0  # steps between periodic checkpoints (0: only when stopped by a signal)
    log_with: list[str] = field(default_factory=list)  # experiment trackers, one run per cell (bench.trackers)
    save_model: bool = False  # keep the final weights under <results>/models/<cell_id> (bench.models)


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def classify_failure(exc: BaseException) -> str:
    if isinstance(exc, Interrupted):
        return "interrupted"
    if isinstance(exc, Diverged):
        return "diverged"
    if is_oom(exc):
        return "oom"
    return "failed"


def base_record(cell: Cell, ctx: RunContext) -> dict[str, Any]:
    acc = ctx.accelerator
    recipe = cell.recipe
    previous = records.read_record(cell.record_path(ctx.results_dir))
    return {
        "schema_version": records.SCHEMA_VERSION,
        "cell_id": cell.cell_id,
        "setting_id": cell.setting_id,
        "run_id": uuid.uuid4().hex,
        "attempt": (previous or {}).get("attempt", 0) + 1,
        "status": "failed",
        "error": None,
        "method": cell.method,
        "variant": cell.variant,
        "method_label": cell.method_label,
        "dataset": cell.dataset,
        "seed": cell.seed,
        "preset": cell.preset,
        "precision": cell.precision,
        "strategy": cell.strategy,
        "world_size": cell.world_size,
        "img_size": recipe.img_size,
        "resize_size": recipe.resize_size,
        "requested_per_device_batch": recipe.batch_size,
        "per_device_batch": recipe.batch_size,
        "grad_accum": recipe.grad_accum,
        "global_batch": recipe.batch_size * cell.world_size * recipe.grad_accum,
        "steps": recipe.steps,
        "lr": recipe.lr,
        "options": cell.options,
        "recipe": recipe.to_dict(),
        "recipe_sources": cell.recipe_sources,
        "backbone": asdict(cell.backbone),
        "strategy_config": cell.strategy_config or None,
        "pretrained": asdict(cell.backbone.pretrained) if cell.backbone.pretrained else None,
        "distributed": {
            "distributed_type": str(acc.distributed_type),
            "num_processes": acc.num_processes,
            "mixed_precision": acc.mixed_precision,
        },
        "env": environment(acc.device),
        "time": {"start_utc": utc_now()},
    }


def run_cell(cell: Cell, ctx: RunContext) -> dict[str, Any]:
    """Train and evaluate one cell; return its record (written by the main process)."""
    acc = ctx.accelerator
    record = base_record(cell, ctx)
    started = time.perf_counter()
    try:
        trackers.start_run(acc, ctx.log_with, cell, record)
        result = train_and_evaluate(cell, ctx)
        record["time"].update(result.pop("time_split"))
        record.update(result)
        record["status"] = "ok"
    except Exception as exc:  # a failing cell is recorded; the matrix goes on
        record["status"] = classify_failure(exc)
        record["error"] = one_line(f"{type(exc).__name__}: {exc}")
        if isinstance(exc, Interrupted):
            record["checkpoint"] = {"path": exc.checkpoint, "step": exc.step}
        else:
            record["traceback"] = traceback.format_exc(limit=12)[-4000:]
    finally:
        acc.free_memory()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    record["time"].update(end_utc=utc_now(), wall_s=time.perf_counter() - started)
    if acc.is_main_process:
        try:
            records.write_record(cell.record_path(ctx.results_dir), record)
        except OSError as exc:  # e.g. a full disk: the cell is lost, not the matrix (atomic: no partial file)
            record.update(status="failed", error=one_line(f"{type(exc).__name__}: {exc}"))
            acc.print(f"fgbench: {cell.describe()}: cannot write its record {cell.record_path(ctx.results_dir)} "
                      f"({exc.strerror or exc}); the cell counts as failed")
        else:
            if record["status"] in records.FINISHED:  # only an interrupted cell resumes from its checkpoint
                checkpoint.remove(checkpoint.checkpoint_dir(ctx.results_dir, cell.cell_id))
        trackers.finish_run(acc, record)
    acc.wait_for_everyone()
    return record


def val_selection(curve: list[dict[str, Any]], val_curve: list[dict[str, Any]]) -> dict[str, Any]:
    """Test top-1 at the evaluation with the best validation top-1 (the earliest on ties)."""
    if not val_curve:
        return {}
    best = max(range(len(val_curve)), key=lambda i: (val_curve[i]["top1"], -i))
    step = val_curve[best]["step"]
    test = next(point for point in curve if point["step"] == step)
    return {"top1_valsel": test["top1"], "top5_valsel": test["top5"], "valsel_step": step,
            "val_top1_best": val_curve[best]["top1"], "val_curve": val_curve}


def cached_splits(roles: dict[str, Any], recipe, ctx: RunContext, dataset: str) -> dict | None:
    """Build (main process) then open (every process) the decode-and-resize cache of the splits in use.

    Views (carved train/val) are served from their parent's cache, so carving with another seed
    decodes nothing again.
    """
    if ctx.cache_dir is None:
        return None
    bases = {}
    for split in roles.values():
        base = split.parent if split.parent is not None else split
        bases[base.name] = base
    acc = ctx.accelerator
    if acc.is_main_process:
        for base in bases.values():
            resized_images(base, recipe.resize_size, ctx.cache_dir, dataset,
                           ctx.progress and ctx.progress_style == "bar")
    acc.wait_for_everyone()
    return {name: resized_images(base, recipe.resize_size, ctx.cache_dir, dataset, False)
            for name, base in bases.items()}


def train_and_evaluate(cell: Cell, ctx: RunContext) -> dict[str, Any]:
    acc = ctx.accelerator
    started = time.perf_counter()
    set_seed(cell.seed)

    card = get_card(cell.dataset)
    data = open_dataset(card, ctx.data_root, ctx.data_options.get(card.name))
    check_files(data)
    train_split, val_split, val_info = choose_val(data, cell.recipe, cell.seed)  # own RNG: the global stream is untouched
    roles = {"train": train_split, "test": data.test, **({"val": val_split} if val_split is not None else {})}
    adapter = get_method(cell.method)
    model = adapter.create(card.num_classes, cell.backbone, cell.options, cell.recipe)
    loads = [report.to_dict() for report in pretrained_reports(model)]
    n_params = sum(p.numel() for p in model.parameters())
    recipe, halvings = cell.recipe, 0
    if not is_deepspeed(cell.strategy):  # ZeRO partitions memory differently from the plain model probed
        recipe, halvings = fit_batch(model, cell.recipe, card.num_classes, acc)
    optimizer = build_optimizer(adapter.param_groups(model, recipe), recipe)
    scheduler = build_scheduler(optimizer, recipe)
    resized = cached_splits(roles, recipe, ctx, data.name)
    loaders = build_loaders(roles, recipe, cell.seed, ctx.workers, acc.device, resized)

    memory = PeakMemory(acc.device).start()
    model, optimizer, train_loader, test_loader = acc.prepare(model, optimizer, loaders["train"], loaders["test"])
    val_loader = acc.prepare(loaders["val"]) if "val" in loaders else None
    acc.gradient_accumulation_steps = recipe.grad_accum
    acc.gradient_state.plugin_kwargs.update({"sync_with_dataloader": False})
    dtype = input_dtype(acc)
    batches = BatchStream(train_loader, acc)

    ckpt_dir = checkpoint.checkpoint_dir(ctx.results_dir, cell.cell_id)
    saved = checkpoint.load_progress(ckpt_dir, cell.cell_id)
    if saved is not None and saved.get("per_device_batch") != recipe.batch_size:
        saved = None  # the batch had to change (another device): the data position no longer applies
    if saved is not None and saved.get("split_hashes", data.hashes()) != data.hashes():
        acc.print(f"fgbench: {cell.describe()}: its checkpoint was made from other split lists; starting afresh")
        saved = None
    start_step, curve, val_curve, last_losses, classes = 0, [], [], {}, None
    if saved is not None:
        checkpoint.restore(acc, ckpt_dir)  # model, optimizer and RNG states
        fast_forward(scheduler, saved["step"])  # the schedule is a function of the step
        batches.load_state_dict(saved["stream"])
        start_step, curve, val_curve, last_losses = saved["step"], saved["curve"], saved["val_curve"], saved["last_losses"]

    def save_progress(step: int) -> Path:
        return checkpoint.save(acc, ckpt_dir, {
            "cell_id": cell.cell_id, "step": step, "stream": batches.state_dict(), "curve": curve,
            "val_curve": val_curve, "last_losses": last_losses, "per_device_batch": recipe.batch_size,
            "split_hashes": data.hashes(),
        })

    step_samples = recipe.batch_size * acc.num_processes * recipe.grad_accum
    train_timer = StepTimer(acc.device, warmup=min(10, (recipe.steps - start_step) // 5))
    eval_timer = StepTimer(acc.device, warmup=0)
    val_timer = StepTimer(acc.device, warmup=0)  # kept apart so the eval speed stays the test split's
    flags = torch.zeros(2, device=acc.device)  # [non-finite losses, stop requested]
    loss_sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=acc.device))
    loss_count = 0
    init_s = time.perf_counter() - started
    single = acc.num_processes == 1

    bar = progress.step_progress(ctx.progress_style, ctx.progress and acc.is_main_process, recipe.steps,
                                 start_step, cell.describe())
    try:
        model.train()
        train_timer.start()
        for step in range(start_step + 1, recipe.steps + 1):
            for _ in range(recipe.grad_accum):
                images, targets = next(batches)
                with acc.accumulate(model):
                    out = model(model_input(images, dtype), targets)
                    loss = out["loss"]
                    acc.backward(loss)
                    if acc.sync_gradients and recipe.clip_grad > 0:
                        acc.clip_grad_norm_(model.parameters(), recipe.clip_grad)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                flags[0] += (~torch.isfinite(loss.detach().float())).float()
                for name, value in out["losses"].items():
                    loss_sums[name] += value.detach().float()
                loss_count += 1
            scheduler.step()
            train_timer.mark(step_samples)
            bar.step()

            stop = False
            if step % LOG_EVERY == 0 or step == recipe.steps or (single and ctx.stop.requested):
                flags[1] = float(ctx.stop.requested)
                names = sorted(loss_sums)
                packed = torch.stack([flags[0], flags[1], *(loss_sums[n] for n in names)])
                agreed = acc.reduce(packed, reduction="sum").tolist()  # the only host syncs of the loop
                if agreed[0] > 0:
                    raise Diverged(f"non-finite training loss by step {step}")
                stop = agreed[1] > 0 and step < recipe.steps
                last_losses = {n: v / (loss_count * acc.num_processes) for n, v in zip(names, agreed[2:])}
                loss_sums.clear()
                loss_count = 0
                bar.synced(step, last_losses, scheduler.get_last_lr()[0])
                acc.log(trackers.train_metrics(last_losses, scheduler.get_last_lr()[0]), step=step)

            if step % recipe.eval_every == 0 or step == recipe.steps:
                tally = ClassTally(card.num_classes) if step == recipe.steps else None  # per class: last only
                result = evaluate(model, test_loader, acc, eval_timer, expected=len(data.test),
                                  num_classes=card.num_classes, dtype=dtype, tally=tally)
                classes = tally.summary(data.class_names) if tally is not None else classes
                curve.append({"step": step, **result, "train_losses": dict(last_losses)})
                if val_loader is not None:
                    val = evaluate(model, val_loader, acc, val_timer, expected=len(val_split),
                                   num_classes=card.num_classes, dtype=dtype)
                    val_curve.append({"step": step, **val})
                    acc.log(trackers.eval_metrics("val", val), step=step)
                acc.log(trackers.eval_metrics("test", result), step=step)
                bar.evaluated(step, result)
                model.train()
                train_timer.resume()
            if stop:
                raise Interrupted(step, str(save_progress(step)))
            if ctx.checkpoint_every and step % ctx.checkpoint_every == 0 and step < recipe.steps:
                save_progress(step)
                train_timer.resume()
    finally:
        bar.close()
    train_s = time.perf_counter() - started - init_s
    peak = memory.stop()
    saved_model = save_model(acc, model, cell, data.class_names, ctx.results_dir) if ctx.save_model else None

    final = curve[-1]
    best = max(curve, key=lambda point: point["top1"])  # earliest best on ties
    ranks = gather_object([asdict(peak)])
    return {
        "accuracy": {
            "top1_last": final["top1"],
            "top5_last": final["top5"],
            "eval_loss_last": final["loss"],
            "views_last": final.get("views", {}),
            "n_evaluated": final["n"],
            "n_test": len(data.test),
            "top1_best_optimistic": best["top1"],  # selected on the test split: optimistic by design
            "best_step_optimistic": best["step"],
            "curve": curve,
            "classes": classes,
            **val_selection(curve, val_curve),
        },
        **({"saved_model": saved_model} if saved_model else {}),
        "per_device_batch": recipe.batch_size,
        "grad_accum": recipe.grad_accum,
        "eval_batch_size": recipe.eval_batch_size,
        "oom_halvings": halvings,
        "resumed_from_step": start_step or None,
        "train": {"losses_last": last_losses, "loss_last": sum(last_losses.values()) if last_losses else None},
        "speed": {**train_timer.summary("train"), **eval_timer.summary("eval")},
        "memory": _memory_block(ranks),
        "cost": {"params": n_params, "params_m": n_params / 1e6},
        "pretrained_loads": loads,
        "data": {
            "root": str(data.root),
            "format": data.format,
            "n_train": len(train_split),
            "n_test": len(data.test),
            "n_classes": card.num_classes,
            "split_hashes": data.hashes(),  # the lists on disk; a carved train/val is described under "val"
            "val": val_info,
        },
        "time_split": {"init_s": init_s, "train_s": train_s},
    }


def model_input(images: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """Loaders deliver uint8 images; normalise on the device (and cast for DeepSpeed's low-precision engines)."""
    images = normalize(images)
    return images if dtype is None else images.to(dtype)


def _memory_block(ranks: list[dict[str, float | None]]) -> dict[str, Any]:
    def column(key):
        values = [r[key] for r in ranks]
        return values if any(v is not None for v in values) else None

    allocated, reserved, rss = column("allocated_mb"), column("reserved_mb"), column("rss_mb")
    return {
        "peak_allocated_mb": allocated,
        "peak_reserved_mb": reserved,
        "peak_rss_mb": rss,
        "peak_allocated_mb_max": max(allocated) if allocated else None,
        "peak_reserved_mb_max": max(reserved) if reserved else None,
        "peak_rss_mb_max": max(rss) if rss else None,
    }


@torch.no_grad()
def evaluate(model, loader, acc: Accelerator, timer: StepTimer, expected: int, num_classes: int,
             dtype: torch.dtype | None = None, tally: ClassTally | None = None) -> dict[str, Any]:
    """Top-1/top-5 (percent) over the whole test split, sharded over ranks, counted exactly.
    `tally` (optional) collects the gathered top-1 predictions for per-class figures.

    `gather_for_metrics` drops the samples a distributed sampler repeats to even out the last
    batch; the count must equal the split size or the evaluation is wrong and the cell fails.
    """
    model.eval()
    k = min(5, num_classes)
    correct: dict[str, list[torch.Tensor]] = {}
    loss_sum = torch.zeros((), device=acc.device, dtype=torch.float64)
    count = 0
    timer.resume()
    for index, (images, targets) in enumerate(loader):
        out = model(model_input(images, dtype))
        views = {"main": out["logits"], **out.get("views", {})}
        topk = {name: logits.float().topk(k, dim=1).indices for name, logits in views.items()}
        losses = F.cross_entropy(out["logits"].float(), targets, reduction="none")
        topk, targets, losses = acc.gather_for_metrics((topk, targets, losses))
        for name, idx in topk.items():
            hits = idx == targets[:, None]
            pair = correct.setdefault(name, [torch.zeros((), device=acc.device, dtype=torch.long)] * 2)
            correct[name] = [pair[0] + hits[:, 0].sum(), pair[1] + hits.any(dim=1).sum()]
        if tally is not None:
            tally.update(topk["main"][:, 0], targets)
        loss_sum += losses.double().sum()
        count += len(targets)
        timer.mark(len(targets), timed=index > 0)
    if count != expected:
        raise RuntimeError(f"evaluated {count} test samples but the test split has {expected}")
    scores = {name: (100.0 * c1.item() / count, 100.0 * c5.item() / count) for name, (c1, c5) in correct.items()}
    top1, top5 = scores.pop("main")
    result = {"top1": top1, "top5": top5, "loss": loss_sum.item() / count, "n": count}
    if scores:
        result["views"] = {name: {"top1": a, "top5": b} for name, (a, b) in scores.items()}
    return result
