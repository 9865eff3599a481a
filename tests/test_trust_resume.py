"""Resume keyed on the data: a finished record counts only for the split lists and weights it was made from."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bench import records
from bench.cli import main
from bench.report import leaderboard, runs_frame
from bench.report.dataversions import mixed_data_warnings
from bench.resume import plan_resume
from tests.synthetic_records import make_record, write_runs
from tests.test_spine_matrix import cells


def _one_record(results: Path) -> dict:
    (path,) = sorted(records.runs_dir(results).rglob("*.json"))
    return json.loads(path.read_text())


def test_a_changed_test_split_re_trains_the_cell_and_says_why(fast_run_args, demo_root, tmp_path, capsys):
    assert main(fast_run_args) == 0
    first = _one_record(tmp_path / "results")
    other = tmp_path / "other-data"
    shutil.copytree(demo_root / "demo", other / "demo")
    listing = other / "demo" / "anno" / "test.txt"
    listing.write_text("".join(listing.read_text().splitlines(keepends=True)[:-1]))  # one test image fewer
    capsys.readouterr()

    args = [a if a != str(demo_root) else str(other) for a in fast_run_args]
    assert main(args) == 0
    captured = capsys.readouterr()
    err = captured.out + captured.err
    second = _one_record(tmp_path / "results")
    assert "already have a finished record" not in err
    assert "made from other demo split lists (test:" in err, err
    assert second["attempt"] == 2 and second["accuracy"]["n_test"] == first["accuracy"]["n_test"] - 1
    assert second["data"]["split_hashes"]["test"] != first["data"]["split_hashes"]["test"]

    assert main(args) == 0  # same data again: resumed, nothing re-run
    out = capsys.readouterr()
    assert "1 of 1 cells already have a finished record" in out.out + out.err
    assert _one_record(tmp_path / "results")["run_id"] == second["run_id"]


def test_rerun_modes_treat_stale_records(tmp_path):
    fresh, stale, missing = cells(seeds=(0, 1, 2))
    now = {"train": "t1", "test": "s1"}
    for cell, hashes in ((fresh, now), (stale, {"train": "t1", "test": "OLD"})):
        records.write_record(cell.record_path(tmp_path), {
            "schema_version": records.SCHEMA_VERSION, "cell_id": cell.cell_id, "status": "ok",
            "data": {"split_hashes": hashes}, "pretrained": None})
    fingerprints = {fresh.dataset: now}
    seeds = {mode: [c.seed for c in plan_resume([fresh, stale, missing], tmp_path, mode, fingerprints).todo]
             for mode in ("none", "failed", "stale", "all")}
    assert seeds == {"none": [1, 2], "failed": [1, 2], "stale": [1], "all": [0, 1, 2]}
    plan = plan_resume([fresh, stale, missing], tmp_path, "none", fingerprints)
    (line,) = plan.notes([fresh, stale, missing])
    assert stale.cell_id in line and "test: recorded test OLD, now test s1" in line


def test_report_never_mixes_records_of_different_data_in_one_row(tmp_path, capsys):
    old = {"data": {"split_hashes": {"train": "aaaa1111", "test": "OLD"}}}
    recs = [make_record("vit", "cotton", 0, 40.0), make_record("vit", "cotton", 1, 42.0),
            make_record("vit", "cotton", 2, 60.0, extra=old)]
    recs[2]["data"].update(old["data"])
    write_runs(tmp_path, recs)
    runs = runs_frame(tmp_path)
    board = leaderboard(runs)
    assert sorted(board["n_ok"]) == [1, 2] and board["data_version"].nunique() == 2
    (warning,) = mixed_data_warnings(runs)
    assert "vit on cotton" in warning and "2 different split lists" in warning
    assert main(["report", "--results-dir", str(tmp_path), "--no-paper"]) == 0
    assert "2 different split lists" in capsys.readouterr().err
