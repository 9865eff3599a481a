"""Two CPU processes (gloo): sharded per-epoch shuffling, exact evaluation counts on odd-sized splits."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests import layouts
from tests.conftest import REPO, cli_env

pytestmark = pytest.mark.slow

ODD_CARD = """\
name: oddset
title: odd-sized test fixture
format: ufg
num_classes: 3
splits: {train: 18, test: 9}
recipes:
  default: {img_size: 16, resize_size: 16}
"""


def torchrun(*args: str, env=None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           *args], cwd=REPO, env=env or cli_env(), capture_output=True, text=True, timeout=timeout)


def test_train_shards_are_disjoint_and_reshuffled_each_epoch_and_eval_is_exact(tmp_path):
    out = tmp_path / "seen.json"
    # PYTHONPATH: the script's own folder comes first on sys.path, and this checkout's bench must win
    result = torchrun(str(REPO / "tests" / "dist_sampler_check.py"), str(out), env=cli_env(PYTHONPATH=str(REPO)))
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(out.read_text())
    assert seen["world"] == 2
    rank0, rank1 = (r["train"] for r in sorted(seen["ranks"], key=lambda r: r["rank"]))
    for epoch in range(len(rank0)):
        assert not set(rank0[epoch]) & set(rank1[epoch])  # the ranks split each epoch
        assert len(rank0[epoch]) == len(rank1[epoch]) == 8  # 22 // (4 x 2) full batches each
    assert rank0[0] != rank0[1] != rank0[2]  # a new shuffle every epoch
    assert sorted(seen["evaluated"]) == list(range(seen["n_test"]))  # 9 images: no padding duplicates, none lost


def test_two_process_run_evaluates_odd_splits_exactly(tmp_path):
    cards = tmp_path / "cards"
    cards.mkdir()
    (cards / "oddset.yaml").write_text(ODD_CARD)
    layouts.write_ufg(tmp_path / "data" / "oddset", 3, {"train": 6, "test": 3})
    env = cli_env(FGBENCH_CARDS=str(cards))
    result = torchrun(str(REPO / "bench.py"), "--datasets", "oddset", "--data-root", str(tmp_path / "data"),
                      "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"),
                      "--steps", "4", "--eval-every", "2", "--warmup-steps", "1", "--batch-size", "4",
                      "--eval-batch-size", "2", "--val-fraction", "0.15", "--no-progress", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(next((tmp_path / "results" / "runs").rglob("*.json")).read_text())
    assert record["status"] == "ok" and record["world_size"] == 2
    assert record["distributed"]["distributed_type"].endswith("MULTI_CPU")
    assert record["accuracy"]["n_evaluated"] == record["accuracy"]["n_test"] == 9
    assert record["data"]["val"]["n_val"] == 3 and record["data"]["n_train"] == 15
    assert all(point["n"] == 3 for point in record["accuracy"]["val_curve"])
