"""The speed targets of the benchmark's issue, checked against the rows of a run and reported.

They are defined at the paper setting on an H100: ViT-B/16 (`--preset base`), 448 px, bf16,
batch 16, fused attention, no compile. Only rows at that setting are judged; a run without them
(a CPU `tiny` run) reports that nothing was judged. Nothing asserts these: they are printed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

PAPER_SETTING = {"preset": "base", "precision": "bf16", "img_size": 448, "batch_size": 16}


@dataclass(frozen=True)
class Target:
    what: str
    column: str
    bound: float
    at_most: bool = False  # the value must be <= bound (else >=)
    methods: tuple[str, ...] | None = None  # None: every method
    exclude: tuple[str, ...] = ()


TARGETS: tuple[Target, ...] = (
    Target("train speed fused / eager >= 2", "train_speedup_vs_eager", 2.0, methods=("ffvt", "mixvit", "ramstrans")),
    Target("train peak memory fused / eager <= 0.5", "train_memory_vs_eager", 0.5, at_most=True,
           methods=("ffvt", "mixvit", "ramstrans")),
    Target("train speed / ViT-B/16 >= 0.85", "train_vs_vit", 0.85, exclude=("vit", "ramstrans")),
    Target("train speed / ViT-B/16 >= 0.45 (two passes)", "train_vs_vit", 0.45, methods=("ramstrans",)),
    Target("ViT-B/16 train MFU >= 0.40", "train_mfu", 0.40, methods=("vit",)),
    Target("loader / synthetic train speed >= 0.95", "data_ratio", 0.95),
)


def at_paper_setting(row: dict[str, Any], preset: str, precision: str) -> bool:
    return (preset == PAPER_SETTING["preset"] and precision == PAPER_SETTING["precision"]
            and row["img_size"] == PAPER_SETTING["img_size"] and row["batch_size"] == PAPER_SETTING["batch_size"]
            and row["attention"] == "fused" and not row["compile"])


def check_targets(rows: Iterable[dict[str, Any]], preset: str, precision: str) -> list[str]:
    """One line per target and method measured at the paper setting: `met`/`MISSED`, the value, the bound."""
    judged = [r for r in rows if at_paper_setting(r, preset, precision)]
    if not judged:
        return ["targets: not judged (they are defined at --preset base, bf16, 448 px, batch 16, fused attention)"]
    lines = []
    for target in TARGETS:
        for row in judged:
            method = row["method"].partition(":")[0]
            if (target.methods is not None and method not in target.methods) or method in target.exclude:
                continue
            value = row.get(target.column)
            if value is None:
                continue
            met = value <= target.bound if target.at_most else value >= target.bound
            lines.append(f"{'met   ' if met else 'MISSED'}  {row['method']:<12} {target.what}: {value:.2f}")
    return lines or ["targets: no row at the paper setting carries the figures they need"]
