"""`bench.py [run]`: expand the matrix, skip finished cells, run the rest, print the table."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bench.commands.common import PRECISIONS, add_data_args, add_results_dir, data_options, drop_flags, method_specs
from bench.errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("matrix")
    g.add_argument("--methods", default="vit", help="comma list of methods (name or name:variant), or 'all'")
    g.add_argument("--datasets", default="demo", help="comma list of datasets or aliases, or 'all'")
    g.add_argument("--seeds", default="0", help="comma list or range of seeds, e.g. 0,1,2 or 0-4")
    g.add_argument("--preset", default="tiny",
                   help="tiny (CPU scale), base (ViT-B/16), base32 (ViT-B/32), base_r50 (R50+ViT-B/16, the released "
                        "code's ResNetV2) or base_r50_timm (timm's TF-same ResNetV2); paper recipe")
    g.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="mixed precision (default: accelerate's launch setting, else no)")
    g.add_argument("--rerun", choices=("none", "failed", "stale", "all"), default="none",  # see bench/resume.py
                   help="re-run cells that already have a record: none (resume; records made from other data or "
                        "weights are always re-run), failed (also the not-ok ones), stale (only those made from "
                        "other data or weights), all")
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
    from bench.launchers import add_arguments as add_launcher_arguments

    add_launcher_arguments(p)
    o = p.add_argument_group("output")
    o.add_argument("--progress", choices=("auto", "bar", "plain", "none"), default="auto",
                   help="bar: tqdm bars; plain: lines without carriage returns (cell start/finish, evaluations, a "
                        "step line every 30 s) for logs; none: cell lines only; auto: bar on a terminal, else plain")
    o.add_argument("--no-progress", dest="progress", action="store_const", const="none", help="same as --progress none")
    o.add_argument("--log-with", default=None, metavar="T[,T...]",
                   help="experiment trackers, one run per cell: tensorboard, mlflow, wandb, aim, trackio, or all "
                        "installed; offline by default (files under the results dir)")
    o.add_argument("--save-model", action="store_true",
                   help="keep each finished cell's final weights (safetensors) and description under "
                        "<results>/models/<cell_id> for `bench.py eval` and `bench.py explain`")
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
    from bench.lifeline import watch_driver
    from bench.matrix import build_cells
    from bench.strategy import process_key
    from bench.trackers import parse_log_with

    watch_driver()  # a --parallel cells worker: end with the driver that started it

    for name, least in (("workers", 0), ("checkpoint_every", 0), ("slots", 1), ("threads", 1)):
        value = getattr(args, name)
        if value is not None and value < least:
            raise UsageError(f"--{name.replace('_', '-')} must be >= {least}, got {value}")
    parse_log_with(args.log_with)  # a missing tracker package fails here, before any cell
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    launched = launched_world_size()
    if launched and args.parallel == "cells":
        raise UsageError("--parallel cells starts its own workers: run it with plain `python bench.py`, "
                         "not under accelerate launch/torchrun")
    if args.launcher:
        from bench.launchers import check_arguments

        check_arguments(args)
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
    check_run_outputs(args)
    if args.launcher:
        return run_launcher(cells, args, paths)

    in_process = launched is not None or args.parallel == "data" or (
        args.parallel is None and all(c.world_size == 1 for c in cells) and len({process_key(c) for c in cells}) <= 1)
    if not in_process:
        return run_pool(cells, args, paths)
    return run_in_process(cells, args, paths)


def check_run_outputs(args: argparse.Namespace) -> None:
    """Every folder a run writes to, checked before any data is read or model built (see bench.outputs)."""
    from bench.data.cache import default_cache_dir
    from bench.outputs import check_output_dirs

    results = args.results_dir
    check_output_dirs([
        ("--results-dir", results), ("--results-dir", results / "runs"), ("--results-dir", results / "checkpoints"),
        ("--results-dir", results / "logs"), ("--results-dir", results / "claims"),
        ("--cache-dir", None if args.no_cache else (args.cache_dir or default_cache_dir())),
    ])


def run_in_process(cells, args: argparse.Namespace, paths: dict) -> int:
    from bench.data.cache import default_cache_dir
    from bench.driver import accelerator_for, run_matrix, shutdown, split_by_process, summary_table
    from bench.progress import resolve_style
    from bench.runner import RunContext
    from bench.trackers import parse_log_with

    log_with = parse_log_with(args.log_with)
    acc = accelerator_for(next((c for c in cells if c.world_size == (int(os.environ.get("WORLD_SIZE", "1")))), cells[0]),
                          log_with=log_with, project_dir=args.results_dir)
    try:
        mine, others = split_by_process(cells, acc)
        if others and acc.is_main_process:
            print(f"fgbench: {len(others)} cell(s) need another process configuration (world size, strategy or "
                  f"DeepSpeed batch) and are not run here; run them with plain `python bench.py` (which starts "
                  f"workers) or in another launch", file=sys.stderr)
        workers = args.workers if args.workers is not None else (8 if acc.device.type == "cuda" else 0)
        cache_dir = None if args.no_cache else (args.cache_dir or default_cache_dir())
        style = resolve_style(args.progress)
        ctx = RunContext(acc, args.data_root, args.results_dir, workers=workers, progress=style != "none",
                         progress_style=style, data_options=paths, cache_dir=cache_dir,
                         checkpoint_every=args.checkpoint_every, log_with=log_with,
                         save_model=args.save_model)
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
    from bench.claims import CellClaims
    from bench.pool import CellPool, device_slots
    from bench.progress import resolve_style
    from bench.resume import plan_resume
    from bench.signals import StopRequest

    from bench.driver import check_matrix_data, materialize_all

    materialize_all(cells, args.data_root)  # the driver checks the data once, before any worker starts
    fingerprints = check_matrix_data(cells, args.data_root, paths)
    widest = max(c.world_size for c in cells)
    if args.parallel == "cells":
        slots, at_once = device_slots(torch.cuda.device_count(), args.slots or 1), None
    else:  # cells that need a process group of their own, one at a time
        slots, at_once = device_slots(torch.cuda.device_count(), widest), 1
    records.remove_stale_temporaries(args.results_dir)
    plan = plan_resume(cells, args.results_dir, args.rerun, fingerprints)
    for line in plan.notes(cells):
        print(line, file=sys.stderr)
    todo = plan.todo
    skipped = len(cells) - len(todo)
    if skipped:
        print(f"fgbench: {skipped} of {len(cells)} cells already have a finished record (resume)")
    stop = StopRequest().install()
    try:
        style = resolve_style(args.progress)
        pool = CellPool(todo, _worker_argv(args.raw_argv), args.results_dir, slots, progress=style != "none",
                        stop=stop, max_running=at_once, progress_style=style, cpu_threads=args.threads,
                        claims=CellClaims(args.results_dir, args.rerun, fingerprints))
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


def run_launcher(cells, args: argparse.Namespace, paths: dict) -> int:
    """`--launcher`: check the data here (bad input fails before anything is queued), then submit."""
    from bench import launchers, records
    from bench.driver import check_matrix_data, materialize_all

    materialize_all(cells, args.data_root)
    check_matrix_data(cells, args.data_root, paths)
    status = launchers.launch(cells, args)
    if args.launcher == "slurm":
        return status
    statuses = {}
    for cell in cells:
        record = records.read_record(cell.record_path(args.results_dir))
        statuses[cell.cell_id] = record["status"] if record else "missing"
    report_outcome(cells, args, statuses)
    return status if status else (0 if all(s == "ok" for s in statuses.values()) else 1)


WORKER_DROPPED_FLAGS = {**dict.fromkeys(("--parallel", "--slots", "--shard", "--cell-ids", "--world-sizes",
                                          "--gpus-per-cell", "--strategy"), True), "--dry-run": False}


def _worker_argv(argv: list[str]) -> list[str]:
    """The user's flags minus those that only concern the driver."""
    return drop_flags(argv, WORKER_DROPPED_FLAGS)


