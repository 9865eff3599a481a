"""End to end: `bench.py --methods sovit,sovit7 --datasets demo` trains, records and reports."""

from __future__ import annotations

import json
from pathlib import Path

from bench.cli import main

# one thread: on a shared 2-core machine OpenMP spinning makes small convolutions 10x slower


def test_sovit_and_sovit7_train_and_report(fast_run_args, tmp_path, capsys, single_thread):
    small = ["--batch-size", "8", "--img-size", "32", "--resize-size", "36", "--eval-every", "4"]
    status = main(["--methods", "sovit,sovit7", *fast_run_args, *small])
    assert status == 0, capsys.readouterr().err[-2000:]
    records = {r["method"]: r for r in (json.loads(p.read_text())
                                        for p in Path(tmp_path / "results" / "runs").rglob("*.json"))}
    assert set(records) == {"sovit", "sovit7"}
    for record in records.values():
        assert record["status"] == "ok", record.get("error")
        assert record["accuracy"]["n_evaluated"] == record["data"]["n_test"]
        assert record["train"]["losses_last"]["ce"] > 0
    assert records["sovit"]["options"]["dropout"] == 0.5
    assert records["sovit7"]["recipe_sources"]["optimizer"].startswith("preset")  # tiny preset above the method
    assert records["sovit7"]["recipe"]["label_smoothing"] == 0.1  # the method's own recipe
    capsys.readouterr()
    status = main(["report", "--results-dir", str(tmp_path / "results")])
    report = capsys.readouterr()
    assert status == 0, report.err[-2000:]
    assert "sovit7" in report.out and "sovit" in report.out.replace("sovit7", "")


def test_bad_sovit_option_is_one_line_and_exit_2(fast_run_args, capsys):
    from bench.cli import main

    assert main(["--methods", "sovit", "--opt", "sv_method=qr", *fast_run_args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "sv_method must be one of power, svd" in lines[0], lines


def test_one_step_full_deflation_is_one_line_and_exit_2(fast_run_args, capsys):
    from bench.cli import main

    assert main(["--methods", "sovit", "--opt", "sv_num=0", *fast_run_args]) == 2  # iters defaults to 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "iters=1 with sv_num=0" in lines[0] and "iters >= 2" in lines[0], lines
