"""Experiment trackers (`--log-with tensorboard,mlflow,...`) through accelerate's tracker API.

The process's Accelerator is built with `log_with` and a project dir (the results dir). Each cell is
one tracker run, named `<method>/<dataset>/seed<k>/<cell_id>`, whose config is the resolved recipe
and options: `start_run` builds accelerate's own tracker classes with that name and hands them to
`Accelerator.init_trackers`; the runner logs with `Accelerator.log` at the host syncs it already
makes (losses and lr every `LOG_EVERY` steps, every evaluation), so tracking adds no device sync;
`finish_run` logs throughput, peak memory and status and closes the run. `Accelerator.end_training`
runs when the process leaves (it also tears down the process group, so it cannot close a cell).

Offline by default: TensorBoard event files under `<results>/tb/`, MLflow into a local file store
`<results>/mlruns` unless `MLFLOW_TRACKING_URI` is set, W&B in offline mode unless `WANDB_MODE` is set,
Aim in a repo at `<results>/aim`, Trackio in its local store.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from bench.errors import UsageError, one_line

PROJECT = "fgbench"  # the MLflow experiment / W&B and Trackio project that holds the cells' runs
EXTRA = "pip install 'fgbench[trackers]'"


@dataclass(frozen=True)
class TrackerKind:
    module: str  # the import that must work
    install: str  # what to tell a user who lacks it
    build: Callable[[str, Any, dict[str, str]], Any]  # (run name, accelerator, tags) -> accelerate tracker


def _tensorboard(name: str, acc, tags: dict[str, str]):
    from accelerate.tracking import TensorBoardTracker

    return TensorBoardTracker(name, acc.logging_dir)  # <results>/tb (bench.strategy.make_accelerator)


def _mlflow(name: str, acc, tags: dict[str, str]):
    import mlflow
    from accelerate.tracking import MLflowTracker

    results = Path(acc.project_dir)
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # a local store needs no server or database
        mlflow.set_tracking_uri((results / "mlruns").resolve().as_uri())
    experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", PROJECT)
    if mlflow.get_experiment_by_name(experiment) is None:  # parallel workers: create it once, before the run
        try:
            mlflow.create_experiment(experiment)
        except mlflow.exceptions.MlflowException:
            pass  # another worker created it in the meantime
    return MLflowTracker(experiment_name=experiment, run_name=name, tags=tags)


def _wandb(name: str, acc, tags: dict[str, str]):
    from accelerate.tracking import WandBTracker

    results = Path(acc.project_dir)
    results.mkdir(parents=True, exist_ok=True)
    return WandBTracker(PROJECT, name=name, dir=str(results), mode=os.environ.get("WANDB_MODE", "offline"),
                        tags=[f"{k}={v}" for k, v in tags.items()])


def _aim(name: str, acc, tags: dict[str, str]):
    from accelerate.tracking import AimTracker

    repo = Path(acc.project_dir) / "aim"
    repo.mkdir(parents=True, exist_ok=True)
    return AimTracker(name, repo, experiment=PROJECT)


def _trackio(name: str, acc, tags: dict[str, str]):
    from accelerate.tracking import TrackioTracker

    return TrackioTracker(PROJECT, name=name)


KINDS: dict[str, TrackerKind] = {
    "tensorboard": TrackerKind("tensorboard", EXTRA, _tensorboard),
    "mlflow": TrackerKind("mlflow", EXTRA, _mlflow),
    "wandb": TrackerKind("wandb", "pip install wandb", _wandb),
    "aim": TrackerKind("aim", "pip install aim", _aim),
    "trackio": TrackerKind("trackio", "pip install trackio", _trackio),
}


def _installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(KINDS[name].module) is not None


def parse_log_with(spec: str | None) -> list[str]:
    """`--log-with` as tracker names; `all` is every installed one. A missing package is a usage error."""
    if not spec:
        return []
    names = [s.strip().lower() for s in spec.split(",") if s.strip()]
    if names == ["all"]:
        found = [n for n in KINDS if _installed(n)]
        if not found:
            raise UsageError(f"--log-with all: no tracker package is installed; {EXTRA}")
        return found
    unknown = [n for n in names if n not in KINDS]
    if unknown:
        raise UsageError(f"--log-with: unknown tracker {unknown[0]!r}; expected a comma list of "
                         f"{', '.join(KINDS)}, or all")
    for name in dict.fromkeys(names):
        if not _installed(name):
            raise UsageError(f"--log-with {name} needs the {KINDS[name].module} package: {KINDS[name].install}")
    return list(dict.fromkeys(names))


def run_name(cell) -> str:
    return f"{cell.method_label}/{cell.dataset}/seed{cell.seed}/{cell.cell_id}"


def _scalar(value: Any) -> bool | int | float | str:
    """Tracker configs hold scalars; anything else is stored as its JSON text."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def run_config(record: dict[str, Any]) -> dict[str, Any]:
    """The cell's identity, resolved recipe and options as one flat mapping (`recipe.lr`, `option.x`)."""
    keys = ("cell_id", "setting_id", "method", "variant", "method_label", "dataset", "seed", "preset", "precision",
            "strategy", "world_size", "global_batch")
    config = {k: _scalar(record.get(k)) for k in keys}
    config.update({f"recipe.{k}": _scalar(v) for k, v in sorted((record.get("recipe") or {}).items())})
    config.update({f"option.{k}": _scalar(v) for k, v in sorted((record.get("options") or {}).items())})
    return config


