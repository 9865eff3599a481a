"""Per-class analysis from the records: which classes each method gets right, and where it wins.

Records keep, for their last evaluation, the test samples and top-1 % of every class and the most
frequent confusions (`bench.classes`). From them:

- `class_frame`: one row per (record, class), `per_class_table`: per setting and class the mean,
  min and max over seeds (the per-class CSVs);
- `where_methods_differ`: per dataset and protocol, each method against the baseline over the
  classes both have test samples for: the per-class gain (seed-averaged top-1 minus the
  baseline's), how many classes got better or worse, a Wilcoxon signed-rank test across classes
  (paired by class, `scipy.stats.wilcoxon`), and the classes with the largest gains;
- `confusion_frame` / `top_confusions`: the most frequent (true → predicted) pairs summed over seeds,
  the view that stays readable for ultra-fine-grained sets with hundreds of classes.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from bench import records
from bench.report.board import PROTOCOL_KEYS, protocol_of
from bench.report.runs import _label, lookup

TOP_GAINS = 5  # classes listed per method in the "where methods differ" table
CLASS_COLUMNS = ["record", "dataset", "method_label", *PROTOCOL_KEYS[1:], "seed", "class", "name", "n", "top1"]
CONFUSION_COLUMNS = ["record", "dataset", "method_label", *PROTOCOL_KEYS[1:], "seed", "true", "pred", "true_name",
                     "pred_name", "count"]
DIFFER_COLUMNS = ["dataset", "protocol", "method_label", "baseline", "n_classes", "mean_gain", "classes_better",
                  "classes_worse", "classes_tied", "wilcoxon_p", "rank", "class", "name", "top1", "baseline_top1",
                  "gain"]


def _classes(record: dict) -> dict | None:
    block = lookup(record, "accuracy.classes")
    if record.get("status") != "ok" or not isinstance(block, dict):
        return None
    if not isinstance(block.get("n"), list) or not isinstance(block.get("top1"), list):
        return None
    return block


def _common(record: dict, link: str) -> dict:
    return {"record": link, "dataset": record.get("dataset"), "method_label": _label(record),
            **{k: record.get(k) for k in PROTOCOL_KEYS[1:]}, "seed": record.get("seed")}


def _name(names, index: int) -> str:
    return str(names[index]) if isinstance(names, list) and 0 <= index < len(names) else f"class {index}"


def _class_blocks(results_dir: Path):
    """(shared row fields, per-class block) of every ok record that kept per-class figures."""
    results_dir = Path(results_dir)
    for path, record in records.iter_records(results_dir):
        block = _classes(record)
        if block is not None:
            yield _common(record, path.relative_to(results_dir).as_posix()), block


def _numeric_frame(rows: list[dict], columns: list[str], numeric: tuple[str, ...], order: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=columns)
    for column in numeric:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    return frame.sort_values(order, kind="stable").reset_index(drop=True)


def class_frame(results_dir: Path) -> pd.DataFrame:
    """One row per class of every ok record that kept per-class figures."""
    rows = [{**common, "class": index, "name": _name(block.get("names"), index), "n": n, "top1": top1}
            for common, block in _class_blocks(results_dir)
            for index, (n, top1) in enumerate(zip(block["n"], block["top1"]))]
    return _numeric_frame(rows, CLASS_COLUMNS, ("seed", "class", "n", "top1"),
                          ["dataset", "method_label", "seed", "record", "class"])


def confusion_frame(results_dir: Path) -> pd.DataFrame:
    """One row per recorded (true → predicted) pair of every ok record."""
    rows = []
    for common, block in _class_blocks(results_dir):
        for pair in block.get("confusions") or []:
            if not isinstance(pair, dict):
                continue
            t, p = int(pair["true"]), int(pair["pred"])
            rows.append({**common, "true": t, "pred": p, "true_name": _name(block.get("names"), t),
                         "pred_name": _name(block.get("names"), p), "count": pair["count"]})
    return _numeric_frame(rows, CONFUSION_COLUMNS, ("seed", "true", "pred", "count"),
                          ["dataset", "method_label", "seed", "record", "true", "pred"])


def _with_protocol(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame["protocol"] = protocol_of(frame) if not frame.empty else pd.Series(dtype="object")
    return frame


def per_class_table(classes: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, protocol, method, class): test samples, seeds, and top-1 mean/min/max over seeds."""
    columns = ["dataset", "protocol", "method_label", "class", "name", "n", "seeds", "top1_mean", "top1_min", "top1_max"]
    if classes.empty:
        return pd.DataFrame(columns=columns)
    grouped = _with_protocol(classes).groupby(["dataset", "protocol", "method_label", "class"], sort=True)
    table = grouped.agg(name=("name", "first"), n=("n", "max"), seeds=("seed", "nunique"), top1_mean=("top1", "mean"),
                        top1_min=("top1", "min"), top1_max=("top1", "max")).reset_index()
    return table[columns]


