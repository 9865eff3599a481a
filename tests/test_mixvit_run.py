"""End to end: `bench.py --methods mixvit,mixvit:clean,mixvit:eager,mixvit_parts --datasets demo`."""

from __future__ import annotations

import json
from pathlib import Path

from bench.cli import main


def test_mixvit_variants_and_parts_train_and_report_side_by_side(fast_run_args, tmp_path, capsys, single_thread):
    small = ["--batch-size", "8", "--img-size", "40", "--resize-size", "44", "--eval-every", "4"]
    status = main(["--methods", "mixvit,mixvit:clean,mixvit:eager,mixvit_parts", *fast_run_args, *small])
    proc = capsys.readouterr()
    assert status == 0, proc.err[-2000:]
    records = {r["method_label"]: r for r in (json.loads(p.read_text())
                                              for p in Path(tmp_path / "results" / "runs").rglob("*.json"))}
    assert set(records) == {"mixvit", "mixvit:clean", "mixvit:eager", "mixvit_parts"}
    for record in records.values():
        assert record["status"] == "ok", record.get("error")
        assert record["accuracy"]["n_evaluated"] == record["data"]["n_test"]
        assert record["train"]["losses_last"]["bce"] > 0 and record["speed"]["train_samples_per_sec"] > 0
    assert records["mixvit:clean"]["options"]["index_shift"] is False
    assert records["mixvit:eager"]["options"]["attention"] == "eager"
    assert {"ce", "shaping", "mask_ce", "bce"} == set(records["mixvit_parts"]["train"]["losses_last"])
    assert records["mixvit_parts"]["backbone"]["hybrid_layers"] == [3, 4] and records["mixvit_parts"]["backbone"]["depth"] == 2
    # the summary table puts fused and eager (full-map) selection side by side, with their train speed
    table = [line for line in proc.out.splitlines() if line.startswith("| mixvit")]
    assert {line.split("|")[1].strip() for line in table} == set(records), proc.out
    assert "Train img/s" in proc.out


def test_bad_mixvit_option_is_one_line_and_exit_2(fast_run_args, capsys):
    assert main(["--methods", "mixvit", "--opt", "mask_head_width=P+1", *fast_run_args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "mask_head_width must be one of P+2, P" in lines[0], lines
