"""`bench.py report`: rebuild every table from the records (idempotent)."""

from __future__ import annotations

import argparse
import sys

from bench.commands.common import add_results_dir


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_results_dir(p)


def run(args: argparse.Namespace) -> int:
    from bench.report import render_markdown, write_report

    board, paths = write_report(args.results_dir)
    print(render_markdown(board))
    print("wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)
    return 0
