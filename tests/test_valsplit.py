"""Validation splits: stratified seeded carving, val-selected accuracy, and loaders that keep RNG streams apart."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.data.items import Split
from bench.data.valsplit import carve
from bench.errors import UsageError
from bench.loaders import BatchStream, build_loaders
from bench.recipe import Recipe
from bench.runner import val_selection
from tests.conftest import run_bench


def split_with(counts: list[int]) -> Split:
    items = [(f"c{label}/{k}.png", label) for label, n in enumerate(counts) for k in range(n)]
    return Split("train", Path("/nowhere"), items, "list.txt")


@pytest.mark.parametrize("counts, fraction", [([3] * 80, 0.1), ([5, 9, 2, 30, 7], 0.2), ([40, 1, 40], 0.5)])
def test_carve_is_stratified_disjoint_and_covering(counts, fraction):
    split = split_with(counts)
    train, val = carve(split, fraction, seed=0)
    assert sorted(train.indices + val.indices) == list(range(len(split)))  # disjoint and covering
    assert len(val) == int(np.floor(fraction * len(split) + 0.5))
    per_class = np.bincount(val.labels, minlength=len(counts))
    capped = any(np.ceil(fraction * n) > n - 1 for n in counts)  # a class that must keep its last image
    for label, n in enumerate(counts):  # each class keeps one to train and gives floor or ceil of its share
        assert per_class[label] <= n - 1
        if not capped:
            assert int(np.floor(fraction * n)) <= per_class[label] <= int(np.ceil(fraction * n))
    assert [split.items[i] for i in val.indices] == val.items and val.parent is split


def test_carve_is_seeded():
    split = split_with([3] * 80)
    first, again, other = (carve(split, 0.1, seed)[1].indices for seed in (0, 0, 1))
    assert first == again and first != other


@pytest.mark.parametrize("fraction, message", [(0.9, r"keeping one training image per class"),
                                               (0.001, r"carves no validation image")])
def test_carve_refuses_impossible_fractions(fraction, message):
    with pytest.raises(UsageError, match=message):
        carve(split_with([3] * 10), fraction, seed=0)


def test_val_selection_takes_the_earliest_best_validation_step():
    curve = [{"step": s, "top1": t, "top5": 0.0} for s, t in ((10, 50.0), (20, 70.0), (30, 60.0), (40, 90.0))]
    val = [{"step": s, "top1": t} for s, t in ((10, 40.0), (20, 80.0), (30, 80.0), (40, 70.0))]
    chosen = val_selection(curve, val)
    assert (chosen["valsel_step"], chosen["top1_valsel"], chosen["val_top1_best"]) == (20, 70.0, 80.0)
    assert val_selection(curve, []) == {}


def test_recipe_refuses_conflicting_val_settings():
    with pytest.raises(UsageError, match="cannot be combined"):
        Recipe(val_fraction=0.1, val_split="shipped")
    with pytest.raises(UsageError, match=r"val_fraction must be in \[0, 1\)"):
        Recipe(val_fraction=1.0)


class Indexed(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.zeros(1), i


def test_evaluation_loaders_do_not_draw_from_the_global_rng(monkeypatch):
    import bench.loaders as loaders

    monkeypatch.setattr(loaders, "split_dataset", lambda split, role, recipe, resized=None: Indexed(len(split)))
    split = split_with([4, 4, 4])
    built = build_loaders({"train": split, "test": split, "val": split}, Recipe(batch_size=4, eval_batch_size=5),
                          seed=0, workers=0, device=torch.device("cpu"))
    torch.manual_seed(0)
    before = torch.get_rng_state()
    for role in ("test", "val"):
        assert [i for _, batch in built[role] for i in batch.tolist()] == list(range(12))  # in order, all of it
    assert torch.equal(before, torch.get_rng_state())
    epochs = BatchStream(built["train"])
    orders = [[i for _ in range(3) for i in next(epochs)[1].tolist()] for _ in range(2)]
    assert sorted(orders[0]) == list(range(12)) and orders[0] != orders[1]  # a new shuffle every epoch


def test_run_records_val_selected_accuracy(fast_run_args, tmp_path):
    result = run_bench(*fast_run_args, "--val-fraction", "0.1")
    assert result.returncode == 0, result.stderr
    record = json.loads(next((tmp_path / "results" / "runs").rglob("*.json")).read_text())
    acc, val = record["accuracy"], record["data"]["val"]
    assert (val["source"], val["fraction"], val["seed"], val["n_val"], val["n_train_before"]) == \
        ("carved", 0.1, 0, 36, 360)
    assert record["data"]["n_train"] == 324 and len(val["hash"]) == 16 and record["recipe"]["val_fraction"] == 0.1
    assert [p["step"] for p in acc["val_curve"]] == [p["step"] for p in acc["curve"]] == [2, 4]
    assert all(p["n"] == 36 for p in acc["val_curve"])
    at_selected = next(p for p in acc["curve"] if p["step"] == acc["valsel_step"])
    assert acc["top1_valsel"] == at_selected["top1"]
    assert acc["val_top1_best"] == max(p["top1"] for p in acc["val_curve"])


def test_shipped_val_split_must_exist(fast_run_args):
    result = run_bench(*fast_run_args, "--val-split", "shipped")
    assert result.returncode == 2
    assert "ships no val split" in result.stderr and len(result.stderr.strip().splitlines()) == 1
