"""`--parallel cells`: run independent cells at once, one worker process (group) per cell.

The driver queues cells, gives each worker its own devices (`CUDA_VISIBLE_DEVICES`, or CPU
slots) and a free rendezvous port, starts it as `bench.py run ... --cell-ids ID` (under
`accelerate launch` when the cell spans several processes), and collects the record it writes.
A worker that dies without writing its record (crash, OOM kill, SIGKILL) gets a `failed` record
naming its exit status and log; the other workers go on. SIGTERM/SIGINT to the driver is passed
on to the workers, which checkpoint and record themselves as interrupted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import records
from bench.claims import CellClaims
from bench.lifeline import driver_env, parent_death_hook
from bench.matrix import Cell
from bench.ports import free_port
from bench.progress import CellProgress
from bench.signals import StopRequest

REPO_ENTRY = Path(__file__).resolve().parents[1] / "bench.py"


@dataclass
class Worker:
    cell: Cell
    devices: list[str]
    process: subprocess.Popen
    log: Path
    started_ns: int


def device_slots(gpus: int, cpu_slots: int) -> list[str]:
    """What workers are scheduled on: the visible GPUs, or CPU slots (one process each) without GPUs."""
    if gpus:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = [d for d in visible.split(",") if d.strip()] if visible else [str(i) for i in range(gpus)]
        return ids[:gpus]
    return [f"cpu{i}" for i in range(max(1, cpu_slots))]


def worker_command(cell: Cell, base_argv: list[str], port: int) -> list[str]:
    """`bench.py run <the user's flags> --cell-ids ID ...`, under accelerate launch for several processes."""
    argv = ["run", *base_argv, "--cell-ids", cell.cell_id, "--parallel", "data", "--shard", "0/1",
            "--world-sizes", str(cell.world_size), "--progress", "plain"]  # a log file: lines, not bars
    if cell.strategy != "deepspeed":  # "deepspeed" comes from the user's --deepspeed-config, kept in base_argv
        argv += ["--strategy", cell.strategy]
    if cell.world_size == 1:
        return [sys.executable, str(REPO_ENTRY), *argv]
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
            str(cell.world_size), "--num_machines", "1", "--mixed_precision", cell.precision,
            "--dynamo_backend", "no", "--main_process_port", str(port), str(REPO_ENTRY), *argv]


def worker_env(devices: list[str], port: int, cpu_threads: int) -> dict[str, str]:
    """The worker's devices, rendezvous port and (on CPU) its share of the cores."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["MASTER_PORT"] = str(port)
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR"):
        env.pop(key, None)
    if devices[0].startswith("cpu"):
        env["CUDA_VISIBLE_DEVICES"] = ""
        env.setdefault("OMP_NUM_THREADS", str(cpu_threads))
    else:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
    return env


def crash_record(cell: Cell, results_dir: Path, returncode: int, log: Path) -> dict:
    """The record of a cell whose worker died before writing one."""
    from bench.envinfo import git_state, library_versions

    previous = records.read_record(cell.record_path(results_dir))
    how = f"killed by signal {-returncode}" if returncode < 0 else f"exited with status {returncode}"
    return {
        "schema_version": records.SCHEMA_VERSION, "cell_id": cell.cell_id, "setting_id": cell.setting_id,
        "run_id": None, "attempt": (previous or {}).get("attempt", 0) + 1, "status": "failed",
        "error": f"worker {how} before writing its record; log: {log}",
        "method": cell.method, "variant": cell.variant, "method_label": cell.method_label, "dataset": cell.dataset,
        "seed": cell.seed, "preset": cell.preset, "precision": cell.precision, "strategy": cell.strategy,
        "world_size": cell.world_size, "img_size": cell.recipe.img_size, "steps": cell.recipe.steps,
        "requested_per_device_batch": cell.recipe.batch_size, "per_device_batch": cell.recipe.batch_size,
        "grad_accum": cell.recipe.grad_accum,
        "global_batch": cell.recipe.batch_size * cell.world_size * cell.recipe.grad_accum, "lr": cell.recipe.lr,
        "options": cell.options, "recipe": cell.recipe.to_dict(), "env": {**git_state(), "versions": library_versions()},
    }


