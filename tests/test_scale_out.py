"""Scale-out on the CPU: DDP vs one process, DeepSpeed ZeRO, shards, the worker pool, SIGTERM/resume, OOM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from bench import records
from bench.cli import main
from bench.matrix import MatrixSpec, build_cells, select_shard
from bench.oom import next_smaller_divisor
from methods import MethodAdapter, get_method, method_output, parse_method_spec, register_method
from methods.backbone import create_vit
from tests.conftest import REPO, cli_env, run_bench


def records_in(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(records.runs_dir(results).rglob("*.json"))]


def launch(args: list[str], nproc: int, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(nproc),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
           str(REPO / "bench.py"), *args]
    return subprocess.run(cmd, cwd=REPO, env=cli_env(OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_two_ranks_match_one_process_with_the_same_global_batch(fast_run_args, tmp_path):
    """Per-sample augmentation seeds + the same epoch permutation: 2 x 8 sees exactly what 1 x 16 sees."""
    common = [a for a in fast_run_args if a not in ("--steps", "4", "--eval-every", "2")]
    common += ["--methods", "vit", "--seeds", "0", "--steps", "6", "--eval-every", "3"]
    one = run_bench(*common, "--batch-size", "16", "--results-dir", str(tmp_path / "one"),
                    env=cli_env(OMP_NUM_THREADS="1"))
    assert one.returncode == 0, one.stderr
    two = launch(common + ["--batch-size", "8", "--results-dir", str(tmp_path / "two")], nproc=2)
    assert two.returncode == 0, two.stdout + two.stderr
    (a,), (b,) = records_in(tmp_path / "one"), records_in(tmp_path / "two")
    assert (a["world_size"], b["world_size"]) == (1, 2)
    assert a["global_batch"] == b["global_batch"] == 16
    assert a["accuracy"]["n_evaluated"] == b["accuracy"]["n_evaluated"] == 240
    for pa, pb in zip(a["accuracy"]["curve"], b["accuracy"]["curve"]):
        assert pa["step"] == pb["step"]
        assert pa["loss"] == pytest.approx(pb["loss"], rel=1e-4)
        assert abs(pa["top1"] - pb["top1"]) <= 100.0 / 240  # at most one test image may flip on float noise
    assert a["train"]["loss_last"] == pytest.approx(b["train"]["loss_last"], rel=1e-4)


@pytest.mark.slow
def test_zero2_runs_in_one_process_on_cpu(fast_run_args, tmp_path):
    pytest.importorskip("deepspeed", reason="the deepspeed extra is not installed (pip install 'fgbench[deepspeed]')")
    proc = run_bench(*fast_run_args, "--methods", "vit", "--seeds", "0", "--strategy", "zero2", "--precision", "bf16")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (rec,) = records_in(tmp_path / "results")
    assert rec["status"] == "ok" and rec["strategy"] == "zero2"
    assert rec["distributed"]["distributed_type"].endswith("DEEPSPEED")
    assert rec["distributed"]["mixed_precision"] == "bf16"
    assert rec["accuracy"]["n_evaluated"] == 240


def test_deepspeed_config_may_not_set_optimizer(tmp_path, capsys):
    config = tmp_path / "ds.json"
    config.write_text(json.dumps({"zero_optimization": {"stage": 1}, "optimizer": {"type": "Adam"}}))
    assert main(["--deepspeed-config", str(config), "--dry-run", "--results-dir", str(tmp_path)]) == 2
    assert "remove ['optimizer']" in capsys.readouterr().err


def test_shards_partition_the_matrix():
    spec = MatrixSpec([parse_method_spec("vit"), parse_method_spec("sovit")], ["demo"], [0, 1, 2],
                      world_sizes=[1, 2])
    cells = build_cells(spec)
    ids = {c.cell_id for c in cells}
    for n in (1, 2, 3, 5):
        parts = [{c.cell_id for c in select_shard(cells, i, n)} for i in range(n)]
        assert set().union(*parts) == ids and sum(len(p) for p in parts) == len(ids)  # disjoint, covering
        assert max(map(len, parts)) - min(map(len, parts)) <= 1  # balanced
    assert select_shard(list(reversed(cells)), 0, 2) == [c for c in reversed(cells)
                                                         if c in select_shard(cells, 0, 2)]  # order-free


def test_two_shards_run_every_cell_exactly_once(fast_run_args, tmp_path):
    args = fast_run_args + ["--methods", "vit", "--seeds", "0,1,2", "--steps", "2", "--eval-every", "2"]
    listed = [run_bench(*args, "--shard", f"{i}/2", "--dry-run").stdout.split() for i in range(2)]
    ids = [{w for w in out if len(w) == 16} for out in listed]
    assert ids[0] and ids[1] and not ids[0] & ids[1]
    for i in range(2):
        assert main(args + ["--shard", f"{i}/2"]) == 0
    recs = records_in(tmp_path / "results")
    assert sorted(r["seed"] for r in recs) == [0, 1, 2] and {r["cell_id"] for r in recs} == ids[0] | ids[1]
    assert all(r["attempt"] == 1 for r in recs)


@pytest.mark.slow
def test_parallel_cells_survives_a_killed_worker(fast_run_args, tmp_path):
    args = fast_run_args + ["--methods", "vit", "--seeds", "0,1,2,3", "--steps", "40", "--eval-every", "40",
                            "--parallel", "cells", "--slots", "2"]
    driver = subprocess.Popen([sys.executable, str(REPO / "bench.py"), *args], cwd=REPO, env=cli_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = None
    deadline = time.time() + 120
    while victim is None and time.time() < deadline:
        for proc in psutil.process_iter(["pid", "cmdline"]):
            cmdline = proc.info["cmdline"] or []
            if "--cell-ids" in cmdline and str(tmp_path) in " ".join(cmdline):
                victim = proc
                break
        time.sleep(0.1)
    assert victim is not None, "no worker started"
    time.sleep(1.0)
    os.killpg(victim.pid, signal.SIGKILL)
    out, err = driver.communicate(timeout=400)
    assert driver.returncode == 1, out + err  # one cell failed, the matrix went on
    recs = records_in(tmp_path / "results")
    assert len(recs) == 4 and sorted(r["seed"] for r in recs) == [0, 1, 2, 3]
    failed = [r for r in recs if r["status"] != "ok"]
    assert len(failed) == 1 and "killed by signal 9" in failed[0]["error"]
    assert (tmp_path / "results" / "logs" / f"{failed[0]['cell_id']}.log").exists()
    assert main(fast_run_args + args[len(fast_run_args):] + ["--rerun", "failed"]) == 0
    recs = records_in(tmp_path / "results")
    assert all(r["status"] == "ok" for r in recs) and len(recs) == 4


@pytest.mark.slow
def test_sigterm_checkpoints_and_resume_gives_the_uninterrupted_result(fast_run_args, tmp_path):
    base = [a for a in fast_run_args if a not in ("--steps", "4", "--eval-every", "2", "--results-dir")]
    base = [a for a in base if a != str(tmp_path / "results")]
    args = base + ["--methods", "vit", "--seeds", "0", "--steps", "36", "--eval-every", "12"]
    straight = run_bench(*args, "--results-dir", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr
    (expected,) = records_in(tmp_path / "straight")

    results = tmp_path / "stopped"
    proc = subprocess.Popen([sys.executable, str(REPO / "bench.py"), *args, "--results-dir", str(results)],
                            cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if "cell 1/1" in line:
            break
    time.sleep(2.0)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    (stopped,) = records_in(results)
    assert stopped["status"] == "interrupted" and 1 <= stopped["checkpoint"]["step"] < 36
    assert Path(stopped["checkpoint"]["path"]).is_dir()

    resumed = run_bench(*args, "--results-dir", str(results))
    assert resumed.returncode == 0, resumed.stderr
    (final,) = records_in(results)
    assert final["status"] == "ok" and final["resumed_from_step"] == stopped["checkpoint"]["step"]
    assert final["attempt"] == 2 and not Path(stopped["checkpoint"]["path"]).exists()
    assert [p["loss"] for p in final["accuracy"]["curve"]] == [p["loss"] for p in expected["accuracy"]["curve"]]
    assert final["accuracy"]["top1_last"] == expected["accuracy"]["top1_last"]
    assert final["train"]["loss_last"] == expected["train"]["loss_last"]


class _Greedy(torch.nn.Module):
    """Runs out of memory above a per-device batch of 8 (an injected allocation failure)."""

    def __init__(self, num_classes, backbone):
        super().__init__()
        self.vit = create_vit(backbone, num_classes)

    def forward(self, images, targets=None):
        if images.shape[0] > 8:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB (injected)")
        logits = self.vit(images)
        if targets is None:
            return method_output(logits)
        loss = torch.nn.functional.cross_entropy(logits, targets)
        return method_output(logits, loss=loss, losses={"ce": loss})


def test_oom_halves_the_batch_and_keeps_the_global_batch(fast_run_args, tmp_path):
    if "test_greedy" not in __import__("methods").method_names():
        register_method(type("Greedy", (MethodAdapter,), {
            "name": "test_greedy", "summary": "test-only", "in_all": False,
            "build": lambda self, n, backbone, options, recipe: _Greedy(n, backbone)}))
    assert main(fast_run_args + ["--methods", "test_greedy", "--seeds", "0", "--batch-size", "32"]) == 0
    (rec,) = records_in(tmp_path / "results")
    assert rec["status"] == "ok"
    assert (rec["requested_per_device_batch"], rec["per_device_batch"], rec["grad_accum"]) == (32, 8, 4)
    assert rec["oom_halvings"] == 2 and rec["global_batch"] == 32
    assert rec["recipe"]["eval_batch_size"] == 64 and rec["eval_batch_size"] == 8  # evaluation fitted too


def test_a_cpu_allocation_failure_is_out_of_memory_for_the_probe():
    from bench.oom import is_oom

    with pytest.raises(RuntimeError) as failure:
        torch.empty(1 << 60, dtype=torch.uint8)  # the CPU allocator's own failure, not a CUDA one
    assert not isinstance(failure.value, torch.OutOfMemoryError) and is_oom(failure.value)
    assert not is_oom(RuntimeError("shape mismatch"))


def test_next_smaller_divisor_keeps_the_global_batch_exact():
    assert [next_smaller_divisor(12, b) for b in (12, 6, 3)] == [6, 3, 1]
    assert next_smaller_divisor(32, 32) == 16 and next_smaller_divisor(7, 7) == 1


@pytest.mark.parametrize("parallel", [[], ["--parallel", "cells"]])
def test_a_shard_without_cells_exits_0_and_runs_nothing(fast_run_args, tmp_path, capsys, parallel):
    assert main(fast_run_args + ["--methods", "vit", "--seeds", "0", "--shard", "1/2", *parallel]) == 0
    assert "has no cells" in capsys.readouterr().err
    assert not list((tmp_path / "results").rglob("*.json"))
