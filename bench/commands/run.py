"""`bench.py [run]`: expand the matrix, skip finished cells, run the rest, print the table."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bench.commands.common import PRECISIONS, add_data_args, add_results_dir, data_options, method_specs
from bench.errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("matrix")
    g.add_argument("--methods", default="vit", help="comma list of methods (name or name:variant), or 'all'")
    g.add_argument("--datasets", default="demo", help="comma list of datasets or aliases, or 'all'")
    g.add_argument("--seeds", default="0", help="comma list or range of seeds, e.g. 0,1,2 or 0-4")
    g.add_argument("--preset", default="tiny",
                   help="tiny (CPU scale), base (ViT-B/16), base32 (ViT-B/32) or base_r50 (R50+ViT-B/16); paper recipe")
    g.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="mixed precision (default: accelerate's launch setting, else no)")
    g.add_argument("--rerun", choices=("none", "failed", "all"), default="none",
                   help="re-run cells that already have a record: none (resume), failed, all")
    s = p.add_argument_group("scale out")
    s.add_argument("--strategy", default=None,
                   help="comma list of ddp, zero1, zero2, zero3 (DeepSpeed ZeRO stages); default ddp")
    s.add_argument("--deepspeed-config", type=Path, default=None, metavar="FILE",
                   help="a DeepSpeed JSON for every cell (batch, accumulation, clipping and precision are filled in "
                        "from the recipe; optimizer and scheduler must not be set)")
    s.add_argument("--world-sizes", default=None, metavar="N[,N...]",
                   help="processes per cell; several values make a scaling axis (default: --gpus-per-cell, or "
                        "the launched world size under accelerate launch)")
    s.add_argument("--gpus-per-cell", type=int, default=1, help="processes (GPUs) per cell in --parallel cells")
    s.add_argument("--parallel", choices=("cells", "data"), default=None,
                   help="cells: independent cells at once, one worker per GPU (or CPU slot); data: each cell "
                        "across all launched processes (the default under accelerate launch)")
    s.add_argument("--slots", type=int, default=None,
                   help="--parallel cells on a CPU-only node: workers at once (default 1; on GPUs: the GPU count)")
    s.add_argument("--shard", default=None, metavar="I/N",
                   help="run only shard I of N of the matrix (Slurm job arrays, Kubernetes indexed jobs)")
    s.add_argument("--checkpoint-every", type=int, default=0, metavar="STEPS",
                   help="also checkpoint every STEPS steps (a stop signal always checkpoints)")
    s.add_argument("--cell-ids", default=None, help=argparse.SUPPRESS)  # internal: a pool worker's cell
    w = p.add_argument_group("weights")
    w.add_argument("--pretrained", type=Path, default=None, metavar="PATH",
                   help="local backbone checkpoint: Google .npz (ViT-B/16, B/32, R50+ViT-B/16) or a timm state dict "
                        "(.pth/.pt/.bin/.safetensors); cells are keyed by its sha256 (default: random init)")
    w.add_argument("--pos-embed-resize", default="bilinear", metavar="{bilinear,bicubic}",
                   help="resampling of the checkpoint's position grid: bilinear with align_corners=True "
                        "(the originals, default) or bicubic (timm's default)")
    add_data_args(p)
    d = p.add_argument_group("input pipeline (does not change results)")
    d.add_argument("--cache-dir", type=Path, default=None,
                   help="decode-and-resize cache folder (default: $XDG_CACHE_HOME/fgbench or ~/.cache/fgbench)")
    d.add_argument("--no-cache", action="store_true", help="decode and resize every image every time")
    d.add_argument("--workers", type=int, default=None, help="data-loader worker processes (default: 0 on CPU, 8 on GPU)")
    d.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU intra-op threads of each training process (default: torch's, or the cores divided "
                        "among --parallel cells workers; 1 is fastest on a shared, busy machine); recorded as "
                        "env.torch_threads")
    r = p.add_argument_group("recipe overrides (default: method, dataset card and preset)")
    r.add_argument("--steps", type=int, help="optimizer updates")
    r.add_argument("--batch-size", type=int, help="per device")
    r.add_argument("--eval-batch-size", type=int)
    r.add_argument("--lr", type=float)
    r.add_argument("--eval-every", type=int, help="evaluate every N steps (and always at the last)")
    r.add_argument("--warmup-steps", type=int)
    r.add_argument("--img-size", type=int, help="crop size S")
    r.add_argument("--resize-size", type=int, help="Resize((R, R)) before the crop")
    r.add_argument("--grad-accum", type=int)
    r.add_argument("--val-fraction", type=float, metavar="F",
                   help="carve this fraction of train (stratified, seeded by the run seed) as a validation split "
                        "and also report the test top-1 at the best validation top-1 (top1_valsel)")
    r.add_argument("--val-split", choices=("carved", "shipped"),
                   help="carved (default: from --val-fraction) or shipped (the dataset's own val split)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other recipe field (repeatable)")
    r.add_argument("--opt", action="append", default=[], metavar="[METHOD.]KEY=VALUE",
                   help="method option, e.g. num_tokens=24 or ffvt.num_tokens=24 (repeatable)")
    o = p.add_argument_group("output")
    o.add_argument("--no-progress", action="store_true", help="no progress bars")
    o.add_argument("--dry-run", action="store_true", help="print the cells and whether they are done; run nothing")
    add_results_dir(p)


def recipe_overrides(args: argparse.Namespace) -> dict:
    from bench.recipe import parse_assignments

    flags = {
        "steps": args.steps, "batch_size": args.batch_size, "eval_batch_size": args.eval_batch_size, "lr": args.lr,
        "eval_every": args.eval_every, "warmup_steps": args.warmup_steps, "img_size": args.img_size,
        "resize_size": args.resize_size, "grad_accum": args.grad_accum, "val_fraction": args.val_fraction,
        "val_split": args.val_split,
    }
    out = parse_assignments(args.set, "--set")
    out.update({k: v for k, v in flags.items() if v is not None})
    return out


def matrix_spec(args: argparse.Namespace, launched: int | None):
    """The user's matrix; under a launcher the world size is the launched one."""
    from bench.data import expand_datasets
    from bench.matrix import MatrixSpec, check_option_overrides, parse_seeds, parse_world_sizes
    from bench.recipe import parse_assignments
    from bench.strategy import load_deepspeed_json, parse_strategies
    from methods.pretrained import PretrainedFile

    specs = method_specs(args.methods)
    options = parse_assignments(args.opt, "--opt")
    check_option_overrides(specs, options)
    strategy_config: dict = {}
    if args.deepspeed_config is not None:
        if args.strategy:
            raise UsageError("--deepspeed-config sets the strategy; drop --strategy")
        strategy_config = load_deepspeed_json(args.deepspeed_config)
        strategies = ["deepspeed"]
    else:
        strategies = parse_strategies(args.strategy or "ddp")
    if args.gpus_per_cell < 1:
        raise UsageError(f"--gpus-per-cell must be >= 1, got {args.gpus_per_cell}")
    if args.world_sizes:
        world_sizes = parse_world_sizes(args.world_sizes)
    else:
        world_sizes = [launched] if launched else [args.gpus_per_cell]
    precision = args.precision or os.environ.get("ACCELERATE_MIXED_PRECISION") or "no"
    if precision not in PRECISIONS:
        raise UsageError(f"mixed precision {precision!r} from the launcher is not one of {', '.join(PRECISIONS)}")
    if args.pos_embed_resize not in ("bilinear", "bicubic"):
        raise UsageError(f"--pos-embed-resize must be bilinear or bicubic, got {args.pos_embed_resize!r}")
    pretrained = PretrainedFile.from_path(args.pretrained) if args.pretrained is not None else None
    return MatrixSpec(specs, expand_datasets(args.datasets), parse_seeds(args.seeds), args.preset, precision,
                      strategies, world_sizes, recipe_overrides(args), options, strategy_config,
                      pretrained=pretrained, pos_embed_resize=args.pos_embed_resize)