def start_run(acc, names: list[str], cell, record: dict[str, Any]) -> None:
    """Open this cell's run in every chosen tracker (main process only; the others log nothing). The
    Accelerator was built with these `log_with` names and the results dir as its project dir; each cell
    gets accelerate tracker objects of its own, named after it, which `init_trackers` starts."""
    if not names or not acc.is_main_process:
        return
    tags = {"cell_id": cell.cell_id, "method": cell.method_label, "dataset": cell.dataset, "seed": str(cell.seed)}
    acc.log_with = [KINDS[n].build(run_name(cell), acc, tags) for n in names]
    acc.init_trackers(PROJECT, config=run_config(record))


def train_metrics(losses: dict[str, float], lr: float) -> dict[str, float]:
    """What a host sync logs: the summed loss, each named component and the learning rate."""
    out = {"train/loss": float(sum(losses.values()))} if losses else {}
    out.update({f"train/{name}": float(value) for name, value in losses.items()})
    out["train/lr"] = float(lr)
    return out


def eval_metrics(split: str, result: dict[str, Any]) -> dict[str, float]:
    out = {f"{split}/{key}": float(result[key]) for key in ("top1", "top5", "loss") if key in result}
    for view, scores in (result.get("views") or {}).items():
        out.update({f"{split}/{view}/{key}": float(v) for key, v in scores.items()})
    return out


def final_metrics(record: dict[str, Any]) -> dict[str, float]:
    """Headline accuracy, throughput and peak memory of a finished cell, as numbers."""
    accuracy = record.get("accuracy") or {}
    memory = record.get("memory") or {}
    out = {f"final/{k}": accuracy[k] for k in ("top1_last", "top5_last", "top1_best_optimistic", "top1_valsel")
           if k in accuracy}
    out.update({f"final/{k}": v for k, v in (record.get("speed") or {}).items()})
    out.update({f"final/{k}": memory[k] for k in ("peak_allocated_mb_max", "peak_reserved_mb_max", "peak_rss_mb_max")
                if k in memory})
    out["final/wall_s"] = (record.get("time") or {}).get("wall_s")
    return {k: float(v) for k, v in out.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _status_tensorboard(tracker, status: str, error: str | None) -> None:
    tracker.tracker.add_text("status", status if error is None else f"{status}: {error}")


def _status_mlflow(tracker, status: str, error: str | None) -> None:
    import mlflow

    mlflow.set_tags({"status": status, **({"error": error[:5000]} if error else {})})
    mlflow.end_run(status="FINISHED" if status == "ok" else "KILLED" if status == "interrupted" else "FAILED")


def _status_wandb(tracker, status: str, error: str | None) -> None:
    tracker.tracker.summary["status"] = status


def _status_aim(tracker, status: str, error: str | None) -> None:
    tracker.tracker["status"] = status


STATUS_WRITERS: dict[str, Callable[[Any, str, str | None], None]] = {
    "tensorboard": _status_tensorboard,
    "mlflow": _status_mlflow,
    "wandb": _status_wandb,
    "aim": _status_aim,
}


def finish_run(acc, record: dict[str, Any]) -> None:
    """Log the cell's final figures and status, then close its runs (accelerate keeps the trackers of a
    process in `acc.trackers`; the next cell starts new ones)."""
    if not acc.is_main_process or not acc.trackers:
        return
    step = record.get("steps") if record.get("status") == "ok" else None
    if record.get("status") == "interrupted":
        step = (record.get("checkpoint") or {}).get("step")
    try:
        acc.log(final_metrics(record), step=step)
        for tracker in acc.trackers:
            writer = STATUS_WRITERS.get(tracker.name)
            if writer is not None:
                writer(tracker, record["status"], record.get("error"))
            tracker.finish()
    except Exception as exc:  # the record is written; a tracker that fails to close must not stop the matrix
        print(f"fgbench: warning: closing the tracker runs of {record.get('cell_id')} failed: "
              f"{one_line(f'{type(exc).__name__}: {exc}')}", file=sys.stderr)
    finally:
        acc.trackers.clear()
        acc.log_with = []
