"""`bench.py report`: every output file, rebuilt from the records directory alone.

The outputs are a pure function of the records (no clock, no absolute paths, sorted everywhere),
so running the report twice gives the same bytes, and a file for a dataset that no longer has
records is removed rather than left stale.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.atomic import atomic_write_text
from bench.errors import UsageError
from bench.records import safe_name
from bench.report.board import BOARD_COLUMNS, leaderboard
from bench.report.classes import class_frame, confusion_frame, per_class_table, top_confusions, where_methods_differ
from bench.report.latex import render_latex
from bench.report.markdown import render_report_markdown, render_scaling_markdown
from bench.report.paper import load_paper_results
from bench.report.runs import curves_frame, runs_frame
from bench.report.scaling import scaling_table

DEFAULT_BASELINE = "vit"
FLOAT_FORMAT = "%.6g"


def dataset_csv_name(dataset: str) -> str:
    return f"leaderboard-{safe_name(dataset)}.csv"


def render_csv(board: pd.DataFrame) -> str:
    """The long leaderboard as CSV: every numeric column numeric, formatting left to the reader."""
    return board.to_csv(index=False, float_format=FLOAT_FORMAT)


def ranked(board: pd.DataFrame) -> pd.DataFrame:
    """One dataset's rows, rank first (ranks count within a protocol; the board is already ordered)."""
    return board[["rank"] + [c for c in BOARD_COLUMNS if c != "rank"]]


def resolve_baseline(requested: str | None, method_labels: set[str]) -> str | None:
    """An explicit baseline must have records; the default (vit) silently drops out when it has none."""
    if requested is None:
        return DEFAULT_BASELINE if DEFAULT_BASELINE in method_labels else None
    if requested.lower() == "none":
        return None
    if requested not in method_labels:
        known = ", ".join(sorted(method_labels)) or "none (no records yet)"
        raise UsageError(f"--baseline {requested}: no record has this method; methods with records: {known}")
    return requested


def write_report(results_dir: Path, baseline: str | None = DEFAULT_BASELINE, paper_path: Path | None = None,
                 with_paper: bool = True, out_dir: Path | None = None) -> tuple[pd.DataFrame, list[Path]]:
    """Rebuild every table and the HTML page from the records; returns the leaderboard and the files written
    (into `out_dir`, by default the results folder itself)."""
    from bench.report.gallery import render_gallery
    from bench.report.html import render_html  # matplotlib: loaded only when a report is written

    records_dir = Path(results_dir)
    out = Path(out_dir) if out_dir is not None else records_dir
    runs = runs_frame(records_dir)
    paper = load_paper_results(paper_path) if with_paper else None
    board = leaderboard(runs, baseline=baseline, paper=paper)
    classes = class_frame(records_dir)
    differ = where_methods_differ(classes, baseline)
    confusions = top_confusions(confusion_frame(records_dir))
    outputs: dict[Path, str] = {
        out / "runs.csv": runs.to_csv(index=False, float_format=FLOAT_FORMAT),
        out / "leaderboard.csv": render_csv(board),
        out / "leaderboard.md": render_report_markdown(board),
        out / "leaderboard.tex": render_latex(board),
        out / "index.html": render_html(board, runs, curves_frame(records_dir), baseline, differ, confusions,
                                        render_gallery(records_dir)),
    }
    scaling = scaling_table(runs)
    scaling_csv = out / "scaling.csv"
    if not scaling.empty:
        outputs[scaling_csv] = scaling.to_csv(index=False, float_format=FLOAT_FORMAT)
        outputs[out / "leaderboard.md"] += "\n" + render_scaling_markdown(scaling)
    elif scaling_csv.exists():
        scaling_csv.unlink()
    for dataset, part in board.groupby("dataset", sort=True):
        outputs[out / dataset_csv_name(dataset)] = ranked(part).to_csv(index=False, float_format=FLOAT_FORMAT)
    for dataset, part in per_class_table(classes).groupby("dataset", sort=True):
        outputs[out / f"per-class-{safe_name(dataset)}.csv"] = part.to_csv(index=False, float_format=FLOAT_FORMAT)
    for dataset, part in differ.groupby("dataset", sort=True):
        outputs[out / f"where-methods-differ-{safe_name(dataset)}.csv"] = part.to_csv(
            index=False, float_format=FLOAT_FORMAT)
    for pattern in ("leaderboard-*.csv", "per-class-*.csv", "where-methods-differ-*.csv"):
        for stale in sorted(out.glob(pattern)):
            if stale not in outputs:
                stale.unlink()
    for path, text in outputs.items():
        atomic_write_text(path, text)
    return board, list(outputs)
