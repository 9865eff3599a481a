"""`bench.py report`: rebuild every table and the HTML page from the records (idempotent)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.commands.common import add_results_dir
from bench.errors import UsageError

# --format -> module and function that render the leaderboard for printing
FORMATS = {
    "markdown": ("bench.report.markdown", "render_report_markdown"),
    "latex": ("bench.report.latex", "render_latex"),
    "csv": ("bench.report.write", "render_csv"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_results_dir(p)
    p.add_argument("--baseline", default=None, metavar="METHOD",
                   help="method (or method:variant) the others are compared with, paired by seed (default: vit when "
                        "it has records; 'none' for no comparison)")
    p.add_argument("--format", choices=FORMATS, default="markdown",
                   help="what to print: the wide Markdown tables, the LaTeX tables, or the leaderboard CSV "
                        "(every format is written to the results folder either way)")
    p.add_argument("--paper", type=Path, default=None, metavar="FILE",
                   help="published numbers to show beside ours "
                        "(default: the reference_results.yaml shipped with fgbench)")
    p.add_argument("--no-paper", action="store_true", help="leave the paper columns out")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="write the tables and the HTML page here (default: the results folder; use it when that "
                        "folder is read-only)")


def run(args: argparse.Namespace) -> int:
    import importlib

    from bench.report import resolve_baseline, runs_frame, write_report
    from bench.outputs import output_problem
    from bench.report.dataversions import mixed_data_warnings
    from bench.resume import unreadable_records

    if args.paper is not None and args.no_paper:
        raise UsageError("--paper and --no-paper contradict each other; give one")
    if not args.results_dir.is_dir():
        raise UsageError(f"--results-dir {args.results_dir} does not exist; expected the folder runs wrote "
                         f"their records to (default: results)")
    out = args.out if args.out is not None else args.results_dir
    problem = output_problem(out)
    if problem:
        hint = "" if args.out is not None else "; pass --out DIR to write the tables elsewhere"
        raise UsageError(f"{'--out' if args.out is not None else '--results-dir'} {out} {problem}; the report "
                         f"needs a writable folder{hint}")
    for path, why in unreadable_records(args.results_dir).items():
        print(f"fgbench: warning: {path} is not a readable record ({why}); left out of the report", file=sys.stderr)
    runs = runs_frame(args.results_dir)
    for line in mixed_data_warnings(runs):
        print(line, file=sys.stderr)
    labels = set(runs["method_label"].dropna())
    baseline = resolve_baseline(args.baseline, labels)
    board, paths = write_report(args.results_dir, baseline=baseline, paper_path=args.paper,
                                with_paper=not args.no_paper, out_dir=out)
    module, function = FORMATS[args.format]
    print(getattr(importlib.import_module(module), function)(board).rstrip("\n"))
    if not labels:
        print(f"fgbench: no records under {args.results_dir}/runs; the tables are empty", file=sys.stderr)
    print("wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)
    return 0
