"""Speed output: a CSV with timm-style `train_*`/`infer_*` columns, a JSON with per-step times, a table.

File names follow timm's `benchmark-*.csv` convention, carrying preset, precision, torch and CUDA
versions and the device: `speed-base-amp_bf16-pt2141-cu128-h100-80gb-hbm3.csv` (`-dynamo` when
compiled rows are present). Beside the CSV: `.json` (the command, the environment, every row with
every timed step in ms) and `.md` (the command and the printed table, ready to commit). Numbers
stay numbers in the CSV; formatting happens only in the table.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import torch
from tabulate import tabulate

from bench.atomic import atomic_write_text

CSV_COLUMNS: tuple[str, ...] = (
    "method", "attention", "compile", "preset", "precision", "img_size", "batch_size",
    "train_batch_size", "train_samples_per_sec", "train_step_ms_median", "train_step_ms_p90", "train_timed_steps",
    "train_warmup_steps", "train_first_step_s", "train_compile_s", "train_peak_allocated_mb", "train_peak_reserved_mb",
    "train_peak_rss_mb", "train_peak_live_mb", "train_saved_mb", "train_mfu", "train_speedup_vs_eager",
    "train_memory_vs_eager", "train_live_vs_eager", "train_saved_vs_eager", "train_vs_vit",
    "infer_batch_size", "infer_samples_per_sec", "infer_step_ms_median", "infer_step_ms_p90", "infer_timed_steps",
    "infer_warmup_steps", "infer_first_step_s", "infer_compile_s", "infer_peak_allocated_mb", "infer_peak_reserved_mb",
    "infer_peak_rss_mb", "infer_mfu", "infer_speedup_vs_eager",
    "dataset", "data_workers", "data_samples_per_sec", "data_step_ms_median", "data_step_ms_p90", "data_ratio",
    "param_count", "infer_gmacs", "train_gmacs", "flop_counter", "peak_tflops", "peak_source", "matmul_precision",
    "device", "device_name", "threads", "clock", "interleave", "torch", "cuda", "timm", "fgbench", "git_sha", "error",
)

PRECISION_LABELS = {"no": "fp32", "fp16": "amp", "bf16": "amp_bf16"}  # timm's names for autocast runs


def device_slug(device: torch.device) -> str:
    if device.type != "cuda":
        return device.type
    name = re.sub(r"\b(NVIDIA|GeForce|Tesla)\b", "", torch.cuda.get_device_name(device))
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def file_stem(preset: str, precision: str, device: torch.device, compiled: bool) -> str:
    torch_version = "".join(torch.__version__.split("+")[0].split("."))
    cuda = f"cu{torch.version.cuda.replace('.', '')}" if device.type == "cuda" and torch.version.cuda else "cpu"
    parts = ["speed", preset, PRECISION_LABELS[precision], f"pt{torch_version}", cuda]
    if device.type == "cuda":
        parts.append(device_slug(device))
    if compiled:
        parts.append("dynamo")
    return "-".join(parts)


def write_outputs(rows: list[dict[str, Any]], folder: Path, stem: str, meta: dict[str, Any], table_text: str,
                  notes: Iterable[str]) -> list[Path]:
    """Write `<stem>.csv`, `.json` and `.md` under `folder`; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, json_path, md_path = (folder / f"{stem}.{ext}" for ext in ("csv", "json", "md"))
    frame = pd.DataFrame(rows).reindex(columns=list(CSV_COLUMNS))
    atomic_write_text(csv_path, frame.to_csv(index=False))
    atomic_write_text(json_path, json.dumps({**meta, "rows": rows}, indent=1, default=str) + "\n")
    lines = [f"# fgbench speed: {meta['device_label']}", "", "```", meta["command"], "```", "", table_text, ""]
    lines += [f"- {note}" for note in notes]
    atomic_write_text(md_path, "\n".join(lines) + "\n")
    return [csv_path, json_path, md_path]


def _num(value, fmt: str) -> str:
    return "" if value is None or value != value else format(value, fmt)


def _rate(value) -> str:
    """Samples/s with one decimal, or three significant digits below 10 (ViT-B on a CPU: 0.143/s)."""
    return _num(value, ",.1f" if value is None or value != value or value >= 10 else ".3g")


def _batch(row: dict[str, Any]) -> str:
    """The requested batch, and the one training ran at when out-of-memory backed it off."""
    ran = row.get("train_batch_size")
    if ran is None:
        return f"{row['batch_size']}→OOM" if "OutOfMemory" in (row.get("error") or "") else str(row["batch_size"])
    return str(ran) if ran == row["batch_size"] else f"{row['batch_size']}→{ran}"


def table(rows: list[dict[str, Any]], cuda: bool) -> str:
    """The human table (GitHub Markdown): rates, step-time median/p90, memory, MFU and the ratios.

    Memory: on a GPU the peak allocated MB of the training phase and its fused/eager ratio; on a
    CPU the profiled step's peak live MB and saved-for-backward MB, and the ratio of the peaks."""
    compiled = any(r["compile"] for r in rows)
    mfu = any(r.get("train_mfu") is not None for r in rows)
    data = any(r.get("data_samples_per_sec") is not None for r in rows)
    errors = any(r.get("error") for r in rows)
    memory = "train_peak_allocated_mb" if cuda else "train_peak_live_mb"
    memory_ratio = "train_memory_vs_eager" if cuda else "train_live_vs_eager"
    headers = ["method", "attention", *(["compile"] if compiled else []), "img", "batch", "train img/s",
               "train ms p50/p90", "train peak MB" if cuda else "step peak MB", *([] if cuda else ["saved MB"]),
               "infer img/s", *(["train MFU"] if mfu else []), "fused/eager train", "fused/eager mem",
               "/ vit train", *(["loader/synthetic"] if data else []), *(["error"] if errors else [])]
    body = []
    for r in rows:
        line = [r["method"], r["attention"], *(["on" if r["compile"] else "off"] if compiled else []), r["img_size"],
                _batch(r), _rate(r.get("train_samples_per_sec")),
                f"{_num(r.get('train_step_ms_median'), '.1f')} / {_num(r.get('train_step_ms_p90'), '.1f')}",
                _num(r.get(memory), ",.1f"), *([] if cuda else [_num(r.get("train_saved_mb"), ",.1f")]),
                _rate(r.get("infer_samples_per_sec"))]
        if mfu:
            line.append(_num(r.get("train_mfu"), ".1%"))
        fused = r["attention"] != "eager"  # an eager row's ratio to itself says nothing
        line.append(_num(r.get("train_speedup_vs_eager"), ".2f") if fused else "")
        line.append(_num(r.get(memory_ratio), ".2f") if fused else "")
        line.append(_num(r.get("train_vs_vit"), ".2f"))
        if data:
            line.append(_num(r.get("data_ratio"), ".2f"))
        if errors:
            line.append(r.get("error") or "")
        body.append(line)
    return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)
