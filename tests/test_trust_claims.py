"""One trainer per cell: claim files, stale takeover, concurrent commands, workers that die with their driver."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench import claims, records
from bench.claims import Holder, acquire, claim_path, release
from tests.conftest import REPO, cli_env


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_claim_is_exclusive_and_a_dead_holders_claim_is_taken_over(tmp_path):
    me = Holder.this_process()
    other = Holder(socket.gethostname(), os.getppid(), claims.process_start(os.getppid()), "earlier")
    assert acquire(tmp_path, "cell", other) is None
    assert acquire(tmp_path, "cell", me) == other  # a live process holds it
    assert acquire(tmp_path, "cell", other) is None  # the holder itself may claim again
    release(tmp_path, "cell", me)  # not mine: left alone
    assert claim_path(tmp_path, "cell").is_file()

    dead = Holder(socket.gethostname(), _dead_pid(), None, "earlier")
    claim_path(tmp_path, "stale").write_text(dead.to_env())
    assert acquire(tmp_path, "stale", me) is None
    assert Holder.from_mapping(json.loads(claim_path(tmp_path, "stale").read_text())).same_process(me)
    release(tmp_path, "stale", me)
    assert not claim_path(tmp_path, "stale").exists()

    elsewhere = Holder("another-host.example", _dead_pid(), None, "earlier")
    claim_path(tmp_path, "remote").write_text(elsewhere.to_env())
    assert acquire(tmp_path, "remote", me) == elsewhere  # cannot be checked from here: respected


def _bench(args: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "bench.py"), *args], cwd=REPO, env=cli_env(OMP_NUM_THREADS="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def test_two_concurrent_identical_commands_train_each_cell_once(fast_run_args, tmp_path):
    args = [*fast_run_args, "--seeds", "0,1"]
    first, second = _bench(args), _bench(args)
    outputs = [p.communicate(timeout=600)[0] for p in (first, second)]
    assert {first.returncode, second.returncode} <= {0, 1}, outputs
    results = tmp_path / "results"
    recs = [json.loads(p.read_text()) for p in sorted(records.runs_dir(results).rglob("*.json"))]
    assert len(recs) == 2 and all(r["status"] == "ok" and r["attempt"] == 1 for r in recs), outputs
    trained = sum(len(re.findall(r"fgbench: cell \d+/\d+: ", text)) for text in outputs)  # start lines
    skipped = sum(text.count("; skipped here") + text.count("already have a finished record") for text in outputs)
    assert trained == 2 and skipped >= 1, outputs
    assert not list((results / "claims").glob("*.json"))


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_killed_parallel_driver_leaves_no_worker_training(fast_run_args, tmp_path):
    driver = _bench([*fast_run_args, "--parallel", "cells", "--steps", "2000", "--eval-every", "2000"])
    workers: list[int] = []
    try:
        deadline = time.time() + 120
        while not workers and time.time() < deadline and driver.poll() is None:
            time.sleep(0.5)
            workers = _children(driver.pid)
        assert workers, "the driver started no worker"
        time.sleep(3)  # the worker is importing or training
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        deadline = time.time() + 15
        while any(_alive(w) for w in workers) and time.time() < deadline:
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers)
    finally:
        driver.kill()
        for worker in filter(_alive, workers):
            os.kill(worker, signal.SIGKILL)
