"""Tables from records: `results/leaderboard.csv` and `results/leaderboard.md`.

Everything here is a pure function of the records directory, so `bench.py report` can be re-run
at any time and gives the same bytes for the same records. Accuracy is top-1/top-5 in percent at
the last training step (the headline); the best-of-evaluations number is selected on the test
split and kept only in a column labelled optimistic.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
from tabulate import tabulate

from bench import records

RUN_COLUMNS = [
    "cell_id", "setting_id", "status", "error", "method", "variant", "method_label", "dataset", "seed", "preset",
    "precision", "strategy", "world_size", "img_size", "steps", "global_batch", "lr",
    "top1_last", "top5_last", "top1_best_optimistic", "n_evaluated", "n_test",
    "train_samples_per_sec", "eval_samples_per_sec", "train_step_ms_median", "peak_mem_mb", "mem_kind",
    "params_m", "wall_s", "git_sha", "device_name",
]
SETTING_KEYS = ["method_label", "dataset", "preset", "img_size", "steps", "precision", "strategy", "world_size",
                "global_batch", "setting_id"]


def run_row(record: dict[str, Any]) -> dict[str, Any]:
    """One flat row per record (failed runs too, with empty metrics)."""
    acc = record.get("accuracy") or {}
    speed = record.get("speed") or {}
    memory = record.get("memory") or {}
    env = record.get("env") or {}
    if memory.get("peak_allocated_mb_max") is not None:
        peak, kind = memory["peak_allocated_mb_max"], "cuda_allocated"
    else:
        peak, kind = memory.get("peak_rss_mb_max"), ("cpu_rss" if memory else None)
    row = {key: record.get(key) for key in RUN_COLUMNS}
    row.update(
        top1_last=acc.get("top1_last"),
        top5_last=acc.get("top5_last"),
        top1_best_optimistic=acc.get("top1_best_optimistic"),
        n_evaluated=acc.get("n_evaluated"),
        n_test=acc.get("n_test"),
        train_samples_per_sec=speed.get("train_samples_per_sec"),
        eval_samples_per_sec=speed.get("eval_samples_per_sec"),
        train_step_ms_median=speed.get("train_step_ms_median"),
        peak_mem_mb=peak,
        mem_kind=kind,
        params_m=(record.get("cost") or {}).get("params_m"),
        wall_s=(record.get("time") or {}).get("wall_s"),
        git_sha=env.get("git_sha"),
        device_name=env.get("device_name"),
    )
    return row


def runs_frame(results_dir: Path, cell_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """All valid records as rows (optionally only the given cells), in a stable order."""
    wanted = set(cell_ids) if cell_ids is not None else None
    rows = [run_row(r) for _, r in records.iter_records(results_dir) if wanted is None or r["cell_id"] in wanted]
    frame = pd.DataFrame(rows, columns=RUN_COLUMNS)
    numeric = ["seed", "world_size", "img_size", "steps", "global_batch", "lr", "top1_last", "top5_last",
               "top1_best_optimistic", "n_evaluated", "n_test", "train_samples_per_sec", "eval_samples_per_sec",
               "train_step_ms_median", "peak_mem_mb", "params_m", "wall_s"]
    for column in numeric:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame.sort_values(["dataset", "method_label", "setting_id", "seed"], kind="stable").reset_index(drop=True)


def leaderboard(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, dataset, setting): seed statistics of ok runs, failures counted beside."""
    columns = SETTING_KEYS + [
        "n_seeds", "n_failed", "top1_mean", "top1_sd", "top5_mean", "top5_sd", "top1_best_optimistic_mean",
        "train_samples_per_sec_mean", "eval_samples_per_sec_mean", "peak_mem_mb_max", "mem_kind", "params_m",
    ]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    out = []
    for keys, group in runs.groupby(SETTING_KEYS, sort=True, dropna=False):
        ok = group[group["status"] == "ok"]
        row = dict(zip(SETTING_KEYS, keys))
        row.update(
            n_seeds=int(len(ok)),
            n_failed=int(len(group) - len(ok)),
            top1_mean=ok["top1_last"].mean(),
            top1_sd=ok["top1_last"].std(ddof=1),  # NaN for one seed: no spread to report
            top5_mean=ok["top5_last"].mean(),
            top5_sd=ok["top5_last"].std(ddof=1),
            top1_best_optimistic_mean=ok["top1_best_optimistic"].mean(),
            train_samples_per_sec_mean=ok["train_samples_per_sec"].mean(),
            eval_samples_per_sec_mean=ok["eval_samples_per_sec"].mean(),
            peak_mem_mb_max=ok["peak_mem_mb"].max(),
            mem_kind=ok["mem_kind"].iloc[0] if len(ok) else None,
            params_m=ok["params_m"].max(),
        )
        out.append(row)
    board = pd.DataFrame(out, columns=columns)
    board = board.sort_values(["dataset", "top1_mean", "method_label"], ascending=[True, False, True],
                              na_position="last", kind="stable")
    return board.reset_index(drop=True)


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def render_markdown(board: pd.DataFrame) -> str:
    """The leaderboard as a Markdown (pipe) table; formatting happens only here."""
    headers = ["Method", "Dataset", "Preset", "Top-1 % (last)", "Top-5 %", "Best-of-evals % (optimistic)",
               "Train img/s", "Eval img/s", "Peak MB", "Params (M)", "Failed"]
    rows = []
    for _, r in board.iterrows():
        top1 = f"{_fmt(r.top1_mean)} ± {_fmt(r.top1_sd)} (n={int(r.n_seeds)})" if r.n_seeds else "–"
        mem = _fmt(r.peak_mem_mb_max, 0) + (" (RSS)" if r.mem_kind == "cpu_rss" else "")
        rows.append([r.method_label, r.dataset, r.preset, top1, _fmt(r.top5_mean), _fmt(r.top1_best_optimistic_mean),
                     _fmt(r.train_samples_per_sec_mean, 1), _fmt(r.eval_samples_per_sec_mean, 1), mem,
                     _fmt(r.params_m, 2), int(r.n_failed)])
    return tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True)


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def write_report(results_dir: Path) -> tuple[pd.DataFrame, list[Path]]:
    """Rebuild every table from the records; returns the leaderboard and the files written."""
    results_dir = Path(results_dir)
    board = leaderboard(runs_frame(results_dir))
    csv_path = results_dir / "leaderboard.csv"
    md_path = results_dir / "leaderboard.md"
    _atomic_write_text(csv_path, board.to_csv(index=False, float_format="%.6g"))
    note = ("Top-1/Top-5: test accuracy at the last training step, mean ± sd over seeds. "
            "Best-of-evals is the maximum over periodic test evaluations: selected on the test split, "
            "so optimistic.\n\n")
    _atomic_write_text(md_path, "# fgbench leaderboard\n\n" + note + render_markdown(board) + "\n")
    return board, [csv_path, md_path]
