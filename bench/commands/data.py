"""`bench.py data`: verify datasets on disk and print their statistics; `--benchmark` times the input pipeline.

For each dataset and split: number of images, expected number (from the card), classes seen,
the 0-based label range, missing and undecodable files (first few listed) and a content hash of
the split list. Exit status 2 (one line on stderr) when any dataset is broken; warnings (split
sizes that differ from the card) are part of the report.
"""

from __future__ import annotations

import argparse
import json
import sys

from bench.commands.common import add_data_args, data_options
from bench.errors import DatasetError, UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--datasets", default=None, help="comma list of datasets or aliases (groups expand), or 'all'")
    add_data_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable output (the same statistics)")
    p.add_argument("--no-decode", action="store_true",
                   help="do not decode every image (the runner's pre-flight checks: lists, labels, files exist)")
    b = p.add_argument_group("input-pipeline benchmark (--benchmark)")
    b.add_argument("--benchmark", action="store_true",
                   help="print images/s of the train pipeline without and with the decode-and-resize cache, on a "
                        "generated set of JPEGs (or on the train split of --datasets)")
    b.add_argument("--bench-images", type=int, default=200, help="images to time (default 200)")
    b.add_argument("--bench-size", default="1000x800", metavar="WxH", help="generated image size (default 1000x800)")
    b.add_argument("--resize-size", type=int, default=600, help="Resize((R, R)) (default 600)")
    b.add_argument("--img-size", type=int, default=448, help="crop size S (default 448)")
    b.add_argument("--batch-size", type=int, default=16, help="(default 16)")
    b.add_argument("--workers", type=int, default=None, help="loader worker processes (default: CPU cores, at most 8)")
    b.add_argument("--cache-dir", default=None, help="cache folder (default: a temporary folder, removed after)")


def run(args: argparse.Namespace) -> int:
    if args.benchmark:
        from bench.data.pipebench import run_benchmark

        return run_benchmark(args)
    if not args.datasets:
        raise UsageError("bench.py data needs --datasets NAME[,NAME...] (or --benchmark)")
    from bench.data import expand_datasets, get_card, materialize
    from bench.data.checks import check_dataset

    names = expand_datasets(args.datasets)
    options = data_options(args)
    progress = sys.stderr.isatty() and not args.json
    reports = []
    for name in names:
        card = get_card(name)
        materialize(card, args.data_root)
        report, _ = check_dataset(card, args.data_root, options.get(card.name), decode=not args.no_decode,
                                  progress=progress)
        reports.append(report)
        if not args.json:
            print(render(report))
    if args.json:
        print(json.dumps({"datasets": [r.to_dict() for r in reports], "decoded": not args.no_decode}, indent=2))
    broken = [r for r in reports if not r.ok]
    if len(broken) == 1:
        broken[0].raise_if_broken()
    if broken:
        raise DatasetError(f"{len(broken)} datasets are broken: " + "; ".join(r.errors[0] for r in broken))
    return 0


def render(report) -> str:
    """A report as text: one table row per split, then problems and warnings."""
    from tabulate import tabulate

    head = f"{report.name}: " + (f"{report.format} at {report.root} ({report.num_classes} classes)"
                                 if report.splits else "BROKEN")
    rows = [[s.name, s.images, "–" if s.expected is None else s.expected, s.classes_seen,
             f"{s.label_min}..{s.label_max}", s.missing, "–" if s.unreadable is None else s.unreadable, s.hash]
            for s in report.splits.values()]
    lines = [head]
    if rows:
        table = tabulate(rows, headers=["split", "images", "expected", "classes", "labels", "missing", "unreadable",
                                        "hash"], disable_numparse=True)
        lines += ["  " + line for line in table.splitlines()]
    for s in report.splits.values():
        if s.missing_first:
            more = " ..." if s.missing > len(s.missing_first) else ""
            lines.append(f"  missing in {s.name}: {', '.join(s.missing_first)}{more}")
        if s.unreadable_first:
            lines.append(f"  unreadable in {s.name}: {'; '.join(s.unreadable_first)}"
                         f"{' ...' if s.unreadable > len(s.unreadable_first) else ''}")
    lines += [f"  warning: {w}" for w in report.warnings]
    lines += [f"  error: {e}" for e in report.errors]
    return "\n".join(lines)
