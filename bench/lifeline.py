"""Workers die with their driver: a `--parallel cells` worker never outlives the process that started it.

Two mechanisms, because a cell may span several processes under `accelerate launch`: the direct
child gets a parent-death signal (Linux `prctl(PR_SET_PDEATHSIG, SIGKILL)`), and every process of
the worker watches the driver's pid (and start time, against reuse) once a second and kills its
own process group, which `start_new_session` made the worker's alone, when the driver is gone.
A re-run after the driver was killed therefore finds no orphan still training, and takes over
the dead driver's claims.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Callable

from bench.claims import pid_alive, process_start

ENV_VAR = "FGBENCH_DRIVER"
PR_SET_PDEATHSIG = 1
POLL_S = 1.0


def driver_env() -> dict[str, str]:
    """What a worker needs to watch this process."""
    return {ENV_VAR: f"{os.getpid()}:{process_start(os.getpid()) or ''}"}


def parent_death_hook() -> Callable[[], None] | None:
    """A `preexec_fn` that makes the child receive SIGKILL when the driver dies (Linux; None elsewhere)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the child between fork and exec only calls
    parent = os.getpid()

    def hook() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the driver died before the signal was armed
            os._exit(1)

    return hook


def _driver_gone(pid: int, started: str) -> bool:
    return not pid_alive(pid) or bool(started and process_start(pid) not in (None, started))


def watch_driver() -> threading.Thread | None:
    """In a worker: a daemon thread that kills this worker's process group once its driver is gone."""
    raw = os.environ.get(ENV_VAR, "")
    pid, _, started = raw.partition(":")
    if not pid.isdigit():
        return None
    driver = int(pid)
    try:
        if os.getsid(0) == os.getsid(driver):
            return None  # not a session of its own: killing the group would reach the driver's
    except OSError:
        pass  # the driver is already gone: the watcher ends this worker at its first look
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(POLL_S):
            if _driver_gone(driver, started):
                os.killpg(os.getpgrp(), signal.SIGKILL)

    thread = threading.Thread(target=watch, name="fgbench-driver-watch", daemon=True)
    thread.start()
    return thread
