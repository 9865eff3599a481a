"""`--launcher slurm|local`: the matrix as a job array of `--shard i/n` workers, through submitit.

Each array task runs `bench.py run <the user's flags> --shard i/n` as a child process and waits for
it; the records it writes are the results, so `bench.py report` on the results dir builds the tables
whichever way the shards ran. Pre-emption and time-outs reach the task as submitit's checkpoint
signal (USR2, sent `signal_delay_s` before the limit): `ShardJob.checkpoint` turns it into the SIGTERM
that fgbench's runner already answers by checkpointing the cell at the next step boundary and
recording it interrupted, waits for that, and asks submitit to requeue the task; the requeued task
runs the same shard, which skips finished cells and resumes the interrupted one from its checkpoint.

`slurm` submits with sbatch, writes the job ids to `<results>/jobs/`, and returns. `local` runs the
same jobs as local processes with submitit's local executor (its requeue restarts the task) and waits
for them, which is how the tests exercise the whole path.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.commands.common import drop_flags
from bench.errors import UsageError

LAUNCHERS = ("local", "slurm")
ENTRY = Path(__file__).resolve().parents[1] / "bench.py"
STOP_GRACE_S = 80.0  # submitit signals 90 s before Slurm's limit; leave time to requeue
# flags that concern submission, never the array tasks (flag -> takes a value)
LAUNCH_FLAGS = {"--launcher": True, "--jobs": True, "--slurm-partition": True, "--slurm-gpus-per-node": True,
                "--slurm-cpus-per-task": True, "--slurm-time": True, "--slurm-array-parallelism": True,
                "--slurm-setup": True, "--slurm-account": True, "--slurm-qos": True, "--slurm-constraint": True,
                "--shard": True, "--cell-ids": True, "--dry-run": False}


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("job arrays (submitit; pip install 'fgbench[slurm]')")
    g.add_argument("--launcher", choices=LAUNCHERS, default=None,
                   help="slurm: submit the matrix as a job array of --shard workers and return; local: the same "
                        "jobs as local processes, waited for (default: run here)")
    g.add_argument("--jobs", type=int, default=None, metavar="N", help="array tasks (shards); default one per cell")
    g.add_argument("--slurm-partition", default=None)
    g.add_argument("--slurm-account", default=None)
    g.add_argument("--slurm-qos", default=None)
    g.add_argument("--slurm-constraint", default=None)
    g.add_argument("--slurm-gpus-per-node", type=int, default=0, metavar="N", help="GPUs per task (default 0)")
    g.add_argument("--slurm-cpus-per-task", type=int, default=None, metavar="N")
    g.add_argument("--slurm-time", type=int, default=240, metavar="MINUTES",
                   help="time limit of each task; a task that reaches it checkpoints and is requeued")
    g.add_argument("--slurm-array-parallelism", type=int, default=None, metavar="N", help="tasks running at once")
    g.add_argument("--slurm-setup", action="append", default=[], metavar="LINE",
                   help="shell line run before each task, e.g. 'source .venv/bin/activate' (repeatable)")


def task_argv(raw_argv: list[str]) -> list[str]:
    """The user's flags minus the submission ones."""
    return drop_flags(raw_argv, LAUNCH_FLAGS)


def drop_rerun(argv: list[str]) -> list[str]:
    """A requeued task resumes: `--rerun all` must not redo the cells its first attempt finished."""
    return drop_flags(argv, {"--rerun": True})


class ShardJob:
    """One array task: run a shard of the matrix in a child process, checkpoint it on submitit's signal.

    Picklable and light: the task process imports only this module and submitit; torch and the
    benchmark load in the child.
    """

    def __init__(self, argv: list[str], index: int, count: int, cwd: str, threads: int | None = None):
        self.argv, self.index, self.count, self.cwd, self.threads = list(argv), index, count, cwd, threads
        self._pid: int | None = None

    def command(self) -> list[str]:
        return [sys.executable, str(ENTRY), "run", *self.argv, "--shard", f"{self.index}/{self.count}",
                "--progress", "plain"]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.threads:
            env.setdefault("OMP_NUM_THREADS", str(self.threads))
        return env

    def __call__(self) -> dict:
        # the child ignores USR2: Slurm signals every process of the step, and only this task may answer it
        child = subprocess.Popen(self.command(), cwd=self.cwd, env=self._env(),
                                 preexec_fn=lambda: signal.signal(signal.SIGUSR2, signal.SIG_IGN))
        self._pid = child.pid
        print(f"fgbench: shard {self.index}/{self.count}: pid {child.pid}: {' '.join(self.command())}", flush=True)
        try:
            _, status = os.waitpid(child.pid, 0)  # not Popen.wait: its lock is not reentrant from a signal handler
        except BaseException:  # this task is being stopped (SIGINT from the local controller, ...): stop the child too
            self._stop_child()
            raise
        self._pid = None
        code = os.waitstatus_to_exitcode(status)
        return {"shard": f"{self.index}/{self.count}", "exit_status": code}

    def _stop_child(self) -> None:
        """SIGTERM: the runner checkpoints at the next step and records the cell interrupted; wait for it."""
        pid, self._pid = self._pid, None
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_S
            while time.monotonic() < deadline:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    return
                time.sleep(0.2)
            os.kill(pid, signal.SIGKILL)  # out of time: the cell restarts from its last periodic checkpoint
            os.waitpid(pid, 0)
        except (ChildProcessError, ProcessLookupError):  # already gone
            pass

    def checkpoint(self):
        """submitit's pre-emption/time-out hook (called from its signal handler in this process)."""
        from submitit.helpers import DelayedSubmission

        if self._pid is not None:
            print(f"fgbench: shard {self.index}/{self.count}: checkpoint requested; stopping pid {self._pid}",
                  flush=True)
        self._stop_child()
        return DelayedSubmission(ShardJob(drop_rerun(self.argv), self.index, self.count, self.cwd, self.threads))

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pid": None}


