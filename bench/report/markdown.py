"""Markdown tables (tabulate's pipe format): the wide paper-style table and the long per-row table.

Cells never contain a pipe, so the tables parse back with pandas (`read_csv(sep="|")`).
"""

from __future__ import annotations

import pandas as pd
from tabulate import tabulate

from bench.report import fmt
from bench.report.wide import WideTable, wide_tables

NOTES = (
    "Top-1: test accuracy (%) at the last training step, `mean ± sd (n=seeds)`; runs that failed, ran "
    "out of memory or diverged are counted inside the brackets and give no number. "
    "Best-of-evals is the maximum over periodic test evaluations: selected on the test split, so optimistic. "
    "Paper: published top-1 from `reference_results.yaml`, mostly the best test accuracy of one seed "
    "(the reference code's protocol); † = not yet checked against the paper. "
    "95% CI: Student-t over seeds; with fewer than three seeds there is no useful interval (see the "
    "range), and ‡ marks an interval cut at 0 or 100 % (the CSV keeps its unclipped bounds)."
)


def _paper(cell: dict | None) -> str:
    if not cell or fmt.is_missing(cell.get("paper_top1")):
        return fmt.MISSING
    return fmt.num(cell["paper_top1"]) + ("" if cell.get("paper_verified") else "†")


def wide_rows(table: WideTable) -> tuple[list[str], list[list[str]]]:
    """Headers and string rows of a wide table (method x dataset, paper columns beside)."""
    headers = ["Method"]
    for dataset in table.datasets:
        headers.append(dataset)
        if dataset in table.paper_datasets:
            headers.append(f"{dataset} (paper)")
    rows = []
    for method in table.methods:
        row = [method]
        for dataset in table.datasets:
            cell = table.cells.get((method, dataset))
            text = fmt.mean_sd_n(cell) if cell else fmt.MISSING
            row.append(text + (" *" if (method, dataset) in table.ambiguous else ""))
            if dataset in table.paper_datasets:
                row.append(_paper(cell))
        rows.append(row)
    return headers, rows


def render_wide_markdown(table: WideTable) -> str:
    headers, rows = wide_rows(table)
    text = tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True)
    if table.ambiguous:
        text += "\n\n\\* several settings of this method ran on this dataset; shown: the one with most seeds " \
                "(all are in `leaderboard.csv`)."
    return text


LONG_HEADERS = ["Method", "Dataset", "Preset", "Setup", "Top-1 % (last)", "95% CI", "Min–max", "Δ vs baseline", "P(>base)",
                "Verdict", "Paper", "Top-5 %", "Best-of-evals % (optimistic)", "Train img/s median (p90)",
                "Eval img/s", "Peak MB", "Params (M)"]


def setup(row: dict) -> str:
    """How the row ran: strategy x processes, precision, global batch (e.g. `ddp×2 bf16 b64`)."""
    world = "?" if fmt.is_missing(row.get("world_size")) else int(row["world_size"])
    batch = "" if fmt.is_missing(row.get("global_batch")) else f" b{int(row['global_batch'])}"
    return f"{fmt.text(row.get('strategy'))}×{world} {fmt.text(row.get('precision'))}{batch}"


def long_rows(board: pd.DataFrame) -> list[list[str]]:
    rows = []
    for r in board.to_dict("records"):
        delta = fmt.MISSING
        if not fmt.is_missing(r.get("delta_mean")):
            ci = fmt.delta_interval(r)
            delta = (f"{fmt.signed(r['delta_mean'])} vs {r['baseline']} ({ci})" if ci == fmt.TOO_FEW_SEEDS
                     else f"{fmt.signed(r['delta_mean'])} {ci} vs {r['baseline']}")
        speed = fmt.num(r["train_sps_median"], 1)
        if not fmt.is_missing(r["train_sps_p90"]):
            speed += f" ({fmt.num(r['train_sps_p90'], 1)})" + (" noisy" if r["train_sps_noisy"] else "")
        mem = fmt.num(r["peak_mem_mb_median"], 0) + (" (RSS)" if r["mem_kind"] == "cpu_rss" else "")
        rows.append([
            r["method_label"], r["dataset"], r["preset"], setup(r), fmt.mean_sd_n(r),
            fmt.accuracy_interval(r), fmt.span(r["top1_min"], r["top1_max"]),
            delta, fmt.num(r["p_improve"]), fmt.text(r["verdict"]), _paper(r), fmt.num(r["top5_mean"]),
            fmt.num(r["top1_best_optimistic_mean"]), speed, fmt.num(r["eval_sps_median"], 1), mem,
            fmt.num(r["params_m"]),
        ])
    return rows


def render_markdown(board: pd.DataFrame) -> str:
    """The long leaderboard (one row per setting) as a Markdown pipe table."""
    return tabulate(long_rows(board), headers=LONG_HEADERS, tablefmt="pipe", disable_numparse=True)


def render_report_markdown(board: pd.DataFrame) -> str:
    """`leaderboard.md`: notes, one wide table per protocol, then the long table per dataset."""
    parts = ["# fgbench leaderboard", NOTES]
    if board.empty:
        parts.append("No records yet: run `bench.py` first.")
    for table in wide_tables(board):
        parts += [f"## {table.title}", render_wide_markdown(table)]
    for dataset, part in board.groupby("dataset", sort=True):
        parts += [f"## {dataset}: all settings", render_markdown(part)]
    return "\n\n".join(parts) + "\n"


SCALING_HEADERS = ["Method", "Dataset", "Setup", "Processes", "Train img/s", "Per process", "Speed-up", "Efficiency"]


def render_scaling_markdown(scaling: pd.DataFrame) -> str:
    """`## Scaling`: throughput per world size and weak-scaling efficiency against the smallest size."""
    rows = [[r["method_label"], r["dataset"], f"{fmt.text(r['strategy'])} {fmt.text(r['precision'])} "
             f"b{fmt.num(r['per_process_batch'], 0)}/process", str(int(r["world_size"])),
             fmt.num(r["train_sps_median"], 1), fmt.num(r["sps_per_process"], 1), fmt.num(r["speedup"]),
             fmt.num(r["efficiency"])] for r in scaling.to_dict("records")]
    note = ("Efficiency = per-process training throughput relative to the smallest world size of the same "
            "method, dataset, precision, strategy and per-process batch (1.00 = perfect weak scaling).")
    return "## Scaling\n\n" + note + "\n\n" + tabulate(rows, headers=SCALING_HEADERS, tablefmt="pipe",
                                                        disable_numparse=True) + "\n"
