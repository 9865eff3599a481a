"""Run records: one JSON file per cell, written atomically, the ground truth of every table.

A record is written to a temporary file in the same folder, flushed to disk, then moved over the
final name with `os.replace`, so a reader (or a resumed run after SIGKILL) sees either the whole
record or none. Report code reads only `*.json` and ignores temporaries.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterator

from bench.atomic import atomic_write_text

SCHEMA_VERSION = 1
STATUSES = ("ok", "failed", "oom", "diverged", "interrupted")
FINISHED = ("ok", "failed", "oom", "diverged")  # "interrupted" resumes from its checkpoint
RUNS_DIR = "runs"


def runs_dir(results_dir: Path) -> Path:
    return Path(results_dir) / RUNS_DIR


def safe_name(part: str) -> str:
    """A name usable as one path component on any file system (other characters become `+`)."""
    return "".join(c if c.isalnum() or c in "-_." else "+" for c in part)


def record_path(results_dir: Path, dataset: str, method_label: str, seed: int, cell_id: str) -> Path:
    """`<results>/runs/<dataset>/<method[+variant]>/seed<k>-<cell_id>.json`."""
    return runs_dir(results_dir) / safe_name(dataset) / safe_name(method_label) / f"seed{seed}-{cell_id}.json"


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf become null (strict JSON), tuples lists, paths strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_record(path: Path, record: dict[str, Any]) -> Path:
    """Atomically write `record` as strict JSON at `path`."""
    return atomic_write_text(path, json.dumps(_clean(record), indent=2, sort_keys=True, allow_nan=False) + "\n")


def read_record(path: Path) -> dict[str, Any] | None:
    """The record at `path`, or None when it is absent, unreadable or of another schema."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("schema_version") != SCHEMA_VERSION:
        return None
    if record.get("status") not in STATUSES:
        return None
    return record


def iter_records(results_dir: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every valid record under `<results>/runs`, in a stable (sorted path) order."""
    root = runs_dir(results_dir)
    if not root.is_dir():
        return
    for path in sorted(root.rglob("*.json")):
        if path.name.startswith("."):
            continue
        record = read_record(path)
        if record is not None:
            yield path, record


def remove_stale_temporaries(results_dir: Path, older_than_s: float = 600.0) -> int:
    """Delete temporaries left by killed writers (never a finished record, never a live write)."""
    import time

    root = runs_dir(results_dir)
    removed = 0
    if root.is_dir():
        for tmp in root.rglob(".*.tmp"):
            try:
                if time.time() - tmp.stat().st_mtime < older_than_s:
                    continue  # a writer in another process may be about to rename it
                tmp.unlink()
                removed += 1
            except OSError:
                pass
    return removed