def _submitit():
    try:
        import submitit
    except ImportError:
        raise UsageError("--launcher needs submitit: pip install 'fgbench[slurm]'") from None
    return submitit


def make_executor(args: argparse.Namespace, folder: Path):
    submitit = _submitit()
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=args.launcher, slurm_max_num_timeout=20)
    except RuntimeError as exc:  # no srun on this machine
        raise UsageError(f"--launcher {args.launcher}: {exc} (run on a Slurm login node, or use --launcher local)") from None
    params = dict(name="fgbench", timeout_min=args.slurm_time, nodes=1, tasks_per_node=1,
                  gpus_per_node=args.slurm_gpus_per_node)
    if args.slurm_cpus_per_task:
        params["cpus_per_task"] = args.slurm_cpus_per_task
    if args.launcher == "slurm":
        slurm = {"partition": args.slurm_partition, "account": args.slurm_account, "qos": args.slurm_qos,
                 "constraint": args.slurm_constraint, "array_parallelism": args.slurm_array_parallelism}
        params.update({f"slurm_{k}": v for k, v in slurm.items() if v is not None})
        if args.slurm_setup:
            params["slurm_setup"] = list(args.slurm_setup)
    elif args.slurm_setup:
        params["local_setup"] = list(args.slurm_setup)
    executor.update_parameters(**params)
    return executor


def check_arguments(args: argparse.Namespace) -> None:
    """Launcher flags and the submitit package, checked before the matrix is built."""
    _submitit()
    if args.shard or args.cell_ids:
        raise UsageError("--launcher makes the shards itself; drop --shard")
    for name in ("jobs", "slurm_time", "slurm_array_parallelism", "slurm_cpus_per_task"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.slurm_gpus_per_node < 0:
        raise UsageError(f"--slurm-gpus-per-node must be >= 0, got {args.slurm_gpus_per_node}")
    if args.launcher == "local" and args.slurm_partition:
        raise UsageError("--slurm-partition needs --launcher slurm")


def launch(cells, args: argparse.Namespace) -> int:
    """Submit the matrix as `--jobs` shards; `local` then waits for them and prints the table."""
    submitit = _submitit()
    count = min(args.jobs or len(cells), len(cells))
    if args.jobs and args.jobs > len(cells):
        print(f"fgbench: --jobs {args.jobs} > {len(cells)} cells; submitting {count}", file=sys.stderr)
    results = Path(args.results_dir)
    jobs_dir = results / "jobs"
    executor = make_executor(args, jobs_dir / "submitit")
    threads = None
    if args.launcher == "local":  # the jobs share this machine's cores
        at_once = min(count, args.slurm_array_parallelism or count)
        threads = max(1, (os.cpu_count() or 1) // at_once)
    argv = task_argv(args.raw_argv)
    cwd = os.getcwd()
    try:
        with executor.batch():
            pending = [executor.submit(ShardJob(argv, i, count, cwd, threads)) for i in range(count)]
    except subprocess.CalledProcessError as exc:  # sbatch refused (partition, account, limits)
        said = (exc.output or b"").decode(errors="replace") if isinstance(exc.output, bytes) else str(exc.output or "")
        raise UsageError(f"--launcher {args.launcher}: submission failed: {said.strip() or exc}") from None
    job_ids = [job.job_id for job in pending]
    submitted = {
        "launcher": args.launcher, "job_ids": job_ids, "shards": [f"{i}/{count}" for i in range(count)],
        "cells": len(cells), "argv": argv, "cwd": cwd, "logs": str(jobs_dir / "submitit"),
        "submitted_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    from bench.atomic import atomic_write_text

    record = jobs_dir / f"{job_ids[0].split('_')[0]}.json"
    atomic_write_text(record, json.dumps(submitted, indent=2) + "\n")
    print(f"fgbench: submitted {len(cells)} cells as {count} {args.launcher} job(s): {', '.join(job_ids)} "
          f"(ids in {record}; logs under {jobs_dir / 'submitit'})")
    if args.launcher == "slurm":
        print(f"fgbench: when they finish: bench.py report --results-dir {results}")
        return 0
    return wait_local(pending, submitit)


def wait_local(jobs, submitit) -> int:
    """Wait for local jobs (a requeued task restarts inside its job); 0 when every task exited 0."""
    codes = {}
    while len(codes) < len(jobs):
        for job in jobs:
            if job.job_id in codes or not job.done():
                continue
            try:
                result = job.result()
                codes[job.job_id] = result["exit_status"]
            except (submitit.core.utils.UncompletedJobError, submitit.core.utils.FailedJobError) as exc:
                codes[job.job_id] = 1
                print(f"fgbench: job {job.job_id} did not complete: {' '.join(str(exc).split())[:300]}",
                      file=sys.stderr)
            print(f"fgbench: job {job.job_id} ({job.paths.stdout}) exited {codes[job.job_id]}")
        time.sleep(0.5)
    return 0 if all(code == 0 for code in codes.values()) else 1
