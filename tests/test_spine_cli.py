"""End-to-end behaviour of `bench.py`: bad input, resume, failures, kills, two processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from bench import records
from bench.cli import main
from methods import MethodAdapter, method_output, register_method
from methods.backbone import create_vit
from tests.conftest import REPO, cli_env, run_bench


def record_files(results: Path) -> list[Path]:
    return sorted(records.runs_dir(results).rglob("*.json"))


@pytest.mark.parametrize("args, fragment", [
    (["--methods", "nope"], "unknown method 'nope'; expected one of: vit"),
    (["--datasets", "imagenet"], "unknown dataset 'imagenet'; expected one of:"),
    (["--preset", "huge"], "unknown preset 'huge'; expected one of: tiny, base"),
    (["--precision", "fp8"], "invalid choice: 'fp8'"),
    (["--seeds", "x"], "--seeds expects integers"),
    (["--bogus-flag"], "unrecognized arguments: --bogus-flag"),
    (["--set", "lrr=1"], "unknown recipe key 'lrr'"),
    (["--opt", "num_tokens=3"], "no selected method has this option"),
    (["--methods", "vit:fast"], "unknown variant 'vit:fast'"),
    (["--steps", "0"], "steps must be >= 1"),
    (["--threads", "0"], "--threads must be >= 1, got 0"),
])
def test_bad_input_is_one_line_and_exit_2(args, fragment, tmp_path, capsys):
    assert main([*args, "--results-dir", str(tmp_path), "--data-root", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench.py: error: ") and fragment in lines[0], captured.err
    assert not list(tmp_path.rglob("*.json"))


def test_bad_input_process_exit_status_and_no_traceback(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    proc = run_bench("--datasets", "demo", "--data-path", f"demo={tmp_path / 'elsewhere'}", "--results-dir", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "is not a UFG dataset folder" in proc.stderr
    assert "Traceback" not in proc.stderr and not proc.stdout


def test_run_resume_and_rerun_exactly_the_deleted_record(fast_run_args, tmp_path):
    args = fast_run_args + ["--seeds", "0,1"]
    first = run_bench(*args)
    assert first.returncode == 0, first.stderr
    files = record_files(tmp_path / "results")
    assert len(files) == 2
    recs = [json.loads(p.read_text()) for p in files]
    for rec in recs:
        assert rec["status"] == "ok" and rec["accuracy"]["n_evaluated"] == rec["data"]["n_test"] == 240
        assert rec["speed"]["train_samples_per_sec"] > 0 and rec["cost"]["params"] > 0
        assert rec["accuracy"]["top1_best_optimistic"] >= rec["accuracy"]["top1_last"]
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    table = [line for line in first.stdout.splitlines() if line.startswith("|")]
    assert len(table) == 3  # header, rule, one row for the two seeds

    again = run_bench(*args)
    assert again.returncode == 0 and "2 of 2 cells already have a finished record" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in record_files(tmp_path / "results")} == mtimes
    assert [line for line in again.stdout.splitlines() if line.startswith("|")] == table  # same leaderboard

    files[1].unlink()
    third = run_bench(*args)
    assert third.returncode == 0 and "1 of 2 cells already have a finished record" in third.stdout
    assert files[0].stat().st_mtime_ns == mtimes[files[0]] and files[1].exists()
    assert len(record_files(tmp_path / "results")) == 2


class _Broken(nn.Module):
    """A model whose training step fails in a chosen way."""

    def __init__(self, mode: str, num_classes: int, backbone):
        super().__init__()
        self.mode = mode
        self.vit = create_vit(backbone, num_classes)

    def forward(self, images, targets=None):
        logits = self.vit(images)
        if targets is None:
            return method_output(logits)
        if self.mode == "crash":
            raise ValueError("simulated crash in the training step")
        if self.mode == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (simulated)")
        loss = logits.sum() * float("nan")
        return method_output(logits, loss=loss, losses={"ce": loss})


def _register_broken(name: str, mode: str) -> None:
    cls = type(name, (MethodAdapter,), {
        "name": name, "summary": f"test-only: {mode}", "in_all": False,
        "build": lambda self, n, backbone, options, recipe, _m=mode: _Broken(_m, n, backbone),
    })
    register_method(cls)


def test_failing_cells_are_recorded_and_the_matrix_goes_on(fast_run_args, tmp_path, capsys):
    for name, mode in (("test_crash", "crash"), ("test_oom", "oom"), ("test_nan", "nan")):
        _register_broken(name, mode)
    status = main(fast_run_args + ["--methods", "test_crash,test_oom,test_nan,vit", "--seeds", "0"])
    assert status == 1
    by_method = {json.loads(p.read_text())["method"]: json.loads(p.read_text()) for p in record_files(tmp_path / "results")}
    assert {m: r["status"] for m, r in by_method.items()} == {
        "test_crash": "failed", "test_oom": "oom", "test_nan": "diverged", "vit": "ok"}
    assert "simulated crash" in by_method["test_crash"]["error"]
    assert "non-finite" in by_method["test_nan"]["error"]
    err = capsys.readouterr().err
    assert "3 of 4 cells not ok (diverged, failed, oom)" in err
    # failed cells are finished: re-running skips them (exit 1 still) unless --rerun failed
    assert main(fast_run_args + ["--methods", "test_crash,vit", "--seeds", "0"]) == 1
    crash_record = next(p for p in record_files(tmp_path / "results") if "test_crash" in str(p))
    assert json.loads(crash_record.read_text())["attempt"] == 1  # skipped, not re-run
    assert main(fast_run_args + ["--methods", "test_crash", "--seeds", "0", "--rerun", "failed"]) == 1
    again = json.loads(crash_record.read_text())
    assert again["attempt"] == 2


def test_sigkill_mid_matrix_then_resume_completes_without_corruption(fast_run_args, tmp_path):
    args = fast_run_args + ["--seeds", "0,1,2", "--steps", "20", "--eval-every", "20"]
    proc = subprocess.Popen([sys.executable, str(REPO / "bench.py"), *args], cwd=REPO, env=cli_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(record_files(tmp_path / "results")) < 1:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(record_files(tmp_path / "results"))
    assert 1 <= done_before < 3
    resumed = run_bench(*args)
    assert resumed.returncode == 0, resumed.stderr
    files = record_files(tmp_path / "results")
    assert len(files) == 3
    recs = [json.loads(p.read_text()) for p in files]  # every file parses: none half-written
    assert sorted(r["seed"] for r in recs) == [0, 1, 2] and all(r["status"] == "ok" for r in recs)
    assert len({r["cell_id"] for r in recs}) == 3
    assert not list(records.runs_dir(tmp_path / "results").rglob("*.tmp"))


def odd_demo(demo_root: Path, tmp_path: Path, n_test: int = 37) -> Path:
    """A copy of the demo with an odd-sized test split (shards unevenly over 2 ranks)."""
    root = tmp_path / "odd"
    shutil.copytree(demo_root / "demo", root)
    lines = (root / "anno" / "test.txt").read_text().splitlines()
    (root / "anno" / "test.txt").write_text("\n".join(lines[::6][:n_test]) + "\n")
    return root


@pytest.mark.slow
def test_two_gloo_ranks_evaluate_exactly_the_test_split_and_write_one_record(demo_root, tmp_path):
    root = odd_demo(demo_root, tmp_path)
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
           str(REPO / "bench.py"), "--methods", "vit", "--datasets", "demo", "--data-path", f"demo={root}",
           "--seeds", "0", "--steps", "3", "--eval-every", "3", "--eval-batch-size", "8", "--results-dir", str(results),
           "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    proc = subprocess.run(cmd, cwd=REPO, env=cli_env(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    files = record_files(results)
    assert len(files) == 1
    rec = json.loads(files[0].read_text())
    assert rec["status"] == "ok" and rec["world_size"] == 2
    assert rec["distributed"]["num_processes"] == 2 and "MULTI_CPU" in rec["distributed"]["distributed_type"]
    assert rec["accuracy"]["n_evaluated"] == rec["accuracy"]["n_test"] == 37
    assert rec["global_batch"] == 2 * rec["per_device_batch"]


def test_run_summary_compares_with_vit_when_the_matrix_ran_it(fast_run_args, capsys):
    assert main(fast_run_args + ["--methods", "vit,sovit", "--seeds", "0"]) == 0
    rows = {line.split("|")[1].strip(): line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")}
    assert "vs vit" in rows["sovit"] and "vs vit" not in rows["vit"]
    assert main(fast_run_args + ["--methods", "sovit", "--seeds", "0"]) == 0  # no vit in this matrix: no baseline
    rows = {line.split("|")[1].strip(): line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")}
    assert "vs vit" not in rows["sovit"]


def test_threads_flag_sets_and_records_the_intra_op_threads(fast_run_args, tmp_path):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert main(fast_run_args + ["--methods", "vit", "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    [path] = record_files(tmp_path / "results")
    assert json.loads(path.read_text())["env"]["torch_threads"] == 1