def select_cells(args: argparse.Namespace, cells):
    from bench.matrix import parse_shard, select_shard

    if args.shard:
        cells = select_shard(cells, *parse_shard(args.shard))
    if args.cell_ids:
        wanted = set(args.cell_ids.split(","))
        cells = [c for c in cells if c.cell_id in wanted]
        if not cells:
            raise UsageError(f"--cell-ids {args.cell_ids}: no such cell in this matrix")
    return cells


def run(args: argparse.Namespace) -> int:
    from bench.driver import launched_world_size
    from bench.matrix import build_cells
    from bench.strategy import process_key

    for name, least in (("workers", 0), ("checkpoint_every", 0), ("slots", 1), ("threads", 1)):
        value = getattr(args, name)
        if value is not None and value < least:
            raise UsageError(f"--{name.replace('_', '-')} must be >= {least}, got {value}")
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    launched = launched_world_size()
    if launched and args.parallel == "cells":
        raise UsageError("--parallel cells starts its own workers: run it with plain `python bench.py`, "
                         "not under accelerate launch/torchrun")
    cells = select_cells(args, build_cells(matrix_spec(args, launched)))
    if not cells:
        if not args.shard:
            raise UsageError("the matrix is empty")
        # an array with more tasks than cells: the spare tasks succeed with nothing to do
        print(f"fgbench: shard {args.shard} of this matrix has no cells; nothing to run", file=sys.stderr)
        return 0
    paths = data_options(args)
    if args.dry_run:
        return dry_run(cells, args)

    in_process = launched is not None or args.parallel == "data" or (
        args.parallel is None and all(c.world_size == 1 for c in cells) and len({process_key(c) for c in cells}) <= 1)
    if not in_process:
        return run_pool(cells, args, paths)
    return run_in_process(cells, args, paths)


