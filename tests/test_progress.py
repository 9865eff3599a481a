"""Console output in a log file (non-TTY): lines, never carriage-return bars."""

from __future__ import annotations

import io

from bench import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_is_bars_on_a_terminal_and_plain_elsewhere():
    assert progress.resolve_style("auto", Terminal()) == "bar"
    assert progress.resolve_style("auto", io.StringIO()) == "plain"
    assert progress.resolve_style("none", Terminal()) == "none"


def test_plain_step_lines_are_rate_limited_but_the_last_step_always_shows():
    lines = []
    steps = progress.PlainSteps(total=30, initial=0, desc="vit/demo/seed0", write=lines.append, every_s=3600)
    steps.synced(10, {"ce": 2.0}, 1e-3)
    steps.synced(20, {"ce": 1.5}, 1e-3)
    assert lines == []
    steps.evaluated(20, {"top1": 12.5, "top5": 50.0, "loss": 2.25})
    steps.synced(30, {"ce": 1.0, "aux": 0.25}, 5e-4)
    assert lines[0] == "  vit/demo/seed0: step 20/30 eval top-1 12.50% top-5 50.00% loss 2.2500"
    assert lines[1].startswith("  vit/demo/seed0: step 30/30 loss 1.2500 (aux 0.2500, ce 1.0000) lr 5.000e-04 (")


def test_a_run_in_a_log_file_prints_lines_without_carriage_returns(fast_run_args, capsys, monkeypatch):
    from bench.cli import main

    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)
    args = [a for a in fast_run_args if a != "--no-progress"]  # the default: auto, and pytest's streams are no TTY
    assert main([*args, "--methods", "vit", "--seeds", "0,1"]) == 0
    out, err = capsys.readouterr()
    assert "\r" not in out + err
    lines = out.splitlines()
    for number in (1, 2):
        assert sum(line.startswith(f"fgbench: cell {number}/2: vit on demo seed ") for line in lines) == 1
        assert sum(line.startswith(f"fgbench: cell {number}/2 ok: vit on demo seed ") and "top-1 " in line
                   for line in lines) == 1
    assert sum("step 4/4 loss " in line for line in lines) == 2  # the readout at the last step
    assert sum("eval top-1" in line for line in lines) == 4  # two evaluations per cell


def test_no_progress_is_none_and_the_last_flag_wins():
    from bench.cli import parse_args

    assert parse_args(["--no-progress"]).progress == "none"
    assert parse_args(["--no-progress", "--progress", "plain"]).progress == "plain"
    assert parse_args([]).progress == "auto"


def test_none_keeps_only_the_cell_lines(fast_run_args, capsys):
    from bench.cli import main

    args = [a for a in fast_run_args if a != "--no-progress"]
    assert main([*args, "--methods", "vit", "--progress", "none", "--steps", "2"]) == 0
    out, err = capsys.readouterr()
    assert "\r" not in out + err and "eval top-1" not in out
    assert "fgbench: cell 1/1: vit on demo seed 0" in out and "fgbench: cell 1/1 ok: vit on demo seed 0" in out
