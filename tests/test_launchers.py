"""`--launcher`: the matrix as a submitit job array of `--shard` workers; pre-emption resumes the cell."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from bench import launchers
from bench.cli import main


def records_in(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((results / "runs").rglob("*.json"))]


def test_task_argv_drops_the_submission_flags_in_both_spellings():
    argv = ["--methods", "vit", "--launcher", "slurm", "--jobs=3", "--slurm-setup", "module load cuda",
            "--slurm-time", "60", "--dry-run", "--seeds", "0,1", "--slurm-partition=gpu"]
    assert launchers.task_argv(argv) == ["--methods", "vit", "--seeds", "0,1"]
    assert launchers.drop_rerun(["--rerun", "all", "--seeds", "0", "--rerun=failed"]) == ["--seeds", "0"]


@pytest.mark.parametrize("flags, message", [
    (["--shard", "0/2"], "drop --shard"),
    (["--jobs", "0"], "--jobs must be >= 1"),
    (["--slurm-time", "0"], "--slurm-time must be >= 1"),
])
def test_bad_launcher_flags_are_usage_errors(fast_run_args, capsys, flags, message):
    assert main([*fast_run_args, "--launcher", "local", *flags]) == 2
    assert message in capsys.readouterr().err


def test_missing_submitit_names_the_extra(fast_run_args, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # `import submitit` raises ImportError
    assert main([*fast_run_args, "--launcher", "local"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["bench.py: error: --launcher needs submitit: pip install 'fgbench[slurm]'"]


def test_slurm_submits_one_array_of_shards_and_returns(fast_run_args, tmp_path, monkeypatch, capsys):
    from submitit.core.utils import DelayedSubmission

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\nfor last; do :; done\ncp "$last" {tmp_path}/sbatch.sh\n'
                                    'echo "Submitted batch job 4242"\n')
    for tool in ("srun", "sbatch"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    results = tmp_path / "results"
    assert main([*fast_run_args, "--methods", "vit", "--seeds", "0-2", "--launcher", "slurm", "--jobs", "2",
                 "--slurm-partition", "gpu", "--slurm-gpus-per-node", "1", "--slurm-time", "30",
                 "--slurm-array-parallelism", "1", "--slurm-setup", "source .venv/bin/activate"]) == 0
    assert "4242_0, 4242_1" in capsys.readouterr().out
    script = (tmp_path / "sbatch.sh").read_text()
    for line in ("#SBATCH --array=0-1%1", "#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --time=30", "#SBATCH --signal=USR2@90", "source .venv/bin/activate"):
        assert line in script
    submitted = json.loads((results / "jobs" / "4242.json").read_text())
    assert submitted["job_ids"] == ["4242_0", "4242_1"] and submitted["shards"] == ["0/2", "1/2"]
    assert "--launcher" not in submitted["argv"] and "--seeds" in submitted["argv"]
    job = DelayedSubmission.load(results / "jobs" / "submitit" / "4242_1_submitted.pkl").function
    assert isinstance(job, launchers.ShardJob) and (job.index, job.count) == (1, 2)
    assert job.command()[-4:] == ["--shard", "1/2", "--progress", "plain"]
    assert not (results / "runs").exists()  # nothing ran here


def _preempt_first_job(results: Path, seen: dict, timeout_s: float = 240.0) -> None:
    """Send submitit's pre-emption signal (USR2) to the first job's task once its first cell evaluated."""
    import psutil

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ids = list((results / "jobs").glob("*.json"))
        if ids:
            job_id = json.loads(ids[0].read_text())["job_ids"][0]
            log = results / "jobs" / "submitit" / f"{job_id}_0_log.out"
            if log.is_file() and "eval top-1" in log.read_text():
                (task,) = psutil.Process(int(job_id)).children()  # the local controller's task process
                task.send_signal(signal.SIGUSR2)
                seen["job_id"] = job_id
                return
        time.sleep(0.2)


@pytest.mark.slow
def test_local_jobs_run_the_matrix_resume_a_preempted_cell_and_report(fast_run_args, tmp_path):
    results = tmp_path / "results"
    args = [a for a in fast_run_args if a not in ("--steps", "4", "--eval-every", "2")]
    seen: dict = {}
    watcher = threading.Thread(target=_preempt_first_job, args=(results, seen), daemon=True)
    watcher.start()
    status = main([*args, "--methods", "vit", "--seeds", "0-3", "--steps", "40", "--eval-every", "10",
                   "--launcher", "local", "--jobs", "2"])
    watcher.join(timeout=1)
    assert status == 0 and "job_id" in seen
    log = (results / "jobs" / "submitit" / f"{seen['job_id']}_0_log.out").read_text()
    assert "checkpoint requested" in log
    recs = records_in(results)
    assert len(recs) == 4 and all(r["status"] == "ok" for r in recs)
    (resumed,) = [r for r in recs if r.get("resumed_from_step")]
    assert resumed["attempt"] == 2 and 10 <= resumed["resumed_from_step"] < 40
    assert not (results / "checkpoints" / resumed["cell_id"]).exists()
    assert main(["report", "--results-dir", str(results)]) == 0
    board = (results / "leaderboard.csv").read_text()
    assert "vit" in board and (results / "index.html").is_file()