class CellPool:
    def __init__(self, cells: list[Cell], base_argv: list[str], results_dir: Path, slots: list[str],
                 progress: bool = True, stop: StopRequest | None = None, max_running: int | None = None,
                 progress_style: str = "bar", cpu_threads: int | None = None, claims: CellClaims | None = None):
        too_big = [c for c in cells if c.world_size > len(slots)]
        if too_big:
            from bench.errors import UsageError

            raise UsageError(f"a cell needs {too_big[0].world_size} devices but only {len(slots)} are available "
                             f"({', '.join(slots)}); lower --world-sizes/--gpus-per-cell")
        self.queue = list(cells)
        self.base_argv = base_argv
        self.results_dir = Path(results_dir)
        self.free = list(slots)
        self.bar = CellProgress(progress_style if progress else "none", len(self.queue))
        self.stop = stop or StopRequest()
        self.running: list[Worker] = []
        self.max_running = max_running or len(slots)
        self.logs = self.results_dir / "logs"
        # CPU threads per worker: `--threads`, else the cores shared out, one process per slot
        self.cpu_threads = cpu_threads or max(1, (os.cpu_count() or 1) // len(slots))
        self.claims = claims  # one trainer per cell across commands sharing the results folder

    def _start(self, cell: Cell) -> None:
        devices, self.free = self.free[: cell.world_size], self.free[cell.world_size :]
        port = free_port()
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{cell.cell_id}.log"
        handle = open(log, "ab")
        env = {**worker_env(devices, port, self.cpu_threads), **driver_env(),
               **(self.claims.worker_env() if self.claims else {})}
        process = subprocess.Popen(worker_command(cell, self.base_argv, port), env=env, stdout=handle,
                                   stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=parent_death_hook())
        handle.close()
        self.running.append(Worker(cell, devices, process, log, time.time_ns()))
        self.bar.start(cell)

    def _finish(self, worker: Worker) -> dict:
        self.running.remove(worker)
        self.free.extend(worker.devices)
        path = worker.cell.record_path(self.results_dir)
        record = records.read_record(path)
        fresh = record is not None and path.stat().st_mtime_ns >= worker.started_ns
        if not fresh:
            record = crash_record(worker.cell, self.results_dir, worker.process.returncode, worker.log)
            try:
                records.write_record(path, record)
            except OSError as exc:  # e.g. a full disk: say so, keep going (the write left no partial file)
                print(f"fgbench: cannot write the record {path} ({exc.strerror or exc})", file=sys.stderr)
        if self.claims:
            self.claims.release(worker.cell)
        self.bar.finish(worker.cell, record, where=f" (log: {worker.log})" if record["status"] != "ok" else "")
        return record

    def _signal_workers(self, signum: int) -> None:
        for worker in self.running:
            try:
                os.killpg(worker.process.pid, signum)
            except ProcessLookupError:
                pass

    def run(self) -> dict[str, str]:
        """Run every queued cell; returns cell_id -> status of its record."""
        statuses: dict[str, str] = {}
        forwarded = False
        try:
            while self.queue or self.running:
                if self.stop.requested and not forwarded:
                    self._signal_workers(self.stop.signum)
                    self.queue.clear()
                    forwarded = True
                while self.queue and not self.stop.requested and len(self.running) < self.max_running:
                    fitting = next((c for c in self.queue if c.world_size <= len(self.free)), None)
                    if fitting is None:
                        break
                    self.queue.remove(fitting)
                    skip = self.claims.take(fitting) if self.claims else None
                    if skip:
                        self.bar.skipped(skip)
                        continue
                    self._start(fitting)
                for worker in [w for w in self.running if w.process.poll() is not None]:
                    statuses[worker.cell.cell_id] = self._finish(worker)["status"]
                self.bar.running(", ".join(w.cell.describe() for w in self.running))
                time.sleep(0.2)
        finally:
            if self.running:  # the driver itself is going down: take the workers with it
                self._signal_workers(signal.SIGTERM)
                for worker in list(self.running):
                    try:
                        worker.process.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        os.killpg(worker.process.pid, signal.SIGKILL)
                        worker.process.wait()
                    statuses[worker.cell.cell_id] = self._finish(worker)["status"]
            self.bar.close()
        return statuses
