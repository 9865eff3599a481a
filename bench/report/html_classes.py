"""The per-class parts of a dataset's section of `index.html`: where methods differ, top confusions."""

from __future__ import annotations

from html import escape

import pandas as pd

from bench.report import fmt

DIFFER_HEADERS = [("Method", True), ("vs", True), ("Classes", False), ("Mean per-class gain (pts)", False),
                  ("Better", False), ("Worse", False), ("Tied", False), ("Wilcoxon p", False),
                  ("Largest gains (method vs baseline top-1 %)", True)]
CONFUSION_HEADERS = [("Method", True), ("True class", True), ("Predicted", True), ("Count (summed over seeds)", False),
                     ("Seeds", False)]


def _p(value) -> str:
    return fmt.MISSING if fmt.is_missing(value) else (f"{value:.2g}" if value < 0.01 else f"{value:.3f}")


def differ_section(differ: pd.DataFrame) -> str:
    """Summary per method against the baseline, with the classes it gains most on."""
    from bench.report.html import _cell, _table

    if differ.empty:
        return ""
    rows = []
    for (protocol, method), part in differ.groupby(["protocol", "method_label"], sort=True):
        first = part.iloc[0]
        gains = "; ".join(f"{escape(fmt.text(r['name']))} {fmt.signed(r['gain'], 1)} "
                          f"({fmt.num(r['top1'], 1)} vs {fmt.num(r['baseline_top1'], 1)})"
                          for r in part.to_dict("records") if not fmt.is_missing(r["rank"]))
        rows.append("<tr>" + "".join([
            _cell(escape(method), method, "text", title=protocol),
            _cell(escape(fmt.text(first["baseline"])), first["baseline"], "text"),
            _cell(fmt.count(first["n_classes"]), first["n_classes"]),
            _cell(fmt.signed(first["mean_gain"]), first["mean_gain"]),
            _cell(fmt.count(first["classes_better"]), first["classes_better"]),
            _cell(fmt.count(first["classes_worse"]), first["classes_worse"]),
            _cell(fmt.count(first["classes_tied"]), first["classes_tied"]),
            _cell(_p(first["wilcoxon_p"]), first["wilcoxon_p"]),
            _cell(gains or fmt.MISSING, None, "text"),
        ]) + "</tr>")
    return ('<div class="classes"><h3>Where methods differ</h3><p class="note">Per-class top-1 averaged over seeds, '
            "each method minus the baseline, over the classes with test samples; Wilcoxon signed-rank test paired by "
            "class (two-sided).</p>" + _table(DIFFER_HEADERS, rows) + "</div>")


def confusion_section(confusions: pd.DataFrame) -> str:
    """The most frequent mistakes of each method (readable at any class count, unlike a full matrix)."""
    from bench.report.html import _cell, _table

    if confusions.empty:
        return ""
    rows = ["<tr>" + "".join([
        _cell(escape(fmt.text(r["method_label"])), r["method_label"], "text", title=r["protocol"]),
        _cell(escape(fmt.text(r["true_name"])), r["true"], "text"),
        _cell(escape(fmt.text(r["pred_name"])), r["pred"], "text"),
        _cell(fmt.count(r["count"]), r["count"]),
        _cell(fmt.count(r["seeds"]), r["seeds"]),
    ]) + "</tr>" for r in confusions.to_dict("records")]
    return ('<details class="confusions"><summary>Top confusions (true → predicted)</summary>'
            + _table(CONFUSION_HEADERS, rows) + "</details>")
