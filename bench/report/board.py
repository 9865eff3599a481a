"""The long-form leaderboard: one row per (method, dataset, setting), every statistic a column.

A *setting* is everything but the seed (the records' `setting_id`); its rows are the seeds. Rows
are compared only within a *protocol* (dataset, preset, precision, strategy, world size): the
baseline comparison pairs a method's seeds with the baseline's seeds of the same protocol, and
ranks and the Pareto front are computed per protocol. Numbers stay numbers here; formatting
happens only in the renderers.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from bench.records import STATUSES
from bench.report.dataversions import assign_data_versions
from bench.report.paper import paper_lookup
from bench.report.stats import CONFIDENCE, IMPROVEMENT_THRESHOLD, paired_stats, pareto_front, seed_stats, spread_stats

SETTING_KEYS = ["method_label", "dataset", "preset", "precision", "strategy", "world_size", "img_size", "steps",
                "global_batch", "data_version", "setting_id"]
PROTOCOL_KEYS = ["dataset", "preset", "precision", "strategy", "world_size"]
BOARD_COLUMNS = SETTING_KEYS[:2] + ["method", "variant"] + SETTING_KEYS[2:] + [
    "lr", "rank",
    "n_runs", "n_ok", "n_failed", "n_oom", "n_diverged",
    "top1_mean", "top1_sd", "top1_ci_low", "top1_ci_high", "top1_min", "top1_max",
    "top5_mean", "top5_sd", "top1_best_optimistic_mean", "top1_valsel_mean", "top1_valsel_n",
    "baseline", "delta_n", "delta_mean", "delta_sd", "delta_ci_low", "delta_ci_high", "p_improve", "verdict",
    "paper_top1", "paper_verified", "paper_confidence", "paper_selection", "paper_backbone", "paper_source",
    "paper_url",
    "train_sps_median", "train_sps_p90", "train_sps_cv", "train_sps_noisy",
    "eval_sps_median", "eval_sps_p90", "eval_sps_cv", "eval_sps_noisy",
    "train_step_ms_median", "train_step_ms_p90",
    "peak_mem_mb_median", "peak_mem_mb_p90", "peak_mem_mb_max", "peak_mem_cv", "peak_mem_noisy", "mem_kind",
    "params_m", "gmacs", "pareto",
    "git_sha", "git_dirty", "device_name", "torch_version", "timm_version", "pretrained_sha256", "records",
]


def _none(value: Any) -> Any:
    """NaN -> None so keys compare and hash (NaN != NaN would split equal keys)."""
    return None if isinstance(value, float) and math.isnan(value) else value


def _key(row: Any, keys: list[str]) -> tuple:
    return tuple(_none(row[k]) for k in keys)


def protocol_of(frame: pd.DataFrame) -> pd.Series:
    """Each row's protocol as one string (missing values as empty), for grouping and labelling."""
    return frame[PROTOCOL_KEYS].apply(lambda column: column.map(lambda v: "" if _none(v) is None else str(v))) \
        .agg("/".join, axis=1)


def _unique(values: pd.Series) -> str | None:
    """Distinct non-empty values, sorted and ';'-joined (a setting normally has exactly one)."""
    kept = sorted({str(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))})
    return ";".join(kept) if kept else None


def _first(values: pd.Series) -> Any:
    kept = [v for v in values if _none(v) is not None]
    return kept[0] if kept else None


def _per_seed(ok: pd.DataFrame) -> dict[int, float]:
    return {int(s): float(v) for s, v in zip(ok["seed"], ok["top1_last"]) if not math.isnan(s)}


