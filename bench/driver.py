"""Drive a matrix: in this process group, or as a pool of worker processes.

In-process: one Accelerator per process (accelerate's state is a process-wide singleton), cells
run one after another in it. The main process decides which cells are pending (resume) and
broadcasts the decision, so every rank runs the same cells in the same order. This is the mode
under `accelerate launch`/torchrun (`--parallel data`), and of a plain `python bench.py` whose
cells all fit one process. Everything else (`--parallel cells`, a world-size axis, DeepSpeed
cells with different engine configs) goes to `bench.pool`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from bench import records
from bench.claims import CellClaims
from bench.data import get_card, materialize
from bench.data.checks import check_dataset
from bench.data.valsplit import choose_val
from bench.errors import UsageError
from bench.matrix import Cell
from bench.progress import CellProgress
from bench.resume import data_fingerprints, plan_resume
from bench.report import leaderboard, render_markdown, resolve_baseline, runs_frame
from bench.runner import RunContext, run_cell
from bench.strategy import deepspeed_config, is_deepspeed, make_accelerator, process_key
from methods.backbone import BackboneConfig, check_pretrained
from methods.pretrained import LoadReport

RANDOM_INIT_WARNING = ("fgbench: warning: no --pretrained weights; backbones start from random initialisation "
                       "(fine for --preset tiny, not a reproduction of the papers' fine-tuning)")


def launched_world_size() -> int | None:
    """The world size when started by torchrun/accelerate launch (they export WORLD_SIZE), else None."""
    value = os.environ.get("WORLD_SIZE")
    return int(value) if value and value.isdigit() else None


def accelerator_for(cell: Cell, log_with: list[str] | None = None, project_dir: Path | None = None) -> Accelerator:
    ds = (deepspeed_config(cell.strategy, cell.strategy_config, cell.recipe, cell.precision, cell.world_size)
          if is_deepspeed(cell.strategy) else None)
    return make_accelerator(cell.strategy, cell.precision, ds, log_with=log_with, project_dir=project_dir)


@dataclass
class MatrixOutcome:
    ran: int
    skipped: int
    statuses: dict[str, str]  # cell_id -> status of its record
    stopped_by: int | None = None  # signal number when stopped by SIGTERM/SIGINT

    @property
    def exit_status(self) -> int:
        if self.stopped_by is not None:
            return 128 + self.stopped_by
        return 0 if all(s == "ok" for s in self.statuses.values()) else 1


def check_matrix_data(cells: list[Cell], data_root: Path, data_options: dict, warn=print) -> dict[str, dict[str, str]]:
    """Check every dataset and pretrained checkpoint of the matrix before the first cell: bad data or
    a checkpoint that does not fit the backbone fails in seconds (exit 2), not once per cell.

    The data checks are `bench.py data`'s without decoding images: split lists parse, labels are
    in range, every listed file exists, the train split covers the classes; then each cell's
    validation split can be made and its train split still fills a global batch. Generated
    datasets (the demo) must already be materialised. Only when all is well does it say what each
    backbone starts from. Returns each dataset's split hashes (what resume compares records with).
    """
    seen: dict[str, object] = {}
    starts: dict[BackboneConfig, LoadReport | None] = {}
    for cell in cells:
        if cell.backbone not in starts:
            starts[cell.backbone] = check_pretrained(cell.backbone)
        if cell.dataset not in seen:
            card = get_card(cell.dataset)
            report, data = check_dataset(card, data_root, data_options.get(card.name), decode=False)
            report.raise_if_broken()
            for warning in report.warnings:
                warn(f"fgbench: warning: {warning}", file=sys.stderr)
            seen[cell.dataset] = data
        data = seen[cell.dataset]
        train, _, _ = choose_val(data, cell.recipe, cell.seed)
        global_batch = cell.recipe.batch_size * cell.world_size
        if len(train) < global_batch:
            raise UsageError(
                f"{cell.dataset}: the train split has {len(train)} images, fewer than one global batch "
                f"({cell.recipe.batch_size} per device x {cell.world_size}); lower --batch-size"
            )
    for summary in dict.fromkeys(r.summary() for r in starts.values() if r is not None):
        warn(f"fgbench: {summary}")
    if any(report is None for report in starts.values()):
        warn(RANDOM_INIT_WARNING, file=sys.stderr)
    return data_fingerprints(seen)


def materialize_all(cells: list[Cell], data_root: Path) -> None:
    for name in dict.fromkeys(c.dataset for c in cells):
        materialize(get_card(name), data_root)


def preflight(cells: list[Cell], ctx: RunContext) -> dict[str, dict[str, str]]:
    """The main process generates what must be generated; then every rank checks the data."""
    acc = ctx.accelerator
    if acc.is_main_process:
        materialize_all(cells, ctx.data_root)
    acc.wait_for_everyone()
    return check_matrix_data(cells, ctx.data_root, ctx.data_options, warn=acc.print)


def split_by_process(cells: list[Cell], acc: Accelerator) -> tuple[list[Cell], list[Cell]]:
    """The cells this process group can run (same process configuration as its first), and the rest."""
    here = [c for c in cells if c.world_size == acc.num_processes]
    if not here:
        return [], cells
    key = process_key(here[0])
    mine = [c for c in here if process_key(c) == key]
    return mine, [c for c in cells if c not in mine]


def run_matrix(cells: list[Cell], ctx: RunContext, rerun: str = "none") -> MatrixOutcome:
    acc = ctx.accelerator
    say = acc.print
    fingerprints = preflight(cells, ctx)
    decision = [None]
    if acc.is_main_process:
        records.remove_stale_temporaries(ctx.results_dir)
        plan = plan_resume(cells, ctx.results_dir, rerun, fingerprints)
        for line in plan.notes(cells):
            say(line)
        decision = [[c.cell_id for c in plan.todo]]
    broadcast_object_list(decision)
    todo_ids = set(decision[0])
    todo = [c for c in cells if c.cell_id in todo_ids]
    skipped = len(cells) - len(todo)
    if skipped:
        say(f"fgbench: {skipped} of {len(cells)} cells already have a finished record (resume)"
            + ("; --rerun failed|all to redo them" if rerun not in ("all", "stale") else ""))
    ctx.stop.install()
    stopped = None
    style = ctx.progress_style if ctx.progress else "none"
    bar = CellProgress(style, len(todo), shown=acc.is_main_process, write=say)
    claims = CellClaims(ctx.results_dir, rerun, fingerprints)
    try:
        for cell in todo:
            skip = [claims.take(cell) if acc.is_main_process else None]
            broadcast_object_list(skip)  # the main process holds the claim; every rank follows its verdict
            if skip[0]:
                bar.skipped(skip[0])
                continue
            bar.start(cell)
            try:
                record = run_cell(cell, ctx)
            finally:
                if acc.is_main_process:
                    claims.release(cell)
            bar.finish(cell, record)
            if record["status"] == "interrupted" or ctx.stop.requested:
                stopped = ctx.stop.signum
                say("fgbench: stopped by signal; finished records are kept and the interrupted cell resumes "
                    "from its checkpoint when the same command runs again")
                break
    finally:
        bar.close()
        ctx.stop.uninstall()
    statuses = {}
    if acc.is_main_process:
        for cell in cells:
            record = records.read_record(cell.record_path(ctx.results_dir))
            statuses[cell.cell_id] = record["status"] if record else "missing"
    shared = [statuses]
    broadcast_object_list(shared)  # only the main process reads records; share its verdict
    return MatrixOutcome(ran=len(todo), skipped=skipped, statuses=shared[0], stopped_by=stopped)


def shutdown(acc: Accelerator) -> None:
    """Leave the process group cleanly (gloo aborts at interpreter exit otherwise)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        acc.wait_for_everyone()
    acc.end_training()  # closes any tracker run still open, then leaves the process group


def summary_table(cells: list[Cell], results_dir: Path) -> str:
    """The leaderboard restricted to this matrix's cells, as Markdown, against the default baseline
    (`vit`) when the matrix ran it."""
    runs = runs_frame(results_dir, [c.cell_id for c in cells])
    return render_markdown(leaderboard(runs, baseline=resolve_baseline(None, set(runs["method_label"].dropna()))))