def run_in_process(cells, args: argparse.Namespace, paths: dict) -> int:
    from bench.data.cache import default_cache_dir
    from bench.driver import accelerator_for, run_matrix, shutdown, split_by_process, summary_table
    from bench.runner import RunContext

    acc = accelerator_for(next((c for c in cells if c.world_size == (int(os.environ.get("WORLD_SIZE", "1")))), cells[0]))
    try:
        mine, others = split_by_process(cells, acc)
        if others and acc.is_main_process:
            print(f"fgbench: {len(others)} cell(s) need another process configuration (world size, strategy or "
                  f"DeepSpeed batch) and are not run here; run them with plain `python bench.py` (which starts "
                  f"workers) or in another launch", file=sys.stderr)
        workers = args.workers if args.workers is not None else (8 if acc.device.type == "cuda" else 0)
        cache_dir = None if args.no_cache else (args.cache_dir or default_cache_dir())
        ctx = RunContext(acc, args.data_root, args.results_dir, workers=workers, progress=not args.no_progress,
                         data_options=paths, cache_dir=cache_dir, checkpoint_every=args.checkpoint_every)
        outcome = run_matrix(mine, ctx, rerun=args.rerun) if mine else None
        if acc.is_main_process:
            report_outcome(cells, args, outcome.statuses if outcome else {})
        status = outcome.exit_status if outcome else 1
        return 1 if (others and status == 0) else status
    finally:
        shutdown(acc)


def run_pool(cells, args: argparse.Namespace, paths: dict) -> int:
    import torch

    from bench import records
    from bench.matrix import pending_cells
    from bench.pool import CellPool, device_slots
    from bench.signals import StopRequest

    from bench.driver import check_matrix_data, materialize_all

    materialize_all(cells, args.data_root)  # the driver checks the data once, before any worker starts
    check_matrix_data(cells, args.data_root, paths)
    widest = max(c.world_size for c in cells)
    if args.parallel == "cells":
        slots, at_once = device_slots(torch.cuda.device_count(), args.slots or 1), None
    else:  # cells that need a process group of their own, one at a time
        slots, at_once = device_slots(torch.cuda.device_count(), widest), 1
    records.remove_stale_temporaries(args.results_dir)
    todo, _ = pending_cells(cells, args.results_dir, args.rerun)
    skipped = len(cells) - len(todo)
    if skipped:
        print(f"fgbench: {skipped} of {len(cells)} cells already have a finished record (resume)")
    stop = StopRequest().install()
    try:
        pool = CellPool(todo, _worker_argv(args.raw_argv), args.results_dir, slots, progress=not args.no_progress,
                        stop=stop, max_running=at_once, cpu_threads=args.threads)
        pool.run()
    finally:
        stop.uninstall()
    statuses = {}
    for cell in cells:
        record = records.read_record(cell.record_path(args.results_dir))
        statuses[cell.cell_id] = record["status"] if record else "missing"
    report_outcome(cells, args, statuses)
    if stop.requested:
        return stop.exit_status
    return 0 if all(s == "ok" for s in statuses.values()) else 1


def _worker_argv(argv: list[str]) -> list[str]:
    """The user's flags minus those that only concern the driver."""
    drop_with_value = {"--parallel", "--slots", "--shard", "--cell-ids", "--world-sizes", "--gpus-per-cell", "--strategy"}
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
            continue
        name = item.split("=", 1)[0]
        if name in drop_with_value:
            skip = "=" not in item
            continue
        if name in ("--dry-run",):
            continue
        out.append(item)
    return out


def report_outcome(cells, args: argparse.Namespace, statuses: dict[str, str]) -> None:
    from bench.driver import summary_table

    print(summary_table(cells, args.results_dir))
    not_ok = [s for s in statuses.values() if s != "ok"]
    if not_ok:
        print(f"fgbench: {len(not_ok)} of {len(cells)} cells not ok ({', '.join(sorted(set(not_ok)))}); "
              f"see the records under {args.results_dir}/runs; --rerun failed retries them", file=sys.stderr)


def dry_run(cells, args: argparse.Namespace) -> int:
    from bench.driver import RANDOM_INIT_WARNING
    from bench.matrix import pending_cells

    todo, _ = pending_cells(cells, args.results_dir, args.rerun)
    pending = {c.cell_id for c in todo}
    for c in cells:
        r = c.recipe
        print(f"{c.cell_id}  {'pending' if c.cell_id in pending else 'done   '}  {c.describe()}  "
              f"{c.strategy} x{c.world_size}  img {r.img_size}/{r.resize_size}  steps {r.steps}  "
              f"lr {r.lr:g} ({c.recipe_sources['lr']})  batch {r.batch_size}x{c.world_size}x{r.grad_accum}")
    if any(c.backbone.pretrained is None for c in cells):
        print(RANDOM_INIT_WARNING, file=sys.stderr)
    return 0
