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
        "resize_size": args.resize_size, "grad_accum": args.grad_accum,
    }
    out = parse_assignments(args.set, "--set")
    out.update({k: v for k, v in flags.items() if v is not None})
    return out


def run(args: argparse.Namespace) -> int:
    from bench.data import expand_datasets
    from bench.matrix import build_cells, check_option_overrides, parse_seeds
    from bench.recipe import parse_assignments
    from methods.pretrained import PretrainedFile

    specs = method_specs(args.methods)
    datasets = expand_datasets(args.datasets)
    seeds = parse_seeds(args.seeds)
    options = parse_assignments(args.opt, "--opt")
    check_option_overrides(specs, options)
    overrides = recipe_overrides(args)
    paths = data_options(args)
    if args.workers is not None and args.workers < 0:
        raise UsageError(f"--workers must be >= 0, got {args.workers}")
    pretrained = PretrainedFile.from_path(args.pretrained) if args.pretrained is not None else None

    def cells_for(precision: str, world_size: int):
        return build_cells(specs, datasets, seeds, args.preset, precision, "ddp", world_size, overrides, options,
                           pretrained=pretrained, pos_embed_resize=args.pos_embed_resize)

    if args.dry_run:
        precision = args.precision or os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
        return dry_run(cells_for(precision, int(os.environ.get("WORLD_SIZE", "1"))), args)

    from bench.data.cache import default_cache_dir
    from bench.driver import make_accelerator, run_matrix, shutdown, summary_table
    from bench.runner import RunContext

    acc = make_accelerator(args.precision)
    try:
        cells = cells_for(acc.mixed_precision, acc.num_processes)
        workers = args.workers if args.workers is not None else (8 if acc.device.type == "cuda" else 0)
        cache_dir = None if args.no_cache else (args.cache_dir or default_cache_dir())
        ctx = RunContext(acc, args.data_root, args.results_dir, workers=workers, progress=not args.no_progress,
                         data_options=paths, cache_dir=cache_dir)
        outcome = run_matrix(cells, ctx, rerun=args.rerun)
        if acc.is_main_process:
            print(summary_table(cells, args.results_dir))
            not_ok = [s for s in outcome.statuses.values() if s != "ok"]
            if not_ok:
                print(f"fgbench: {len(not_ok)} of {len(cells)} cells not ok ({', '.join(sorted(set(not_ok)))}); "
                      f"see the records under {args.results_dir}/runs; --rerun failed retries them", file=sys.stderr)
        return outcome.exit_status
    finally:
        shutdown(acc)


def dry_run(cells, args: argparse.Namespace) -> int:
    from bench.driver import RANDOM_INIT_WARNING
    from bench.matrix import pending_cells

    todo, _ = pending_cells(cells, args.results_dir, args.rerun)
    pending = {c.cell_id for c in todo}
    for c in cells:
        r = c.recipe
        print(f"{c.cell_id}  {'pending' if c.cell_id in pending else 'done   '}  {c.describe()}  "
              f"img {r.img_size}/{r.resize_size}  steps {r.steps}  lr {r.lr:g} ({c.recipe_sources['lr']})  "
              f"batch {r.batch_size}x{c.world_size}x{r.grad_accum}")
    if any(c.backbone.pretrained is None for c in cells):
        print(RANDOM_INIT_WARNING, file=sys.stderr)
    return 0
