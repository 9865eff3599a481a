"""`bench.py explain`: figures of what saved models compute on test images, for the report's gallery."""

from __future__ import annotations

import argparse
import sys

from bench.commands.common import add_data_args, add_results_dir, data_options
from bench.commands.eval import add_model_selection
from bench.errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_selection(p)
    p.add_argument("--datasets", default=None,
                   help="with --methods: models trained on these datasets; with --model: datasets to draw "
                        "(default: the model's own)")
    p.add_argument("--images", type=int, default=4, help="test images per dataset, spread over the split (>= 2)")
    add_data_args(p)
    add_results_dir(p)


def run(args: argparse.Namespace) -> int:
    import torch

    from bench.commands.eval import chosen_models
    from bench.data import expand_datasets
    from bench.explain import explain_model, update_manifest

    if args.images < 2:
        raise UsageError(f"--images must be >= 2 (Mix-ViT mixes a pair of images), got {args.images}")
    datasets = expand_datasets(args.datasets) if args.datasets else None
    models = chosen_models(args, None if args.model else datasets)
    if not args.model and not args.seeds:  # one column per method: its lowest seed
        firsts: dict = {}
        for m in models:
            firsts.setdefault((m.meta["method_label"], m.meta["dataset"]), m)
        models = list(firsts.values())
    paths = data_options(args)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    entries = []
    for saved in models:
        for dataset in (datasets if args.model and datasets else [saved.meta["dataset"]]):
            mine = explain_model(saved, dataset, args.images, args.results_dir, args.data_root, paths, device)
            correct = sum(e["correct"] for e in mine)
            print(f"{saved.meta['method_label']} on {dataset}: {len(mine)} figures ({mine[0]['kind']}), "
                  f"{correct} correct, under {(args.results_dir / mine[0]['file']).parent}")
            entries += mine
    path = update_manifest(args.results_dir, entries)
    print(f"wrote {len(entries)} figures listed in {path}; `bench.py report` adds them to index.html", file=sys.stderr)
    return 0