def setting_row(group: pd.DataFrame, confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Statistics of one setting's runs: ok runs give the numbers, the others are counted beside."""
    ok = group[group["status"] == "ok"]
    status_counts = group["status"].value_counts()
    row: dict[str, Any] = {key: _none(group[key].iloc[0]) for key in SETTING_KEYS}
    row.update(method=_first(group["method"]), variant=_first(group["variant"]), lr=_first(group["lr"]))
    row.update(n_runs=len(group), n_ok=len(ok),
               **{f"n_{status}": int(status_counts.get(status, 0)) for status in STATUSES if status != "ok"})
    top1 = seed_stats(ok["top1_last"], confidence)
    top5 = seed_stats(ok["top5_last"], confidence)
    valsel = seed_stats(ok["top1_valsel"], confidence)
    row.update(top1_mean=top1.mean, top1_sd=top1.sd, top1_ci_low=top1.ci_low, top1_ci_high=top1.ci_high,
               top1_min=top1.min, top1_max=top1.max, top5_mean=top5.mean, top5_sd=top5.sd,
               top1_best_optimistic_mean=seed_stats(ok["top1_best_optimistic"]).mean,
               top1_valsel_mean=valsel.mean, top1_valsel_n=valsel.n)
    for prefix, column in (("train_sps", "train_samples_per_sec"), ("eval_sps", "eval_samples_per_sec")):
        spread = spread_stats(ok[column])
        row.update({f"{prefix}_median": spread.median, f"{prefix}_p90": spread.p90, f"{prefix}_cv": spread.cv,
                    f"{prefix}_noisy": spread.noisy})
    memory = spread_stats(ok["peak_mem_mb"])
    row.update(train_step_ms_median=spread_stats(ok["train_step_ms_median"]).median,
               train_step_ms_p90=spread_stats(ok["train_step_ms_p90"]).median,
               peak_mem_mb_median=memory.median, peak_mem_mb_p90=memory.p90,
               peak_mem_mb_max=float(ok["peak_mem_mb"].max()) if memory.n else math.nan,
               peak_mem_cv=memory.cv, peak_mem_noisy=memory.noisy, mem_kind=_first(ok["mem_kind"]),
               params_m=float(ok["params_m"].max()) if ok["params_m"].notna().any() else math.nan,
               gmacs=float(ok["gmacs"].max()) if ok["gmacs"].notna().any() else math.nan)
    dirty = [v for v in group["git_dirty"] if isinstance(v, bool)]
    row.update(git_sha=_unique(group["git_sha"]), git_dirty=(any(dirty) if dirty else None),
               device_name=_unique(group["device_name"]), torch_version=_unique(group["torch_version"]),
               timm_version=_unique(group["timm_version"]), pretrained_sha256=_unique(group["pretrained_sha256"]),
               records=_unique(group["record"]))
    return row


def _compare_with_baseline(rows: list[dict[str, Any]], seeds: list[dict[int, float]], baseline: str,
                           confidence: float, threshold: float) -> None:
    """Fill the delta columns of each row from the baseline setting of its protocol with most shared seeds."""
    for row, own in zip(rows, seeds):
        if row["method_label"] == baseline:
            continue
        candidates = [(len(set(own) & set(other)), cand["n_ok"], index)
                      for index, (cand, other) in enumerate(zip(rows, seeds))
                      if cand["method_label"] == baseline
                      and _key(cand, PROTOCOL_KEYS + ["data_version"]) == _key(row, PROTOCOL_KEYS + ["data_version"])]
        if not candidates:
            continue
        *_, best = max(candidates, key=lambda c: (c[0], c[1], -c[2]))
        paired = paired_stats(own, seeds[best], confidence, threshold)
        row.update(baseline=baseline, delta_n=paired.n, delta_mean=paired.mean, delta_sd=paired.sd,
                   delta_ci_low=paired.ci_low, delta_ci_high=paired.ci_high, p_improve=paired.p_improve,
                   verdict=paired.verdict or None)


def _add_paper(board: pd.DataFrame, paper: pd.DataFrame | None) -> None:
    published = paper_lookup(paper)
    for column in ("top1", "verified", "confidence", "selection", "backbone", "source", "url"):
        board[f"paper_{column}"] = [published.get((m, d), {}).get(column)
                                    for m, d in zip(board["method"], board["dataset"])]
    board["paper_top1"] = pd.to_numeric(board["paper_top1"], errors="coerce").astype("float64")


def _add_rank_and_front(board: pd.DataFrame) -> None:
    board["rank"] = math.nan
    board["pareto"] = False
    for _, index in board.groupby(protocol_of(board), sort=False).groups.items():
        part = board.loc[index]
        board.loc[index, "rank"] = part["top1_mean"].rank(ascending=False, method="min")
        board.loc[index, "pareto"] = pareto_front(part["train_sps_median"], part["top1_mean"])
    board["pareto"] = board["pareto"].astype(bool)


def leaderboard(runs: pd.DataFrame, baseline: str | None = None, paper: pd.DataFrame | None = None,
                confidence: float = CONFIDENCE, threshold: float = IMPROVEMENT_THRESHOLD) -> pd.DataFrame:
    """One row per setting with seed statistics, failures counted, deltas against `baseline`
    (a method label), published numbers beside, ranks and the Pareto front per protocol."""
    if runs.empty:
        return pd.DataFrame(columns=BOARD_COLUMNS)
    if "data_version" not in runs:
        runs = assign_data_versions(runs)
    groups = [group for _, group in runs.groupby(SETTING_KEYS, dropna=False, sort=False)]
    rows = [setting_row(group, confidence) for group in groups]
    seeds = [_per_seed(group[group["status"] == "ok"]) for group in groups]
    if baseline:
        _compare_with_baseline(rows, seeds, baseline, confidence, threshold)
    board = pd.DataFrame(rows).reindex(columns=BOARD_COLUMNS)
    _add_paper(board, paper)
    _add_rank_and_front(board)
    for column in ("n_runs", "n_ok", "n_failed", "n_oom", "n_diverged", "top1_valsel_n"):
        board[column] = board[column].astype("int64")
    for column in ("delta_n",):
        board[column] = board[column].astype("Int64")
    board = board.sort_values(["dataset", "preset", "precision", "strategy", "world_size", "top1_mean", "method_label",
                               "setting_id"], ascending=[True] * 5 + [False, True, True], na_position="last",
                              kind="stable")
    return board.reset_index(drop=True)
