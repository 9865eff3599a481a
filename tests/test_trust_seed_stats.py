"""Seed statistics at n = 2 and wide intervals: nothing shown outside [0, 100] % unmarked."""

from __future__ import annotations

import pandas as pd
import pytest

from bench.report import fmt, leaderboard, plots, render_markdown, runs_frame
from bench.report.stats import shown_interval
from tests.synthetic_records import make_record, write_runs


def _board(tmp_path, values):
    write_runs(tmp_path, [make_record("vit", "cotton", seed, value) for seed, value in enumerate(values)])
    runs = runs_frame(tmp_path)
    return runs, leaderboard(runs)


def _ci_column(board):
    table = render_markdown(board).splitlines()
    header = [c.strip() for c in table[0].strip("|").split("|")]
    row = [c.strip() for c in table[2].strip("|").split("|")]
    return dict(zip(header, row))


def test_two_seeds_show_the_range_and_no_interval(tmp_path):
    runs, board = _board(tmp_path, [20.0, 80.0])
    assert board.loc[0, "top1_ci_low"] < 0  # the t-interval itself is kept (CSV) ...
    cells = _ci_column(board)
    assert cells["95% CI"] == fmt.TOO_FEW_SEEDS  # ... but never printed
    assert cells["Min–max"] == "20.00–80.00"


def test_an_interval_past_0_or_100_is_clipped_and_marked(tmp_path):
    runs, board = _board(tmp_path, [2.0, 3.0, 95.0])
    assert board.loc[0, "top1_ci_low"] < 0 and board.loc[0, "top1_ci_high"] > 100
    assert _ci_column(board)["95% CI"] == "[0.00, 100.00]" + fmt.CLIPPED


@pytest.mark.parametrize("values", [[20.0, 80.0], [2.0, 3.0, 95.0]])
def test_the_seed_plot_stays_within_0_and_100(values, tmp_path, monkeypatch):
    runs, board = _board(tmp_path, values)
    limits = []
    monkeypatch.setattr(plots, "_svg", lambda fig, salt: limits.append(fig.axes[0].get_ylim()) or "<svg/>")
    plots.strip_svg(runs, board, plots.setting_labels(board), "t")
    (bottom, top), = limits
    assert bottom >= -2 and top <= 102


def test_shown_interval():
    assert shown_interval(-5.0, 30.0, 2) is None
    assert shown_interval(10.0, 30.0, 3) == (10.0, 30.0, False)
    assert shown_interval(-5.0, 130.0, 4) == (0.0, 100.0, True)
    assert pd.isna(float("nan")) and shown_interval(float("nan"), 1.0, 5) is None


def test_the_gain_over_the_baseline_follows_the_same_rule(tmp_path):
    """Two paired seeds give no interval for the gain either (it was printed as e.g. [-209, 240])."""
    values = {"vit": [30.0, 46.0], "ffvt": [51.0, 52.0]}
    write_runs(tmp_path, [make_record(m, "cotton", s, v) for m, vs in values.items() for s, v in enumerate(vs)])
    board = leaderboard(runs_frame(tmp_path), baseline="vit")
    row = board[board["method"] == "ffvt"].iloc[0]
    assert row["delta_ci_low"] < 0 < row["delta_ci_high"]  # the raw paired t-interval is kept for the CSV ...
    assert fmt.delta_interval(row) == fmt.TOO_FEW_SEEDS  # ... but not shown
    ffvt_line = next(line for line in render_markdown(board).splitlines() if line.startswith("| ffvt") and "vs vit" in line)
    assert "vs vit (too few seeds for an interval)" in ffvt_line and "[" not in ffvt_line
    wide = {**row.to_dict(), "delta_n": 3, "delta_ci_low": -150.0, "delta_ci_high": 40.0}
    assert fmt.delta_interval(wide) == "[-100.00, 40.00]" + fmt.CLIPPED
