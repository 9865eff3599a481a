"""FFVT and TransFG through the harness: recipes from the cards, bad options, an end-to-end demo run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from bench.matrix import MatrixSpec, build_cells
from bench.schedule import build_scheduler
from bench.cli import main
from methods import parse_method_spec

# one thread: on a shared 2-core machine OpenMP spinning makes small ops 10x slower

COMMON = dict(optimizer="sgd", momentum=0.9, weight_decay=0.0, warmup_steps=500, schedule="cosine", clip_grad=1.0,
              label_smoothing=0.0)
# write-up §3.2 (FFVT README commands) and §3.1/§3.3; TransFG's train.py defaults on CUB
PUBLISHED = {
    ("ffvt", "cotton"): dict(img_size=384, resize_size=500, batch_size=8, lr=0.02, steps=2000, eval_every=16,
                             color_jitter=0.0, eval_batch_size=16, lr_step_offset=0),
    ("ffvt", "soyloc"): dict(img_size=384, resize_size=500, batch_size=8, lr=0.02, steps=4750, eval_every=50,
                             color_jitter=0.0, eval_batch_size=16, lr_step_offset=0),
    ("ffvt", "cub"): dict(img_size=448, resize_size=600, batch_size=8, lr=0.02, steps=10000, eval_every=200,
                          color_jitter=0.4, eval_batch_size=16, lr_step_offset=0),
    ("transfg", "cub"): dict(img_size=448, resize_size=600, batch_size=16, lr=0.03, steps=10000, eval_every=100,
                             color_jitter=0.0, eval_batch_size=8, lr_step_offset=1),
    # no published UFG recipe for TransFG: FFVT's numbers, TransFG's scheduler order
    ("transfg", "cotton"): dict(img_size=384, resize_size=500, batch_size=8, lr=0.02, steps=2000, eval_every=16,
                                color_jitter=0.0, lr_step_offset=1),
}


@pytest.mark.parametrize("method, dataset", sorted(PUBLISHED))
def test_base_recipes_are_the_published_ones(method, dataset):
    (cell,) = build_cells(MatrixSpec(methods=[parse_method_spec(method)], datasets=[dataset], seeds=[0],
                                     preset="base"))
    recipe = cell.recipe.to_dict()
    for key, value in {**COMMON, **PUBLISHED[method, dataset]}.items():
        assert recipe[key] == value, (key, recipe[key], cell.recipe_sources[key])
    assert cell.backbone.grid_size == recipe["img_size"] // 16 and cell.options["attention"] == "fused"


@pytest.mark.parametrize("method, offset", [("ffvt", 0), ("transfg", 1)])
def test_scheduler_order_of_each_method(method, offset):
    """Write-up §8.9: warm-up 500, cosine to 2000: multipliers 0, .5, 1, .5, 0 at steps 0, 250, 500, 1250,
    2000. FFVT steps the optimizer first (its first update has lr 0); TransFG the scheduler first."""
    (cell,) = build_cells(MatrixSpec(methods=[parse_method_spec(method)], datasets=["cotton"], seeds=[0],
                                     preset="base"))
    recipe = dataclasses.replace(cell.recipe, lr=1.0)
    assert (recipe.warmup_steps, recipe.steps, recipe.lr_step_offset) == (500, 2000, offset)
    param = torch.nn.Parameter(torch.zeros(()))
    optimizer = torch.optim.SGD([param], lr=recipe.lr)
    scheduler = build_scheduler(optimizer, recipe)
    used = []
    for _ in range(recipe.steps):  # the runner's loop: optimizer.step(), then scheduler.step()
        used.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    for step, multiplier in ((0, 0.0), (250, 0.5), (500, 1.0), (1250, 0.5), (2000, 0.0)):
        if 0 <= step - offset < recipe.steps:
            assert used[step - offset] == pytest.approx(multiplier, abs=1e-12), step
    assert used[0] == (0.0 if offset == 0 else 1 / 500)


def test_overlap_split_changes_the_backbone_and_the_cell_id():
    plain, overlap = (build_cells(MatrixSpec(methods=[parse_method_spec(m)], datasets=["cub"], seeds=[0],
                                             preset="base"))[0] for m in ("transfg", "transfg:overlap"))
    assert "patch_stride" not in plain.backbone.identity()  # ids of non-overlapping backbones are unchanged
    assert overlap.backbone.patch_stride == 12 and overlap.backbone.grid_size == 37
    assert plain.cell_id != overlap.cell_id


@pytest.mark.parametrize("args, message", [
    (["--methods", "ffvt", "--opt", "num_tokens=66"],
     "ffvt: num_tokens 66 is more than the 65 tokens of a 64 px image at patch 8; use --opt num_tokens=N with N <= 65"),
    (["--methods", "ffvt", "--opt", "num_tokens=0"], "num_tokens must be an integer >= 1"),
    (["--methods", "transfg:overlap"], "transfg: slide_step 12 is larger than the patch size 8"),
    (["--methods", "transfg", "--opt", "split=diagonal"], "split must be one of non-overlap, overlap"),
    (["--methods", "transfg", "--opt", "contrastive_divisor=n"], "contrastive_divisor must be one of batch_squared"),
])
def test_bad_options_are_one_line_and_exit_2(fast_run_args, capsys, args, message):
    from bench.cli import main

    assert main([*args, *fast_run_args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def test_ffvt_and_transfg_train_record_and_report(fast_run_args, tmp_path, capsys, single_thread):
    small = ["--batch-size", "8", "--img-size", "32", "--resize-size", "36", "--eval-every", "4",
             "--opt", "ffvt.num_tokens=4", "--opt", "transfg.slide_step=6"]
    status = main(["--methods", "ffvt,transfg:overlap", *fast_run_args, *small])
    assert status == 0, capsys.readouterr().err[-2000:]
    records = {r["method"]: r for r in (json.loads(p.read_text())
                                        for p in Path(tmp_path / "results" / "runs").rglob("*.json"))}
    assert set(records) == {"ffvt", "transfg"}
    for record in records.values():
        assert record["status"] == "ok", record.get("error")
        assert record["accuracy"]["n_evaluated"] == record["data"]["n_test"]
        assert record["train"]["losses_last"]["ce"] > 0
    assert records["ffvt"]["options"]["num_tokens"] == 4
    assert records["transfg"]["variant"] == "overlap" and records["transfg"]["options"]["slide_step"] == 6
    assert records["transfg"]["train"]["losses_last"]["contrastive"] >= 0
    assert records["transfg"]["recipe"]["lr_step_offset"] == 1 and records["ffvt"]["recipe"]["lr_step_offset"] == 0
    capsys.readouterr()
    status = main(["report", "--results-dir", str(tmp_path / "results")])
    report = capsys.readouterr()
    assert status == 0, report.err[-2000:]
    assert "ffvt" in report.out and "transfg" in report.out
