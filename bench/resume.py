"""Resume keyed on the data: which existing records still describe what this run would compute.

A cell's id covers its configuration but not the bytes it reads, so a finished record counts as
done only when the split lists it was trained and tested on (`data.split_hashes`) and the
pretrained weights (`pretrained.sha256`) are the ones this run would read. A finished record made
from other data is *stale*: it is always re-run (and overwritten), with one line saying why. The
`--rerun` modes are

- none (default): run missing, interrupted and stale cells; keep every other finished record;
- failed: also re-run finished cells whose status is not ok;
- stale: re-run only the stale cells (refresh old results against new data, start nothing new);
- all: re-run everything.

A record file that exists but cannot be read (truncated, empty, another schema) is reported with
its path, never skipped in silence.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from bench import records
from bench.matrix import Cell


@dataclass
class ResumePlan:
    todo: list[Cell] = field(default_factory=list)
    done: dict[str, dict] = field(default_factory=dict)  # cell_id -> the finished record kept
    stale: dict[str, str] = field(default_factory=dict)  # cell_id -> why its finished record is out of date
    unreadable: dict[str, str] = field(default_factory=dict)  # record path -> what is wrong with it

    def notes(self, cells: list[Cell], dry_run: bool = False) -> list[str]:
        """One line per stale cell and per unreadable record, for the user."""
        by_id = {c.cell_id: c for c in cells}
        overwrite, redo = ("a run would overwrite it", "a run would redo it") if dry_run else \
            ("its cell runs again and overwrites it", "re-running it")
        lines = [f"fgbench: warning: {path} is not a readable record ({why}); {overwrite}"
                 for path, why in self.unreadable.items()]
        for cell_id, why in self.stale.items():
            lines.append(f"fgbench: {by_id[cell_id].describe()} [{cell_id}]: the finished record was made from "
                         f"{why}; {redo}")
        return lines


def data_fingerprints(datasets: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """dataset name -> split name -> content hash, from opened datasets (`DatasetSplits`), as records store them."""
    return {name: data.hashes() for name, data in datasets.items() if data is not None}


def open_fingerprints(cells: list[Cell], data_root: Path,
                      data_options: Mapping[str, dict]) -> dict[str, dict[str, str]]:
    """The split hashes of each dataset of the matrix that can be opened now (list files only, no images)."""
    from bench.data import get_card, open_dataset
    from bench.errors import UsageError

    out: dict[str, dict[str, str]] = {}
    for name in dict.fromkeys(c.dataset for c in cells):
        card = get_card(name)
        try:
            out[name] = open_dataset(card, data_root, data_options.get(card.name)).hashes()
        except UsageError:
            continue  # not on disk (yet), or the demo not generated: nothing to compare against
    return out


def _short(hashes: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(hashes.items()))


def stale_reason(record: Mapping[str, Any], cell: Cell, hashes: Mapping[str, str] | None) -> str | None:
    """Why a finished record does not describe this cell's data or weights, or None when it does.

    A failed record that never opened its data has no split hashes; it is judged on its weights only.
    """
    recorded = (record.get("data") or {}).get("split_hashes") if isinstance(record.get("data"), dict) else None
    if hashes is not None and isinstance(recorded, dict) and recorded and dict(recorded) != dict(hashes):
        changed = sorted(k for k in set(recorded) | set(hashes) if recorded.get(k) != hashes.get(k))
        return (f"other {cell.dataset} split lists ({', '.join(changed)}: recorded "
                f"{_short({k: recorded.get(k) for k in changed})}, now {_short({k: hashes.get(k) for k in changed})})")
    pretrained = record.get("pretrained")
    recorded_sha = pretrained.get("sha256") if isinstance(pretrained, dict) else None
    wanted = cell.backbone.pretrained.sha256 if cell.backbone.pretrained is not None else None
    if (recorded_sha or wanted) and recorded_sha != wanted:
        return f"other pretrained weights (sha256 {str(recorded_sha)[:12]}, now {str(wanted)[:12]})"
    return None


def unreadable_reason(path: Path) -> str | None:
    """What is wrong with an existing record file that `records.read_record` refuses, or None if it is fine/absent."""
    try:
        text = Path(path).read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    if not text.strip():
        return "empty file"
    try:
        record = json.loads(text)
    except ValueError as exc:
        return f"not valid JSON: {exc.msg} at line {exc.lineno}"
    if not isinstance(record, dict):
        return "not a JSON object"
    if record.get("schema_version") != records.SCHEMA_VERSION:
        return f"schema_version {record.get('schema_version')!r}, expected {records.SCHEMA_VERSION}"
    if record.get("status") not in records.STATUSES:
        return f"status {record.get('status')!r}, expected one of {', '.join(records.STATUSES)}"
    return None


def plan_resume(cells: list[Cell], results_dir: Path, rerun: str,
                fingerprints: Mapping[str, Mapping[str, str]] | None = None) -> ResumePlan:
    """Split the matrix into cells to run and finished records to keep (see the module docstring)."""
    plan = ResumePlan()
    fingerprints = fingerprints or {}
    for cell in cells:
        path = cell.record_path(results_dir)
        record = records.read_record(path)
        if record is None:
            why = unreadable_reason(path)
            if why is not None:
                plan.unreadable[str(path)] = why
        finished = record is not None and record.get("cell_id") == cell.cell_id and record["status"] in records.FINISHED
        stale = stale_reason(record, cell, fingerprints.get(cell.dataset)) if finished else None
        if stale is not None:
            plan.stale[cell.cell_id] = stale
        if rerun == "all":
            run = True
        elif rerun == "stale":
            run = stale is not None
        elif not finished or stale is not None:
            run = True
        else:
            run = rerun == "failed" and record["status"] != "ok"
        if run:
            plan.todo.append(cell)
        elif finished:
            plan.done[cell.cell_id] = record
    return plan


def unreadable_records(results_dir: Path) -> dict[str, str]:
    """Every `*.json` under `<results>/runs` that is not a readable record, with the reason (for report)."""
    root = records.runs_dir(results_dir)
    out: dict[str, str] = {}
    if root.is_dir():
        for path in sorted(root.rglob("*.json")):
            if path.name.startswith("."):
                continue
            why = unreadable_reason(path)
            if why is not None:
                out[str(path)] = why
    return out
