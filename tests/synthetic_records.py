"""Synthetic run records in the runner's schema, for report tests (no model is trained).

`make_record` mirrors `bench.runner.base_record` plus what `train_and_evaluate` adds, with the
numbers given by the test; `write_runs` writes them with `bench.records.write_record` at the path
the runner would use.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from bench import records


def _hash(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def make_record(method: str, dataset: str, seed: int, top1: float | None = None, status: str = "ok", *,
                variant: str | None = None, preset: str = "tiny", precision: str = "no", steps: int = 40,
                world_size: int = 1, train_sps: float = 100.0, eval_sps: float = 300.0, peak_mb: float = 500.0,
                curve: list[tuple[int, float, float]] | None = None, cuda: bool = False,
                extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """One record; `top1` None with status != ok gives a failed run's record (no metrics)."""
    label = f"{method}:{variant}" if variant else method
    setting = {"method": method, "variant": variant, "dataset": dataset, "preset": preset, "precision": precision,
               "strategy": "ddp", "world_size": world_size, "steps": steps}
    record: dict[str, Any] = {
        "schema_version": records.SCHEMA_VERSION,
        "cell_id": _hash({**setting, "seed": seed}),
        "setting_id": _hash(setting),
        "run_id": _hash({**setting, "seed": seed, "run": 1}),
        "attempt": 1,
        "status": status,
        "error": None if status == "ok" else f"RuntimeError: synthetic {status}",
        "method": method, "variant": variant, "method_label": label, "dataset": dataset, "seed": seed,
        "preset": preset, "precision": precision, "strategy": "ddp", "world_size": world_size,
        "img_size": 64, "resize_size": 72, "per_device_batch": 8, "grad_accum": 1, "global_batch": 8 * world_size,
        "steps": steps, "lr": 0.002, "options": {}, "recipe": {"steps": steps}, "recipe_sources": {},
        "backbone": {"patch_size": 8, "embed_dim": 64, "depth": 4},
        "distributed": {"distributed_type": "DistributedType.NO", "num_processes": world_size,
                        "mixed_precision": precision},
        "env": {"fgbench": "0.1.0", "git_sha": "0123456789abcdef0123456789abcdef01234567", "git_dirty": False,
                "python": "3.11.2", "versions": {"torch": "2.14.1", "timm": "1.0.31", "accelerate": "1.15.0"},
                "device_type": "cuda" if cuda else "cpu", "device_name": "NVIDIA H100" if cuda else "cpu"},
        "time": {"start_utc": "2025-01-01T00:00:00+00:00", "end_utc": "2025-01-01T00:01:00+00:00", "wall_s": 60.0},
    }
    if status == "ok":
        points = curve or [(steps // 2, top1 - 5.0, 2.0), (steps, top1, 1.0)]
        record.update(
            accuracy={
                "top1_last": top1, "top5_last": min(100.0, top1 + 20.0), "eval_loss_last": 1.0, "views_last": {},
                "n_evaluated": 240, "n_test": 240, "top1_best_optimistic": max(p[1] for p in points),
                "best_step_optimistic": steps,
                "curve": [{"step": s, "top1": a, "top5": min(100.0, a + 20.0), "loss": 1.0, "n": 240,
                           "train_losses": {"ce": loss}} for s, a, loss in points],
            },
            train={"losses_last": {"ce": 1.0}, "loss_last": 1.0},
            speed={"train_samples_per_sec": train_sps, "train_step_ms_median": 8000.0 / train_sps,
                   "train_step_ms_p90": 9000.0 / train_sps, "train_timed_steps": steps - 8,
                   "eval_samples_per_sec": eval_sps, "eval_step_ms_median": 10.0, "eval_step_ms_p90": 12.0,
                   "eval_timed_steps": 3},
            memory={"peak_allocated_mb": [peak_mb] if cuda else None, "peak_reserved_mb": None,
                    "peak_rss_mb": [peak_mb] if not cuda else None,
                    "peak_allocated_mb_max": peak_mb if cuda else None, "peak_reserved_mb_max": None,
                    "peak_rss_mb_max": None if cuda else peak_mb},
            cost={"params": 210_000, "params_m": 0.21},
            data={"root": "/data/" + dataset, "n_train": 240, "n_test": 240, "n_classes": 80,
                  "split_hashes": {"train": "aaaa1111", "test": "bbbb2222"}},
        )
    if extra:
        record.update(extra)
    return record


def write_runs(results_dir: Path, recs: list[dict[str, Any]]) -> list[Path]:
    """Write each record where the runner would; returns the paths."""
    return [records.write_record(records.record_path(results_dir, r["dataset"], r["method_label"], r["seed"],
                                                     r["cell_id"]), r) for r in recs]


def mixed_matrix(results_dir: Path) -> list[Path]:
    """Two datasets, three methods, three seeds, with a failed, an OOM and a diverged run among them."""
    recs = []
    acc = {"vit": [50.0, 52.0, 51.0], "ffvt": [56.0, 57.5, 58.0], "mixvit": [49.0, 53.0, 51.5]}
    for dataset, shift in (("cotton", 0.0), ("soyloc", -10.0)):
        for method, values in acc.items():
            for seed, value in enumerate(values):
                recs.append(make_record(method, dataset, seed, value + shift,
                                        train_sps={"vit": 120.0, "ffvt": 90.0, "mixvit": 60.0}[method] + seed))
    recs.append(make_record("ffvt", "cotton", 3, None, status="failed"))
    recs.append(make_record("mixvit", "cotton", 3, None, status="diverged"))
    recs.append(make_record("vit", "soyloc", 3, None, status="oom"))
    return write_runs(results_dir, recs)
