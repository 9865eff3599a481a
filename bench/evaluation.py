"""Re-evaluate a saved model (`bench.py eval`) with the runner's own evaluation.

The test split goes through the same loader (`bench.loaders.build_loaders`, the model's recipe:
crop, resize, eval batch), the same decode-and-resize cache, and the same sharded, exactly counted
`bench.runner.evaluate`, so on the dataset it was trained on the top-1 equals the record's
last-step top-1 to the last digit. The eval record lands under `<results>/evals/`, beside (never
among) the run records the leaderboard reads.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench import records
from bench.errors import UsageError
from bench.models import SavedModel

EVALS_DIR = "evals"


def eval_record_path(results_dir: Path, dataset: str, saved: SavedModel) -> Path:
    meta = saved.meta
    return (Path(results_dir) / EVALS_DIR / records.safe_name(dataset) / records.safe_name(meta["method_label"])
            / f"seed{meta['seed']}-{meta['cell_id']}.json")


def check_fits(saved: SavedModel, dataset: str, num_classes: int, img_size: int | None) -> None:
    """A model evaluates only on a dataset with its class count and at its geometry (one line, exit 2)."""
    if num_classes != saved.num_classes:
        raise UsageError(f"--datasets {dataset} has {num_classes} classes but the model {saved.label} predicts "
                         f"{saved.num_classes}; evaluate it on a dataset with {saved.num_classes} classes")
    trained = saved.meta["backbone"]["img_size"]
    if img_size is not None and img_size != trained:
        raise UsageError(f"--img-size {img_size} does not fit the model {saved.label}, trained at {trained} px "
                         f"(its position embedding is a fixed grid); use --img-size {trained} or leave it out")


def evaluate_saved(saved: SavedModel, dataset: str, ctx, eval_batch_size: int | None = None,
                   img_size: int | None = None) -> dict[str, Any]:
    """Evaluate `saved` on `dataset`'s test split; returns the eval record (written by the main process)."""
    from bench.classes import ClassTally
    from bench.data import check_files, get_card, materialize, open_dataset
    from bench.envinfo import environment
    from bench.loaders import build_loaders
    from bench.meters import StepTimer
    from bench.runner import cached_splits, evaluate, utc_now
    from bench.strategy import input_dtype

    acc = ctx.accelerator
    card = get_card(dataset)
    check_fits(saved, card.name, card.num_classes, img_size)
    if acc.is_main_process:
        materialize(card, ctx.data_root)
    acc.wait_for_everyone()
    data = open_dataset(card, ctx.data_root, ctx.data_options.get(card.name))
    check_files(data)
    recipe = saved.recipe(**({"eval_batch_size": eval_batch_size} if eval_batch_size else {}))
    started, start_utc = time.perf_counter(), utc_now()
    model = saved.build()
    resized = cached_splits({"test": data.test}, recipe, ctx, data.name)
    loader = build_loaders({"test": data.test}, recipe, saved.meta["seed"], ctx.workers, acc.device, resized)["test"]
    model, loader = acc.prepare(model, loader)
    timer, tally = StepTimer(acc.device, warmup=0), ClassTally(card.num_classes)
    result = evaluate(model, loader, acc, timer, expected=len(data.test), num_classes=card.num_classes,
                      dtype=input_dtype(acc), tally=tally)
    record = {
        "schema_version": records.SCHEMA_VERSION,
        "kind": "eval",
        "status": "ok",
        "model": saved.directory.as_posix(),
        **{key: saved.meta[key] for key in ("cell_id", "method", "variant", "method_label", "seed", "preset")},
        "trained_on": saved.meta["dataset"],
        "dataset": card.name,
        "precision": acc.mixed_precision,
        "eval_batch_size": recipe.eval_batch_size,
        "accuracy": {"top1": result["top1"], "top5": result["top5"], "loss": result["loss"], "n_evaluated": result["n"],
                     "views": result.get("views", {}), "classes": tally.summary(data.class_names)},
        "speed": timer.summary("eval"),
        "data": {"root": str(data.root), "n_test": len(data.test), "split_hashes": data.hashes()},
        "env": environment(acc.device),
        "time": {"start_utc": start_utc, "end_utc": utc_now(), "wall_s": time.perf_counter() - started},
    }
    record["training_record"] = training_comparison(saved, card.name, result["top1"], ctx.results_dir)
    if acc.is_main_process:
        records.write_record(eval_record_path(ctx.results_dir, card.name, saved), record)
    acc.wait_for_everyone()
    return record


def training_comparison(saved: SavedModel, dataset: str, top1: float, results_dir: Path) -> dict[str, Any] | None:
    """On the training dataset: the record's last-step top-1 and whether this evaluation equals it."""
    if dataset != saved.meta["dataset"]:
        return None
    path = Path(results_dir) / saved.meta["record"]
    record = records.read_record(path)
    last = ((record or {}).get("accuracy") or {}).get("top1_last")
    return {"record": saved.meta["record"], "top1_last": last, "identical": last == top1 if last is not None else None}
