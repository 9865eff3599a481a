"""Output locations are checked before any model is built; a full disk fails a cell, not the matrix."""

from __future__ import annotations

import errno
import json
import os

import pytest

from bench import records
from bench.cli import main
from tests.synthetic_records import make_record, write_runs


def _one_line_exit_2(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench.py: error: "), err
    assert all(f in lines[0] for f in fragments), err
    return lines[0]


def _swap(args: list[str], flag: str, value) -> list[str]:
    out = list(args)
    out[out.index(flag) + 1] = str(value)
    return out


def _file(path):
    path.write_text("x")


def _runs_is_a_file(path):
    path.mkdir()
    (path / "runs").write_text("x")


@pytest.mark.parametrize("flag, make, fragment", [
    ("--results-dir", _file, "is a file, not a folder"),
    ("--results-dir", _runs_is_a_file, "runs is a file, not a folder"),
    ("--cache-dir", _file, "is a file, not a folder"),
    ("--cache-dir", lambda p: _file(p.parent / "parent-file") or None, "cannot be created"),
])
def test_unusable_output_folders_are_refused_before_training(flag, make, fragment, fast_run_args, tmp_path, capsys):
    target = tmp_path / "blocked"
    make(target)
    if fragment == "cannot be created":
        target = tmp_path / "parent-file" / "cache"
    args = _swap(fast_run_args, flag, target)
    before = sorted(tmp_path.rglob("*"))
    assert main(args) == 2
    _one_line_exit_2(capsys, flag, fragment)
    assert sorted(tmp_path.rglob("*")) == before  # nothing left behind: no cache, no records, no claims


def test_a_read_only_results_folder_is_refused(fast_run_args, tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    results.mkdir()
    real = os.access
    monkeypatch.setattr("bench.outputs.os.access", lambda p, mode: False if str(p) == str(results) else real(p, mode))
    assert main(fast_run_args) == 2
    _one_line_exit_2(capsys, "--results-dir", "is not writable")
    assert list(results.iterdir()) == []


def test_report_on_a_read_only_folder_says_so_and_writes_to_out(tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    write_runs(results, [make_record("vit", "cotton", 0, 40.0)])
    real = os.access
    monkeypatch.setattr("bench.outputs.os.access", lambda p, mode: False if str(p) == str(results) else real(p, mode))
    assert main(["report", "--results-dir", str(results), "--no-paper"]) == 2
    _one_line_exit_2(capsys, "is not writable", "--out DIR")
    assert main(["report", "--results-dir", str(results), "--no-paper", "--out", str(tmp_path / "tables")]) == 0
    assert (tmp_path / "tables" / "leaderboard.csv").is_file() and not (results / "leaderboard.csv").exists()


def test_speed_results_folder_is_checked(tmp_path, capsys):
    (tmp_path / "speed").write_text("x")
    assert main(["speed", "--methods", "vit", "--results-dir", str(tmp_path / "speed"), "--steps", "1",
                 "--warmup", "1"]) == 2
    _one_line_exit_2(capsys, "--results-dir", "is a file, not a folder")


def test_a_full_disk_fails_the_cell_keeps_finished_records_and_leaves_no_temporaries(fast_run_args, tmp_path,
                                                                                    monkeypatch, capsys):
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if os.path.basename(str(dst)).startswith("seed1-"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    assert main([*fast_run_args, "--seeds", "0,1"]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert "seed 1: cannot write its record" in captured.out + captured.err
    results = tmp_path / "results"
    (kept,) = sorted(records.runs_dir(results).rglob("*.json"))
    assert kept.name.startswith("seed0-") and json.loads(kept.read_text())["status"] == "ok"
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
