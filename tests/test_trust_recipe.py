"""Every recipe value is range-checked before training: one line, exit 2, nothing written."""

from __future__ import annotations

import pytest

from bench.cli import main
from bench.recipe import resolve_recipe


@pytest.mark.parametrize("flags, fragment", [
    (["--lr", "inf"], "lr must be finite and > 0 (got inf)"),
    (["--lr", "nan"], "lr must be finite and > 0 (got nan)"),
    (["--lr", "0"], "lr must be finite and > 0"),
    (["--set", "label_smoothing=2"], "label_smoothing must be in [0, 1) (got 2.0)"),
    (["--set", "label_smoothing=1"], "label_smoothing must be in [0, 1)"),
    (["--set", "color_jitter=-1"], "color_jitter must be finite and >= 0"),
    (["--set", "weight_decay=-1"], "weight_decay must be finite and >= 0"),
    (["--set", "momentum=5"], "momentum must be in [0, 1) (got 5.0)"),
    (["--set", "momentum=-0.1"], "momentum must be in [0, 1)"),
    (["--set", "clip_grad=-1"], "clip_grad must be finite and >= 0 (0 or none disables it)"),
    (["--set", "clip_grad=.inf"], "clip_grad must be finite"),
    (["--val-fraction", "1.5"], "val_fraction must be in [0, 1)"),
    (["--warmup-steps", "-1"], "warmup_steps must be >= 0"),
])
def test_out_of_range_recipe_values_are_one_line_exit_2(flags, fragment, fast_run_args, tmp_path, capsys):
    assert main([*fast_run_args, *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bench.py: error: bad recipe: ") and fragment in err[0], err
    assert not list(tmp_path.rglob("*.json")) and not (tmp_path / "cache").exists()


def test_clip_grad_none_disables_clipping():
    recipe, _ = resolve_recipe([("command line", {"clip_grad": "none"})])
    assert recipe.clip_grad == 0.0


def test_every_shipped_recipe_is_in_range(capsys):
    assert main(["--methods", "all", "--datasets", "all", "--preset", "base", "--dry-run"]) == 0
