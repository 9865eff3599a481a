"""The paper-style layout: method rows x dataset columns, one table per protocol.

Shared by the Markdown and LaTeX renderers. A protocol is (preset, precision, strategy, world
size): numbers from different protocols are never put side by side. When one method has several
settings on one dataset within a protocol (e.g. a run with `--steps` overridden), the cell shows
the setting with the most finished seeds and is marked, and `leaderboard.csv` lists all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from bench.report.board import PROTOCOL_KEYS
from bench.report.fmt import is_missing, protocol_title

TABLE_KEYS = [k for k in PROTOCOL_KEYS if k != "dataset"]


@dataclass
class WideTable:
    title: str
    methods: list[str]
    datasets: list[str]
    cells: dict[tuple[str, str], dict[str, Any]]  # (method_label, dataset) -> leaderboard row
    ambiguous: set[tuple[str, str]] = field(default_factory=set)  # cells chosen among several settings
    paper_datasets: list[str] = field(default_factory=list)  # datasets with a paper number for a shown method

    def best(self, dataset: str, column: str = "top1_mean", digits: int = 2) -> set[str]:
        """Methods whose value in `column` is the column's best as displayed (ties all win)."""
        values = {m: round(float(c[column]), digits) for (m, d), c in self.cells.items()
                  if d == dataset and not is_missing(c.get(column))}
        if len(values) < 2:
            return set()
        top = max(values.values())
        return {m for m, v in values.items() if v == top}

    def best_paper(self, dataset: str, digits: int = 2) -> set[str]:
        return self.best(dataset, "paper_top1", digits)


def wide_tables(board: pd.DataFrame) -> list[WideTable]:
    """One WideTable per protocol present in the leaderboard, in a stable order."""
    tables = []
    if board.empty:
        return tables
    keyed = board.assign(**{f"_{k}": board[k].map(lambda v: "" if is_missing(v) else str(v)) for k in TABLE_KEYS})
    for _, part in keyed.groupby([f"_{k}" for k in TABLE_KEYS], sort=True):
        first = part.iloc[0]
        methods = sorted(part["method_label"].dropna().unique())
        datasets = sorted(part["dataset"].dropna().unique())
        cells: dict[tuple[str, str], dict[str, Any]] = {}
        ambiguous = set()
        for (method, dataset), settings in part.groupby(["method_label", "dataset"], sort=True):
            ordered = settings.sort_values(["n_ok", "n_runs", "setting_id"], ascending=[False, False, True],
                                           kind="stable")
            cells[(method, dataset)] = ordered.iloc[0].to_dict()
            if len(settings) > 1:
                ambiguous.add((method, dataset))
        paper_datasets = [d for d in datasets if any(not is_missing(c.get("paper_top1"))
                                                     for (_, cd), c in cells.items() if cd == d)]
        title = protocol_title(*(first[k] for k in TABLE_KEYS))
        tables.append(WideTable(title, methods, datasets, cells, ambiguous, paper_datasets))
    return tables
