"""In-cell checkpoints: accelerate's `save_state` (model, optimizer, RNG states) plus the runner's
own progress (step, data position, lr schedule, evaluation curve), under
`<results>/checkpoints/<cell_id>/`. A cell that finishes removes its checkpoint.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from bench.atomic import atomic_write_text, share_tree

PROGRESS = "fgbench_progress.json"


def checkpoint_dir(results_dir: Path, cell_id: str) -> Path:
    return Path(results_dir) / "checkpoints" / cell_id


def save(accelerator, directory: Path, progress: dict[str, Any]) -> Path:
    """Save the state collectively (all ranks call this); the progress file is written last, atomically,
    so a checkpoint without it is incomplete and ignored."""
    directory = Path(directory)
    if accelerator.is_main_process:
        (directory / PROGRESS).unlink(missing_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(directory))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        share_tree(directory)  # safetensors writes 0600; a checkpoint on a shared dir follows the umask
        atomic_write_text(directory / PROGRESS, json.dumps(progress, sort_keys=True))
    accelerator.wait_for_everyone()
    return directory


def load_progress(directory: Path, cell_id: str) -> dict[str, Any] | None:
    """The saved progress of `cell_id`, or None when there is no complete checkpoint for it."""
    try:
        progress = json.loads((Path(directory) / PROGRESS).read_text())
    except (OSError, ValueError):
        return None
    return progress if progress.get("cell_id") == cell_id else None


def restore(accelerator, directory: Path) -> None:
    accelerator.load_state(str(directory))


def remove(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
