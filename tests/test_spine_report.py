"""The leaderboard's numbers against hand-computed ones, from synthetic records."""

from __future__ import annotations

import math

import pandas as pd

from bench import records
from bench.report import leaderboard, render_markdown, runs_frame, write_report


def fake_record(method, dataset, seed, top1, status="ok", setting="s1", sps=100.0, rss=500.0):
    rec = {
        "schema_version": records.SCHEMA_VERSION, "cell_id": f"{method}-{dataset}-{seed}-{setting}",
        "setting_id": setting, "status": status, "error": None if status == "ok" else "boom",
        "method": method, "variant": None, "method_label": method, "dataset": dataset, "seed": seed,
        "preset": "tiny", "precision": "no", "strategy": "ddp", "world_size": 1, "img_size": 64, "steps": 10,
        "global_batch": 32, "lr": 0.01,
    }
    if status == "ok":
        rec.update(accuracy={"top1_last": top1, "top5_last": top1 + 10, "top1_best_optimistic": top1 + 1},
                   speed={"train_samples_per_sec": sps, "eval_samples_per_sec": 2 * sps},
                   memory={"peak_rss_mb_max": rss}, cost={"params_m": 0.5})
    return rec


def write_all(tmp_path, recs):
    for r in recs:
        records.write_record(records.record_path(tmp_path, r["dataset"], r["method_label"], r["seed"], r["cell_id"]), r)


def test_leaderboard_statistics_match_hand_computation(tmp_path):
    write_all(tmp_path, [
        fake_record("vit", "demo", 0, 40.0, sps=100, rss=500),
        fake_record("vit", "demo", 1, 50.0, sps=200, rss=700),
        fake_record("vit", "demo", 2, 60.0, sps=300, rss=600),
        fake_record("vit", "demo", 3, 0.0, status="failed"),
        fake_record("ffvt", "demo", 0, 70.0),
    ])
    board = leaderboard(runs_frame(tmp_path))
    vit = board[board.method_label == "vit"].iloc[0]
    assert vit.n_seeds == 3 and vit.n_failed == 1
    assert vit.top1_mean == 50.0
    assert math.isclose(vit.top1_sd, 10.0)  # sample sd (ddof=1) of 40, 50, 60
    assert vit.top5_mean == 60.0 and vit.top1_best_optimistic_mean == 51.0
    assert vit.train_samples_per_sec_mean == 200.0 and vit.peak_mem_mb_max == 700.0
    ffvt = board[board.method_label == "ffvt"].iloc[0]
    assert ffvt.n_seeds == 1 and math.isnan(ffvt.top1_sd)  # one seed: no spread
    assert list(board.method_label) == ["ffvt", "vit"]  # ranked by mean top-1 within a dataset
    md = render_markdown(board)
    assert "50.00 ± 10.00 (n=3)" in md and "70.00 ± – (n=1)" in md


def test_written_csv_is_numeric_and_report_is_idempotent(tmp_path):
    write_all(tmp_path, [fake_record("vit", "demo", s, 40.0 + s) for s in range(2)])
    write_report(tmp_path)
    first = {p.name: p.read_bytes() for p in tmp_path.glob("leaderboard*")}
    write_report(tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.glob("leaderboard*")} == first
    csv = pd.read_csv(tmp_path / "leaderboard.csv")
    assert pd.api.types.is_float_dtype(csv["top1_mean"]) and csv["top1_mean"].iloc[0] == 40.5
    assert pd.api.types.is_integer_dtype(csv["n_seeds"])


def test_settings_are_not_mixed(tmp_path):
    write_all(tmp_path, [fake_record("vit", "demo", 0, 10.0, setting="a"), fake_record("vit", "demo", 0, 90.0, setting="b")])
    board = leaderboard(runs_frame(tmp_path))
    assert sorted(board.top1_mean) == [10.0, 90.0]
