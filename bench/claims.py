"""One trainer per cell: an exclusively created claim file per cell in the results folder.

Before a cell trains, its driver creates `<results>/claims/<cell_id>.json` with `O_CREAT|O_EXCL`
(atomic on local and NFSv3+ file systems) holding its host, pid and process start time. A second
command on the same results folder finds the claim and skips the cell with one line. A claim
whose process is gone (same host, pid dead or reused by another process) is stale and taken over,
so a killed run's re-run is not blocked; a claim from another host cannot be checked and is
respected. Checking and taking over happen under an `fcntl` lock on `claims/.lock`, so two
processes of one host never both take over the same stale claim.

A `--parallel cells` driver claims a cell and hands the claim to its worker through
`FGBENCH_CLAIM` (the worker then trains under it instead of skipping its own driver's cell), and
releases it when the worker ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Mapping

CLAIMS_DIR = "claims"
ENV_VAR = "FGBENCH_CLAIM"
YOUNG_S = 30.0  # an unreadable claim younger than this may be a write in progress elsewhere


def process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), which tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 of proc(5), counted after the command name


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    started: str | None  # `process_start(pid)` when the claim was made
    since: str  # UTC time of the claim, for messages

    @classmethod
    def this_process(cls) -> "Holder":
        return cls(socket.gethostname(), os.getpid(), process_start(os.getpid()),
                   datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def same_process(self, other: "Holder") -> bool:
        return (self.host, self.pid, self.started) == (other.host, other.pid, other.started)

    def gone(self) -> bool:
        """True when this host can tell the holder no longer runs (a claim from elsewhere is never gone)."""
        if self.host != socket.gethostname():
            return False
        if not pid_alive(self.pid):
            return True
        return self.started is not None and process_start(self.pid) not in (None, self.started)

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} since {self.since}"

    def to_env(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_mapping(cls, raw: Mapping) -> "Holder":
        return cls(str(raw["host"]), int(raw["pid"]), raw.get("started"), str(raw.get("since", "")))


def inherited() -> Holder | None:
    """The claim a `--parallel cells` driver made for this worker, if any."""
    raw = os.environ.get(ENV_VAR)
    if not raw:
        return None
    try:
        return Holder.from_mapping(json.loads(raw))
    except (ValueError, KeyError, TypeError):
        return None


def claim_path(results_dir: Path, cell_id: str) -> Path:
    return Path(results_dir) / CLAIMS_DIR / f"{cell_id}.json"


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise claim checks of this host (best effort where fcntl is unavailable)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: O_EXCL alone
        yield
        return
    with open(directory / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read(path: Path) -> Holder | None:
    try:
        return Holder.from_mapping(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def acquire(results_dir: Path, cell_id: str, owner: Holder) -> Holder | None:
    """Claim `cell_id` for `owner`; None when it is now ours, else the live holder that has it."""
    path = claim_path(results_dir, cell_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.parent):
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                holder = _read(path)
                if holder is not None and holder.same_process(owner):
                    return None
                if holder is None:
                    try:
                        young = time.time() - path.stat().st_mtime < YOUNG_S
                    except FileNotFoundError:
                        continue
                    if young:
                        return Holder("?", 0, None, "a moment ago")
                elif not holder.gone():
                    return holder
                path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(owner.to_env() + "\n")
            return None
    return _read(path) or Holder("?", 0, None, "a moment ago")


def live_holder(results_dir: Path, cell_id: str) -> Holder | None:
    """The process (other than this one) that holds the cell's claim and may still be training it."""
    holder = _read(claim_path(results_dir, cell_id))
    if holder is None or holder.gone() or holder.same_process(Holder.this_process()):
        return None
    return holder


def release(results_dir: Path, cell_id: str, owner: Holder) -> None:
    """Remove the claim if it is still `owner`'s."""
    path = claim_path(results_dir, cell_id)
    if not path.parent.is_dir():
        return
    with _locked(path.parent):
        holder = _read(path)
        if holder is not None and holder.same_process(owner):
            path.unlink(missing_ok=True)


class CellClaims:
    """Claims for one driver: take a cell (or learn why not), release it when its trainer is done.

    After taking a claim the cell's record is read again: another run may have finished it while
    this one was busy with earlier cells, and then it is skipped too.
    """

    def __init__(self, results_dir: Path, rerun: str, fingerprints: Mapping[str, Mapping[str, str]] | None = None):
        self.results_dir = Path(results_dir)
        self.rerun = rerun
        self.fingerprints = fingerprints
        self.handed = inherited()  # a worker trains under its driver's claim
        self.owner = self.handed or Holder.this_process()
        self.started_ns = time.time_ns()

    def take(self, cell) -> str | None:
        """None when this process may train `cell`, else the one line saying why it is skipped."""
        from bench import records
        from bench.resume import plan_resume

        if self.handed is not None:  # the driver took the claim and checked the record
            return None
        self.owner = Holder.this_process()  # same process, the time of this claim
        try:
            holder = acquire(self.results_dir, cell.cell_id, self.owner)
        except OSError as exc:  # e.g. a full disk
            return (f"fgbench: {cell.describe()} [{cell.cell_id}]: cannot write its claim file "
                    f"{claim_path(self.results_dir, cell.cell_id)} ({exc.strerror or exc}); skipped")
        if holder is not None:
            return f"fgbench: {cell.describe()} [{cell.cell_id}] is being trained by {holder.describe()}; skipped here"
        path = cell.record_path(self.results_dir)
        record = records.read_record(path)
        finished_since = (record is not None and record.get("cell_id") == cell.cell_id
                          and record["status"] in records.FINISHED and path.stat().st_mtime_ns >= self.started_ns)
        if finished_since or (self.rerun != "all"
                              and not plan_resume([cell], self.results_dir, self.rerun, self.fingerprints).todo):
            self.release(cell)
            return f"fgbench: {cell.describe()} [{cell.cell_id}] was finished by another run meanwhile; skipped here"
        return None

    def release(self, cell) -> None:
        if self.handed is None:  # the driver that handed its claim over releases it
            release(self.results_dir, cell.cell_id, self.owner)

    def worker_env(self) -> dict[str, str]:
        return {ENV_VAR: self.owner.to_env()}