def wilcoxon_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired per-class values (1.0 when they never differ)."""
    if len(a) == 0:
        return math.nan
    if np.all(a == b):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small samples: scipy warns about the normal approximation
        return float(stats.wilcoxon(a, b).pvalue)


def where_methods_differ(classes: pd.DataFrame, baseline: str | None, top: int = TOP_GAINS) -> pd.DataFrame:
    """For each method against `baseline` (same dataset and protocol): the summary over classes and the
    `top` classes with the largest seed-averaged gain, one row per listed class (summary repeated)."""
    table = per_class_table(classes)
    if baseline is None or table.empty:
        return pd.DataFrame(columns=DIFFER_COLUMNS)
    rows = []
    for (dataset, protocol), part in table.groupby(["dataset", "protocol"], sort=True):
        base = part[part["method_label"] == baseline].set_index("class")
        if base.empty:
            continue
        for method, mine in part[part["method_label"] != baseline].groupby("method_label", sort=True):
            joined = mine.set_index("class").join(base[["top1_mean"]].rename(columns={"top1_mean": "top1_mean_base"}),
                                                 how="inner")
            joined = joined[(joined["n"] > 0) & joined["top1_mean"].notna() & joined["top1_mean_base"].notna()]
            gain = joined["top1_mean"] - joined["top1_mean_base"]
            summary = {"dataset": dataset, "protocol": protocol, "method_label": method, "baseline": baseline,
                       "n_classes": len(joined), "mean_gain": float(gain.mean()) if len(joined) else math.nan,
                       "classes_better": int((gain > 0).sum()), "classes_worse": int((gain < 0).sum()),
                       "classes_tied": int((gain == 0).sum()),
                       "wilcoxon_p": wilcoxon_p(joined["top1_mean"].to_numpy(), joined["top1_mean_base"].to_numpy())}
            order = gain.reset_index().sort_values([0, "class"], ascending=[False, True]).head(top) \
                if len(joined) else pd.DataFrame(columns=["class", 0])
            for rank, (index, value) in enumerate(zip(order["class"], order[0]), start=1):
                row = joined.loc[index]
                rows.append({**summary, "rank": rank, "class": int(index), "name": row["name"], "top1": row["top1_mean"],
                             "baseline_top1": row["top1_mean_base"], "gain": float(value)})
            if not len(order):
                rows.append({**summary, "rank": None, "class": None, "name": None, "top1": None,
                             "baseline_top1": None, "gain": None})
    return pd.DataFrame(rows, columns=DIFFER_COLUMNS)


def top_confusions(confusions: pd.DataFrame, top: int = 10) -> pd.DataFrame:
    """Per (dataset, protocol, method): the `top` most frequent (true → predicted) pairs summed over seeds."""
    columns = ["dataset", "protocol", "method_label", "true", "pred", "true_name", "pred_name", "count", "seeds"]
    if confusions.empty:
        return pd.DataFrame(columns=columns)
    grouped = _with_protocol(confusions).groupby(["dataset", "protocol", "method_label", "true", "pred"], sort=True)
    summed = grouped.agg(true_name=("true_name", "first"), pred_name=("pred_name", "first"), count=("count", "sum"),
                         seeds=("seed", "nunique")).reset_index()
    summed = summed.sort_values(["dataset", "protocol", "method_label", "count", "true", "pred"],
                                ascending=[True, True, True, False, True, True], kind="stable")
    return summed.groupby(["dataset", "protocol", "method_label"], sort=True).head(top)[columns].reset_index(drop=True)
