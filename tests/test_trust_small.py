"""Small visible things: a quiet resume, the console script's name and version, the interrupt footer."""

from __future__ import annotations

import argparse
import sys
import warnings

import pytest
import torch

from bench import __version__
from bench.cli import main
from bench.commands.run import report_outcome
from bench.recipe import Recipe
from bench.schedule import build_scheduler, fast_forward, lr_multiplier
from tests.test_spine_matrix import cells


def test_resuming_the_schedule_is_silent_and_exact():
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    scheduler = build_scheduler(optimizer, Recipe(steps=100, warmup_steps=10))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fast_forward(scheduler, 7)
    assert not caught
    assert scheduler.get_last_lr()[0] == pytest.approx(0.1 * lr_multiplier(7, 10, 100))


def test_the_console_script_names_itself_and_has_a_version(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/fgbench"])
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"fgbench {__version__}"
    assert main(["--bogus-flag"]) == 2
    assert capsys.readouterr().err.startswith("fgbench: error: unrecognized arguments: --bogus-flag")
    monkeypatch.setattr(sys, "argv", ["bench.py"])
    assert main(["--bogus-flag"]) == 2 and capsys.readouterr().err.startswith("bench.py: error: ")


def test_the_footer_after_an_interrupt_says_a_plain_re_run_resumes(tmp_path, capsys):
    a, b = cells(seeds=(0, 1))
    args = argparse.Namespace(results_dir=tmp_path)
    report_outcome([a, b], args, {a.cell_id: "ok", b.cell_id: "interrupted"})
    err = capsys.readouterr().err
    assert "running the same command again resumes interrupted cells" in err and "--rerun failed" not in err
    report_outcome([a, b], args, {a.cell_id: "failed", b.cell_id: "interrupted"})
    err = capsys.readouterr().err
    assert "resumes interrupted cells" in err and "--rerun failed retries the failed ones" in err
