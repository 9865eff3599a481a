"""Records -> one flat row per run, read defensively.

Records grow fields over time (val-selected accuracy, weights hashes, strategy details) and old
records lack them, so every field is looked up by path and a missing or ill-typed one becomes an
empty cell, never an exception. Rows carry the provenance a number needs to be traced: the record
file (relative to the results folder), git sha, library versions, device, precision, weights hash
and dataset split hashes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from bench import records
from bench.report.dataversions import assign_data_versions

RUN_COLUMNS = [
    "record", "cell_id", "setting_id", "status", "error", "method", "variant", "method_label", "dataset", "seed",
    "preset", "precision", "strategy", "world_size", "img_size", "steps", "global_batch", "lr",
    "top1_last", "top5_last", "top1_best_optimistic", "top1_valsel", "n_evaluated", "n_test",
    "train_samples_per_sec", "eval_samples_per_sec", "train_step_ms_median", "train_step_ms_p90",
    "peak_mem_mb", "mem_kind", "params_m", "gmacs", "wall_s",
    "git_sha", "git_dirty", "fgbench_version", "torch_version", "timm_version", "accelerate_version",
    "device_name", "mixed_precision", "pretrained_sha256", "split_hashes", "data_version",
]
NUMERIC_RUN_COLUMNS = [
    "seed", "world_size", "img_size", "steps", "global_batch", "lr", "top1_last", "top5_last",
    "top1_best_optimistic", "top1_valsel", "n_evaluated", "n_test", "train_samples_per_sec", "eval_samples_per_sec",
    "train_step_ms_median", "train_step_ms_p90", "peak_mem_mb", "params_m", "gmacs", "wall_s",
]
# Where fields that other parts of fgbench add (or have moved) may sit; the first non-empty wins.
FIELD_PATHS: dict[str, tuple[str, ...]] = {
    "top1_valsel": ("accuracy.top1_valsel", "top1_valsel"),
    "gmacs": ("cost.gmacs", "gmacs"),
    "pretrained_sha256": ("pretrained.sha256", "pretrained_sha256", "backbone.pretrained_sha256",
                          "env.pretrained_sha256"),
    "mixed_precision": ("distributed.mixed_precision", "precision"),
    "device_name": ("env.device_name", "env.gpu_name"),
}


def lookup(record: Any, *paths: str) -> Any:
    """The first non-None value at one of the dotted `paths`; None when no path leads anywhere."""
    for path in paths:
        node = record
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                break
        if node is not None:
            return node
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    return float(value) if isinstance(value, (int, float)) else None


def _memory(record: dict[str, Any]) -> tuple[float | None, str | None]:
    """Peak device memory when there is a device, else the peak process RSS (labelled as such)."""
    allocated = _number(lookup(record, "memory.peak_allocated_mb_max"))
    if allocated is not None:
        return allocated, "cuda_allocated"
    rss = _number(lookup(record, "memory.peak_rss_mb_max"))
    return rss, ("cpu_rss" if rss is not None else None)


def _split_hashes(record: dict[str, Any]) -> str | None:
    hashes = lookup(record, "data.split_hashes")
    if not isinstance(hashes, dict) or not hashes:
        return None
    return ",".join(f"{k}:{v}" for k, v in sorted(hashes.items(), key=lambda kv: str(kv[0])))


def _label(record: dict[str, Any]) -> str | None:
    label = record.get("method_label")
    if label:
        return str(label)
    method, variant = record.get("method"), record.get("variant")
    return (f"{method}:{variant}" if variant else str(method)) if method else None


def run_row(record: dict[str, Any], record_link: str | None = None) -> dict[str, Any]:
    """One flat row per record (failed runs too, with empty metrics)."""
    peak, mem_kind = _memory(record)
    dirty = lookup(record, "env.git_dirty")
    row = {key: record.get(key) for key in RUN_COLUMNS}
    row.update(
        record=record_link,
        method_label=_label(record),
        top1_last=_number(lookup(record, "accuracy.top1_last")),
        top5_last=_number(lookup(record, "accuracy.top5_last")),
        top1_best_optimistic=_number(lookup(record, "accuracy.top1_best_optimistic")),
        top1_valsel=_number(lookup(record, *FIELD_PATHS["top1_valsel"])),
        n_evaluated=_number(lookup(record, "accuracy.n_evaluated")),
        n_test=_number(lookup(record, "accuracy.n_test", "data.n_test")),
        train_samples_per_sec=_number(lookup(record, "speed.train_samples_per_sec")),
        eval_samples_per_sec=_number(lookup(record, "speed.eval_samples_per_sec")),
        train_step_ms_median=_number(lookup(record, "speed.train_step_ms_median")),
        train_step_ms_p90=_number(lookup(record, "speed.train_step_ms_p90")),
        peak_mem_mb=peak,
        mem_kind=mem_kind,
        params_m=_number(lookup(record, "cost.params_m")),
        gmacs=_number(lookup(record, *FIELD_PATHS["gmacs"])),
        wall_s=_number(lookup(record, "time.wall_s")),
        git_sha=lookup(record, "env.git_sha"),
        git_dirty=bool(dirty) if isinstance(dirty, bool) else None,
        fgbench_version=lookup(record, "env.fgbench"),
        torch_version=lookup(record, "env.versions.torch"),
        timm_version=lookup(record, "env.versions.timm"),
        accelerate_version=lookup(record, "env.versions.accelerate"),
        device_name=lookup(record, *FIELD_PATHS["device_name"]),
        mixed_precision=lookup(record, *FIELD_PATHS["mixed_precision"]),
        pretrained_sha256=lookup(record, *FIELD_PATHS["pretrained_sha256"]),
        split_hashes=_split_hashes(record),
    )
    for key in ("status", "error", "method", "variant", "dataset", "preset", "precision", "strategy", "cell_id",
                "setting_id"):
        value = row[key]
        row[key] = None if value is None or isinstance(value, (dict, list)) else str(value)
    return row


def runs_frame(results_dir: Path, cell_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """All valid records as rows (optionally only the given cells), in a stable order."""
    results_dir = Path(results_dir)
    wanted = set(cell_ids) if cell_ids is not None else None
    rows = [run_row(r, path.relative_to(results_dir).as_posix())
            for path, r in records.iter_records(results_dir) if wanted is None or r.get("cell_id") in wanted]
    frame = pd.DataFrame(rows, columns=RUN_COLUMNS)
    for column in NUMERIC_RUN_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    frame["git_dirty"] = frame["git_dirty"].astype("object")
    frame = assign_data_versions(frame)
    order = ["dataset", "method_label", "setting_id", "seed", "record"]
    return frame.sort_values(order, kind="stable", na_position="last").reset_index(drop=True)


CURVE_COLUMNS = ["record", "dataset", "method_label", "setting_id", "seed", "step", "top1", "train_loss"]


def curves_frame(results_dir: Path) -> pd.DataFrame:
    """Per-evaluation points of the finished runs' training curves (`accuracy.curve`), if recorded.

    `train_loss` is the sum of the named loss components averaged over the steps before the point.
    """
    results_dir = Path(results_dir)
    rows = []
    for path, record in records.iter_records(results_dir):
        curve = lookup(record, "accuracy.curve")
        if record.get("status") != "ok" or not isinstance(curve, list):
            continue
        for point in curve:
            if not isinstance(point, dict) or _number(point.get("step")) is None:
                continue
            losses = point.get("train_losses")
            loss_values = [_number(v) for v in losses.values()] if isinstance(losses, dict) else []
            rows.append({
                "record": path.relative_to(results_dir).as_posix(), "dataset": record.get("dataset"),
                "method_label": _label(record), "setting_id": record.get("setting_id"),
                "seed": _number(record.get("seed")), "step": _number(point.get("step")),
                "top1": _number(point.get("top1")),
                "train_loss": sum(loss_values) if loss_values and None not in loss_values else None,
            })
    frame = pd.DataFrame(rows, columns=CURVE_COLUMNS)
    for column in ("seed", "step", "top1", "train_loss"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    order = ["dataset", "method_label", "setting_id", "seed", "step"]
    return frame.sort_values(order, kind="stable").reset_index(drop=True)
