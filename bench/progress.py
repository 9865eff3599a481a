"""Console progress that reads well in a terminal and in a log file.

`bar`: tqdm bars (a terminal). `plain`: no carriage returns: one line when a cell starts and when it
finishes, a line per evaluation and a step line at most every `PLAIN_EVERY_S` seconds, for Slurm logs
and CI. `none`: only the cell lines. `auto` (the default) is `bar` on a terminal, else `plain`.
Step lines are printed only where the runner already synchronised with the device (its loss
readouts and evaluations), so choosing a style never adds a host sync.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable

from tqdm.auto import tqdm

STYLES = ("auto", "bar", "plain", "none")
PLAIN_EVERY_S = 30.0  # seconds between step lines in plain style


def resolve_style(style: str, stream=None) -> str:
    """`auto` becomes `bar` when the bars' stream (stderr) is a terminal, else `plain`."""
    if style != "auto":
        return style
    stream = sys.stderr if stream is None else stream
    try:
        return "bar" if stream.isatty() else "plain"
    except (AttributeError, ValueError):  # a closed or replaced stream
        return "plain"


def _losses_text(losses: dict[str, float]) -> str:
    if not losses:
        return ""
    parts = [f"loss {sum(losses.values()):.4f}"]
    if len(losses) > 1:
        parts.append("(" + ", ".join(f"{k} {v:.4f}" for k, v in sorted(losses.items())) + ")")
    return " ".join(parts)


class StepProgress:
    """Progress of one cell's training steps; the base class shows nothing (`none`, other ranks)."""

    def step(self) -> None: ...

    def synced(self, step: int, losses: dict[str, float], lr: float) -> None: ...

    def evaluated(self, step: int, result: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class BarSteps(StepProgress):
    def __init__(self, total: int, initial: int, desc: str):
        self.bar = tqdm(total=total, initial=initial, desc=f"  {desc}", leave=False, dynamic_ncols=True,
                        mininterval=0.5)
        self.loss = ""

    def step(self) -> None:
        self.bar.update(1)

    def synced(self, step, losses, lr) -> None:
        self.loss = f"{sum(losses.values()):.3f}" if losses else ""
        self.bar.set_postfix(loss=self.loss, lr=f"{lr:.2e}")

    def evaluated(self, step, result) -> None:
        self.bar.set_postfix(loss=self.loss, top1=f"{result['top1']:.1f}")

    def close(self) -> None:
        self.bar.close()


class PlainSteps(StepProgress):
    def __init__(self, total: int, initial: int, desc: str, write: Callable[[str], None] = print,
                 every_s: float | None = None):
        self.total, self.desc, self.write = total, desc, write
        self.every_s = PLAIN_EVERY_S if every_s is None else every_s
        self.started, self.first = time.perf_counter(), initial
        self.last_line = self.started

    def synced(self, step, losses, lr) -> None:
        now = time.perf_counter()
        if now - self.last_line < self.every_s and step < self.total:
            return
        self.last_line = now
        rate = (step - self.first) / max(now - self.started, 1e-9)
        fields = [f"step {step}/{self.total}", _losses_text(losses), f"lr {lr:.3e}", f"({rate:.2f} steps/s)"]
        self.write(f"  {self.desc}: " + " ".join(f for f in fields if f))

    def evaluated(self, step, result) -> None:
        self.write(f"  {self.desc}: step {step}/{self.total} eval top-1 {result['top1']:.2f}% "
                   f"top-5 {result['top5']:.2f}% loss {result['loss']:.4f}")


def step_progress(style: str, shown: bool, total: int, initial: int, desc: str) -> StepProgress:
    if not shown or style == "none":
        return StepProgress()
    if style == "plain":
        return PlainSteps(total, initial, desc)
    return BarSteps(total, initial, desc)


def finish_text(record: dict[str, Any]) -> str:
    """What a finished cell line says after its status: the headline or the error, and the wall time."""
    wall = (record.get("time") or {}).get("wall_s")
    took = f" in {wall:.1f} s" if isinstance(wall, (int, float)) else ""
    if record.get("status") == "ok":
        top1 = (record.get("accuracy") or {}).get("top1_last")
        return (f"top-1 {top1:.2f}%" if isinstance(top1, (int, float)) else "done") + took
    return f"{record.get('error')}{took}"


class CellProgress:
    """Progress over a matrix's cells: a tqdm bar of cells (`bar`) or one line per start and finish."""

    def __init__(self, style: str, total: int, shown: bool = True, write: Callable[[str], None] = print):
        self.style, self.total, self.shown, self.write = style, total, shown, write
        self.bar = (tqdm(total=total, desc="cells", unit="cell", dynamic_ncols=True, file=sys.stderr)
                    if shown and style == "bar" else None)
        self.numbers: dict[str, int] = {}

    def start(self, cell) -> None:
        self.numbers[cell.cell_id] = number = len(self.numbers) + 1
        if self.bar is not None:
            self.bar.set_postfix_str(cell.describe())
        elif self.shown:
            self.write(f"fgbench: cell {number}/{self.total}: {cell.describe()} [{cell.cell_id}]")

    def running(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(text[:80])

    def finish(self, cell, record: dict[str, Any], where: str = "") -> None:
        status = record.get("status")
        number = self.numbers.get(cell.cell_id, 0)
        if self.bar is not None:
            self.bar.update(1)
            if status != "ok":
                self.bar.write(f"fgbench: {cell.describe()} {status}: {record.get('error')}{where}")
        elif self.shown:
            self.write(f"fgbench: cell {number}/{self.total} {status}: {cell.describe()} {finish_text(record)}{where}")

    def skipped(self, line: str) -> None:
        """A cell left to another command (its claim is held elsewhere): the line says why."""
        if self.bar is not None:
            self.bar.update(1)
            self.bar.write(line)
        elif self.shown:
            self.write(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
