"""Ratios between rows measured in the same run: fused vs eager, every method vs plain ViT, loader vs synthetic.

Rows pair up on (method, compile, image size, requested batch); the vs-ViT ratio also matches the
attention mode. Rates are samples/s, so a pair whose batches backed off differently still compares
throughput. Memory: `train_memory_vs_eager` compares peak allocated CUDA memory (none on a CPU,
where the process's RSS says nothing), `train_live_vs_eager` and `train_saved_vs_eager` the
profiled step's peak live bytes and saved-for-backward bytes (`bench.speed.activations`), on any
device.
"""

from __future__ import annotations

from typing import Any

BASELINE = "vit"  # the plain ViT-B/16 the targets compare against


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def add_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add `train/infer_speedup_vs_eager`, the `train_*_vs_eager` memory ratios, `train_vs_vit` and `data_ratio` in place."""
    def key(row, method=None, attention=None):
        return (method or row["method"], attention or row["attention"], row["compile"], row["img_size"],
                row["batch_size"])

    by_key = {key(row): row for row in rows}
    for row in rows:
        eager = by_key.get(key(row, attention="eager"), {})
        vit = by_key.get(key(row, method=BASELINE), {})
        row["train_speedup_vs_eager"] = ratio(row.get("train_samples_per_sec"), eager.get("train_samples_per_sec"))
        row["infer_speedup_vs_eager"] = ratio(row.get("infer_samples_per_sec"), eager.get("infer_samples_per_sec"))
        row["train_memory_vs_eager"] = ratio(row.get("train_peak_allocated_mb"), eager.get("train_peak_allocated_mb"))
        row["train_live_vs_eager"] = ratio(row.get("train_peak_live_mb"), eager.get("train_peak_live_mb"))
        row["train_saved_vs_eager"] = ratio(row.get("train_saved_mb"), eager.get("train_saved_mb"))
        row["train_vs_vit"] = ratio(row.get("train_samples_per_sec"), vit.get("train_samples_per_sec"))
        row["data_ratio"] = ratio(row.get("data_samples_per_sec"), row.get("train_samples_per_sec"))
    return rows
