"""Number formatting shared by the Markdown, LaTeX and HTML renderers (and only by them)."""

from __future__ import annotations

import math
from typing import Any, Mapping

import pandas as pd

from bench.records import STATUSES

MISSING = "–"


def is_missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def num(value: Any, digits: int = 2) -> str:
    return MISSING if is_missing(value) else f"{float(value):.{digits}f}"


def text(value: Any) -> str:
    return "" if is_missing(value) else str(value)


def count(value: Any) -> int:
    return 0 if is_missing(value) else int(value)


def not_ok(row: Mapping[str, Any]) -> str:
    """'1 failed, 2 diverged' — the runs that give no number, counted by status."""
    parts = [f"{count(row.get(f'n_{status}'))} {status}" for status in STATUSES
             if status != "ok" and count(row.get(f"n_{status}"))]
    return ", ".join(parts)


def mean_sd_n(row: Mapping[str, Any], pm: str = "±", digits: int = 2) -> str:
    """`57.10 ± 0.40 (n=3)`; one seed has no sd; failures go inside the brackets: `(n=3; 1 failed)`."""
    n = count(row.get("n_ok"))
    extra = not_ok(row)
    bracket = f"(n={n}{'; ' + extra if extra else ''})"
    if n == 0 or is_missing(row.get("top1_mean")):
        return f"{MISSING} {bracket}"
    sd = row.get("top1_sd")
    body = num(row["top1_mean"], digits) + ("" if is_missing(sd) else f" {pm} {num(sd, digits)}")
    return f"{body} {bracket}"


def interval(low: Any, high: Any, digits: int = 2) -> str:
    return MISSING if is_missing(low) or is_missing(high) else f"[{num(low, digits)}, {num(high, digits)}]"


TOO_FEW_SEEDS = "too few seeds for an interval"
CLIPPED = "‡"  # an accuracy interval cut at 0 or 100 %


def accuracy_interval(row: Mapping[str, Any], digits: int = 2) -> str:
    """The top-1 95% CI as shown: `too few seeds for an interval` below three seeds (the range column
    says what there is), clipped to [0, 100] and marked ‡ when the t-interval reaches past it."""
    from bench.report.stats import shown_interval

    n = count(row.get("n_ok"))
    if n == 0:
        return MISSING
    if is_missing(row.get("top1_ci_low")) or is_missing(row.get("top1_ci_high")):
        return MISSING if n < 2 else TOO_FEW_SEEDS
    shown = shown_interval(float(row["top1_ci_low"]), float(row["top1_ci_high"]), n)
    if shown is None:
        return TOO_FEW_SEEDS
    low, high, clipped = shown
    return interval(low, high, digits) + (CLIPPED if clipped else "")


DELTA_BOUNDS = (-100.0, 100.0)  # a difference of two accuracies in %


def delta_interval(row: Mapping[str, Any], digits: int = 2) -> str:
    """The paired 95% CI of the gain over the baseline, by the accuracy interval's rule: none below
    three paired seeds, clipped to [-100, 100] and marked ‡ past it."""
    from bench.report.stats import shown_interval

    low, high = row.get("delta_ci_low"), row.get("delta_ci_high")
    if is_missing(row.get("delta_mean")):
        return MISSING
    if is_missing(low) or is_missing(high):
        return TOO_FEW_SEEDS
    shown = shown_interval(float(low), float(high), count(row.get("delta_n")), DELTA_BOUNDS)
    if shown is None:
        return TOO_FEW_SEEDS
    lo, hi, clipped = shown
    return interval(lo, hi, digits) + (CLIPPED if clipped else "")


def span(low: Any, high: Any, digits: int = 2) -> str:
    return MISSING if is_missing(low) or is_missing(high) else f"{num(low, digits)}–{num(high, digits)}"


def signed(value: Any, digits: int = 2) -> str:
    return MISSING if is_missing(value) else f"{float(value):+.{digits}f}"


def protocol_title(preset: Any, precision: Any, strategy: Any, world_size: Any) -> str:
    processes = count(world_size)
    return (f"preset {preset or MISSING} · precision {precision or MISSING} · {strategy or MISSING} · "
            f"{processes} process{'es' if processes != 1 else ''}")
