"""`bench.py eval`: re-evaluate saved models (`--save-model`) on a dataset's test split."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.commands.common import PRECISIONS, add_data_args, add_results_dir, data_options
from bench.errors import UsageError


def add_model_selection(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("models")
    g.add_argument("--model", action="append", type=Path, default=[], metavar="DIR",
                   help="a saved model folder (results/models/<cell_id>; repeatable)")
    g.add_argument("--methods", default=None,
                   help="instead of --model: the saved models of these methods (comma list or 'all') in --results-dir")
    g.add_argument("--seeds", default=None, help="with --methods: only these seeds (default: all saved)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_selection(p)
    p.add_argument("--datasets", default=None,
                   help="comma list of datasets to evaluate on (default: each model's own); class counts must match")
    p.add_argument("--precision", choices=PRECISIONS, default=None, help="mixed precision (default: the model's)")
    p.add_argument("--eval-batch-size", type=int, default=None, help="default: the model's recipe")
    p.add_argument("--img-size", type=int, default=None, help="must equal the model's (checked)")
    p.add_argument("--workers", type=int, default=0, help="data-loader worker processes")
    p.add_argument("--cache-dir", type=Path, default=None, help="decode-and-resize cache folder")
    p.add_argument("--no-cache", action="store_true", help="decode and resize every image")
    add_data_args(p)
    add_results_dir(p)


def chosen_models(args: argparse.Namespace, datasets: list[str] | None):
    """`--model` folders, or the saved models of `--methods` in the results folder."""
    from bench.matrix import parse_seeds
    from bench.models import open_model, select_models

    if args.model and args.methods:
        raise UsageError("give --model DIR or --methods, not both")
    if args.model:
        return [open_model(d) for d in args.model]
    seeds = parse_seeds(args.seeds) if args.seeds else None
    return select_models(args.results_dir, args.methods or "all", datasets, seeds)


def run(args: argparse.Namespace) -> int:
    from bench.data import expand_datasets
    from bench.data.cache import default_cache_dir
    from bench.driver import shutdown
    from bench.runner import RunContext
    from bench.strategy import make_accelerator

    if args.eval_batch_size is not None and args.eval_batch_size < 1:
        raise UsageError(f"--eval-batch-size must be >= 1, got {args.eval_batch_size}")
    if args.workers < 0:
        raise UsageError(f"--workers must be >= 0, got {args.workers}")
    datasets = expand_datasets(args.datasets) if args.datasets else None
    models = chosen_models(args, None if args.model else datasets)
    paths = data_options(args)
    precision = args.precision or models[0].meta["precision"]
    acc = make_accelerator("ddp", precision)
    try:
        cache_dir = None if args.no_cache else (args.cache_dir or default_cache_dir())
        ctx = RunContext(acc, args.data_root, args.results_dir, workers=args.workers, progress=False,
                         data_options=paths, cache_dir=cache_dir)
        for saved in models:
            for dataset in datasets or [saved.meta["dataset"]]:
                record = evaluate_one(saved, dataset, ctx, args)
                if acc.is_main_process:
                    print(summary_line(record))
        return 0
    finally:
        shutdown(acc)


def evaluate_one(saved, dataset: str, ctx, args: argparse.Namespace) -> dict:
    from bench.evaluation import evaluate_saved

    return evaluate_saved(saved, dataset, ctx, eval_batch_size=args.eval_batch_size, img_size=args.img_size)


def summary_line(record: dict) -> str:
    acc = record["accuracy"]
    line = (f"{record['method_label']} (trained on {record['trained_on']}, seed {record['seed']}, {record['cell_id']}) "
            f"on {record['dataset']}: top-1 {acc['top1']:.4f}%, top-5 {acc['top5']:.4f}% over {acc['n_evaluated']}")
    ref = record.get("training_record")
    if ref and ref.get("top1_last") is not None:
        line += f"; record's last-step top-1 {ref['top1_last']:.4f}% ({'identical' if ref['identical'] else 'DIFFERS'})"
    return line
