"""Drive a matrix in this process (or in each process of an `accelerate launch`).

One Accelerator per process (accelerate's state is a process-wide singleton); cells run one after
another in it. The main process decides which cells are pending (resume) and broadcasts that
decision, so every rank runs the same cells in the same order.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from tqdm.auto import tqdm

from bench import records
from bench.data import check_files, get_card, materialize, open_dataset
from bench.errors import UsageError
from bench.matrix import Cell, pending_cells
from bench.report import leaderboard, render_markdown, runs_frame
from bench.runner import RunContext, run_cell
from methods.backbone import BackboneConfig, check_pretrained
from methods.pretrained import LoadReport

RANDOM_INIT_WARNING = ("fgbench: warning: no --pretrained weights; backbones start from random initialisation "
                       "(fine for --preset tiny, not a reproduction of the papers' fine-tuning)")


def make_accelerator(precision: str | None) -> Accelerator:
    """`Accelerator(cpu=True)` without CUDA (gloo ranks under `accelerate launch`), else the GPUs."""
    try:
        return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=precision)
    except (ValueError, RuntimeError) as exc:
        raise UsageError(f"--precision {precision}: {' '.join(str(exc).split())}") from None


@dataclass
class MatrixOutcome:
    ran: int
    skipped: int
    statuses: dict[str, str]  # cell_id -> status of its record

    @property
    def exit_status(self) -> int:
        return 0 if all(s == "ok" for s in self.statuses.values()) else 1


def preflight(cells: list[Cell], ctx: RunContext) -> None:
    """Check every dataset and pretrained checkpoint of the matrix before the first cell: bad data
    or a checkpoint that does not fit the backbone fails in seconds (exit 2), not once per cell.
    Only when all is well does it say what each backbone starts from."""
    acc = ctx.accelerator
    seen: dict[str, object] = {}
    starts: dict[BackboneConfig, LoadReport | None] = {}
    for cell in cells:
        if cell.backbone not in starts:
            starts[cell.backbone] = check_pretrained(cell.backbone)
        if cell.dataset not in seen:
            card = get_card(cell.dataset)
            if acc.is_main_process:
                materialize(card, ctx.data_root)
            acc.wait_for_everyone()
            data = open_dataset(card, ctx.data_root, ctx.data_options.get(card.name))
            check_files(data)
            seen[cell.dataset] = data
        data = seen[cell.dataset]
        global_batch = cell.recipe.batch_size * cell.world_size
        if len(data.train) < global_batch:
            raise UsageError(
                f"{cell.dataset}: the train split has {len(data.train)} images, fewer than one global batch "
                f"({cell.recipe.batch_size} per device x {cell.world_size}); lower --batch-size"
            )
    for summary in dict.fromkeys(r.summary() for r in starts.values() if r is not None):
        acc.print(f"fgbench: {summary}")
    if any(report is None for report in starts.values()):
        acc.print(RANDOM_INIT_WARNING, file=sys.stderr)


def run_matrix(cells: list[Cell], ctx: RunContext, rerun: str = "none") -> MatrixOutcome:
    acc = ctx.accelerator
    preflight(cells, ctx)
    decision = [None]
    if acc.is_main_process:
        records.remove_stale_temporaries(ctx.results_dir)
        todo, _ = pending_cells(cells, ctx.results_dir, rerun)
        decision = [[c.cell_id for c in todo]]
    broadcast_object_list(decision)
    todo_ids = set(decision[0])
    todo = [c for c in cells if c.cell_id in todo_ids]
    skipped = len(cells) - len(todo)
    say = acc.print
    if skipped:
        say(f"fgbench: {skipped} of {len(cells)} cells already have a finished record (resume); "
            f"{'--rerun failed|all to redo them' if rerun != 'all' else ''}".rstrip("; "))
    bar = tqdm(todo, desc="cells", unit="cell", dynamic_ncols=True, disable=not (ctx.progress and acc.is_main_process),
               file=sys.stderr)
    for cell in bar:
        bar.set_postfix_str(cell.describe())
        record = run_cell(cell, ctx)
        if record["status"] != "ok":
            bar.write(f"fgbench: {cell.describe()} {record['status']}: {record['error']}")
    bar.close()
    statuses = {}
    for cell in cells:
        record = records.read_record(cell.record_path(ctx.results_dir)) if acc.is_main_process else None
        statuses[cell.cell_id] = record["status"] if record else "missing"
    if not acc.is_main_process:  # only the main process reads records; share its verdict
        statuses = {}
    shared = [statuses]
    broadcast_object_list(shared)
    return MatrixOutcome(ran=len(todo), skipped=skipped, statuses=shared[0])


def shutdown(acc: Accelerator) -> None:
    """Leave the process group cleanly (gloo aborts at interpreter exit otherwise)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        acc.wait_for_everyone()
        dist.destroy_process_group()


def summary_table(cells: list[Cell], results_dir: Path) -> str:
    """The leaderboard restricted to this matrix's cells, as Markdown."""
    return render_markdown(leaderboard(runs_frame(results_dir, [c.cell_id for c in cells])))