def report_outcome(cells, args: argparse.Namespace, statuses: dict[str, str]) -> None:
    from bench.claims import live_holder
    from bench.driver import summary_table

    print(summary_table(cells, args.results_dir))
    elsewhere = "training in another command"
    not_ok = [elsewhere if s == "missing" and live_holder(args.results_dir, cid) else s
              for cid, s in statuses.items() if s != "ok"]
    if not_ok:
        kinds = set(not_ok)
        what = []
        if kinds & {"interrupted", "missing"}:
            what.append("running the same command again resumes interrupted cells and runs missing ones")
        if elsewhere in kinds:
            what.append("a cell training in another command gets its record when that command finishes it")
        if kinds - {"interrupted", "missing", elsewhere}:
            what.append("--rerun failed retries the failed ones")
        print(f"fgbench: {len(not_ok)} of {len(cells)} cells not ok ({', '.join(sorted(kinds))}); see the records "
              f"under {args.results_dir}/runs; {'; '.join(what)}", file=sys.stderr)


def dry_run(cells, args: argparse.Namespace) -> int:
    from bench.driver import RANDOM_INIT_WARNING
    from bench.resume import open_fingerprints, plan_resume

    fingerprints = open_fingerprints(cells, args.data_root, data_options(args))
    plan = plan_resume(cells, args.results_dir, args.rerun, fingerprints)
    for line in plan.notes(cells, dry_run=True):
        print(line, file=sys.stderr)
    pending = {c.cell_id for c in plan.todo}
    for c in cells:
        r = c.recipe
        state = "stale  " if c.cell_id in plan.stale else "pending" if c.cell_id in pending else "done   "
        print(f"{c.cell_id}  {state}  {c.describe()}  "
              f"{c.strategy} x{c.world_size}  img {r.img_size}/{r.resize_size}  steps {r.steps}  "
              f"lr {r.lr:g} ({c.recipe_sources['lr']})  batch {r.batch_size}x{c.world_size}x{r.grad_accum}")
    if any(c.backbone.pretrained is None for c in cells):
        print(RANDOM_INIT_WARNING, file=sys.stderr)
    return 0
