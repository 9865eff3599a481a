"""Figures for the HTML page, drawn with matplotlib and returned as inline SVG text.

SVG output is made reproducible: no date in the metadata, text kept as text, and element ids
hashed from a per-figure salt (matplotlib otherwise salts them with a random uuid, and two figures
on one page must not share ids). The same board and runs therefore give the same bytes.
"""

from __future__ import annotations

import functools
import io
import math
import re
from typing import Any, Iterable

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from bench.report.board import protocol_of
from bench.report.stats import ACCURACY_BOUNDS, shown_interval

STYLE = {"svg.fonttype": "none", "font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
         "axes.grid": True, "grid.alpha": 0.3, "font.family": "sans-serif"}
MARKERS = "osD^v<>P*X"


def _svg(fig: Figure, salt: str) -> str:
    with matplotlib.rc_context({**STYLE, "svg.hashsalt": f"fgbench-{salt}"}):
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    return scope_ids(text[text.index("<svg"):].strip(), salt)  # no XML prolog/DOCTYPE inside HTML


def scope_ids(svg: str, prefix: str) -> str:
    """Prefix every element id (and every `#id` reference to it) so several SVGs can share a page:
    matplotlib numbers `figure_1`, `axes_1`, ... afresh in each figure."""
    ids = set(re.findall(r'\bid="([^"]+)"', svg))
    if not ids:
        return svg
    return re.sub(r'(\bid="|#)([^"#()\s]+)(?=[")])',
                  lambda m: f"{m.group(1)}{prefix}-{m.group(2)}" if m.group(2) in ids else m.group(0), svg)


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def styled(draw):
    """Run a drawing function under fgbench's rcParams (axes pick them up when created)."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return draw(*args, **kwargs)

    return wrapper


def colors(labels: Iterable[str]) -> dict[str, Any]:
    """A stable colour per label (sorted, tab10 cycled)."""
    palette = matplotlib.colormaps["tab10"].colors
    return {label: palette[i % len(palette)] for i, label in enumerate(sorted(set(labels)))}


def setting_labels(board: pd.DataFrame) -> dict[str, str]:
    """setting_id -> a short readable name: the method, plus the preset when several protocols share a
    plot, plus a setting-id prefix when one method has several settings in one protocol."""
    protocols = protocol_of(board)
    several_protocols = protocols.nunique() > 1
    labels = {}
    counts = board.groupby([protocols, board["method_label"]]).size()
    for (sid, method, preset, protocol) in zip(board["setting_id"], board["method_label"], board["preset"], protocols):
        label = str(method) + (f" [{preset}]" if several_protocols else "")
        if counts[(protocol, method)] > 1:
            label += f" ({str(sid)[:6]})"
        labels[str(sid)] = label
    return labels


@styled
def scatter_svg(board: pd.DataFrame, labels: dict[str, str], salt: str) -> str | None:
    """Accuracy (mean ± sd over seeds) against training throughput; the Pareto front of each protocol
    (no setting both faster and more accurate) is joined by a dashed line."""
    data = board[board["top1_mean"].notna() & board["train_sps_median"].notna()]
    if data.empty:
        return None
    fig = _figure(6.0, 3.8)
    ax = fig.add_subplot()
    palette = colors(labels[str(s)] for s in data["setting_id"])
    protocols = protocol_of(data)
    for p_index, (protocol, part) in enumerate(data.groupby(protocols, sort=True)):
        for row in part.to_dict("records"):
            label = labels[str(row["setting_id"])]
            sd = row["top1_sd"] if not math.isnan(row["top1_sd"]) else 0.0
            ax.errorbar(row["train_sps_median"], row["top1_mean"], yerr=sd, fmt=MARKERS[p_index % len(MARKERS)],
                        color=palette[label], markersize=7, capsize=3,
                        markeredgecolor="black" if row["pareto"] else palette[label])
            ax.annotate(label, (row["train_sps_median"], row["top1_mean"]), textcoords="offset points",
                        xytext=(6, 4), fontsize=8)
        front = part[part["pareto"]].sort_values("train_sps_median")
        if len(front) > 1:
            ax.plot(front["train_sps_median"], front["top1_mean"], "--", color="0.4", linewidth=1,
                    label="Pareto front" if p_index == 0 else None)
    xs = data["train_sps_median"]
    if xs.min() > 0 and xs.max() / xs.min() > 20:
        ax.set_xscale("log")
    ax.set_xlabel("training throughput (images/s, median over seeds)")
    ax.set_ylabel("top-1 % at the last step")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left", fontsize=8)
    return _svg(fig, f"scatter-{salt}")


@styled
def strip_svg(runs: pd.DataFrame, board: pd.DataFrame, labels: dict[str, str], salt: str) -> str | None:
    """Every seed's last-step accuracy per setting, with the mean and its 95% CI beside."""
    ok = runs[(runs["status"] == "ok") & runs["top1_last"].notna()]
    if ok.empty:
        return None
    order = [s for s in board["setting_id"] if s in set(ok["setting_id"])]
    fig = _figure(max(3.5, 0.9 * len(order) + 1.5), 3.4)
    ax = fig.add_subplot()
    palette = colors(labels[str(s)] for s in order)
    stats = board.set_index("setting_id")
    for x, sid in enumerate(order):
        points = ok[ok["setting_id"] == sid].sort_values("seed")
        offsets = np.linspace(-0.15, 0.15, len(points)) if len(points) > 1 else np.zeros(1)
        color = palette[labels[str(sid)]]
        ax.scatter(x + offsets, points["top1_last"], color=color, s=22, alpha=0.85, zorder=3)
        mean, low, high = (float(stats.loc[sid, c]) for c in ("top1_mean", "top1_ci_low", "top1_ci_high"))
        shown = shown_interval(low, high, len(points))
        if shown is not None:
            lo, hi, clipped = shown
            ax.errorbar(x + 0.3, mean, yerr=[[mean - lo], [hi - mean]], fmt="_", color="black", capsize=3)
            for end, bound in ((lo, low), (hi, high)):
                if end != bound:  # cut at 0 or 100 %: an open arrow says the t-interval goes on
                    ax.plot(x + 0.3, end, "v" if end < mean else "^", color="black", markersize=5,
                            markerfacecolor="white")
        elif len(points) > 1:  # too few seeds for an interval: the range, dashed
            ax.vlines(x + 0.3, points["top1_last"].min(), points["top1_last"].max(), color="black",
                      linestyles="dashed", linewidth=1)
            ax.plot(x + 0.3, mean, "_", color="black", markersize=10)
        else:
            ax.plot(x + 0.3, mean, "_", color="black", markersize=10)
    ax.set_xticks(range(len(order)), [labels[str(s)] for s in order], rotation=20, ha="right")
    ax.set_xlim(-0.6, len(order) - 0.4)
    bottom, top = ax.get_ylim()
    ax.set_ylim(max(bottom, ACCURACY_BOUNDS[0] - 2), min(top, ACCURACY_BOUNDS[1] + 2))
    ax.set_ylabel("top-1 % at the last step")
    ax.set_title("dots: seeds; bar: mean and 95% CI (3+ seeds; arrow: cut at 0/100 %); dashed: range "
                 "(too few seeds for an interval)", fontsize=7)
    return _svg(fig, f"strip-{salt}")


@styled
def curves_svg(curves: pd.DataFrame, labels: dict[str, str], salt: str) -> str | None:
    """Test accuracy and training loss against step, one thin line per seed."""
    data = curves[curves["setting_id"].astype(str).isin(labels)]
    if data.empty or data.groupby("record").size().max() < 2:
        return None
    fig = _figure(7.5, 3.0)
    acc_ax, loss_ax = fig.subplots(1, 2)
    palette = colors(labels[str(s)] for s in data["setting_id"])
    seen = set()
    for record, points in data.groupby("record", sort=True):
        label = labels[str(points["setting_id"].iloc[0])]
        legend = label if label not in seen else None
        seen.add(label)
        acc_ax.plot(points["step"], points["top1"], color=palette[label], linewidth=1, marker=".", label=legend)
        if points["train_loss"].notna().any():
            loss_ax.plot(points["step"], points["train_loss"], color=palette[label], linewidth=1, marker=".")
    acc_ax.set(xlabel="step", ylabel="test top-1 %")
    loss_ax.set(xlabel="step", ylabel="training loss (sum of terms)")
    acc_ax.legend(fontsize=7)
    return _svg(fig, f"curves-{salt}")
