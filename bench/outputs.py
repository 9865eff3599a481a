"""Output locations checked before any work: a run must not train for hours and then lose its record.

Each folder a command will write to must exist as a writable folder, or be creatable: its nearest
existing ancestor is a writable folder. Nothing is created by the check, so a refused command
leaves nothing behind. A read-only mount fails `os.access(W_OK)` even for root.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from bench.errors import UsageError


def output_problem(path: Path) -> str | None:
    """Why `path` cannot be used as an output folder, or None when it can."""
    path = Path(path)
    existing = path
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if existing == path:
        if not path.is_dir():
            return "is a file, not a folder" if path.exists() else "is a broken link, not a folder"
        if not os.access(path, os.W_OK | os.X_OK):
            return "is not writable"
        return None
    if not existing.is_dir():
        return f"cannot be created: {existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"cannot be created: {existing} is not writable"
    return None


def check_output_dirs(folders: Iterable[tuple[str, Path | None]]) -> None:
    """Raise one UsageError (exit 2) for the first `(what, folder)` that cannot be written; None folders are skipped."""
    for what, folder in folders:
        if folder is None:
            continue
        problem = output_problem(folder)
        if problem:
            raise UsageError(f"{what} {folder} {problem}; expected a writable folder (or a place where one can be "
                             f"created)")
