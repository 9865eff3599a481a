"""Command line: `bench.py [run] ...`, `bench.py list`, `bench.py report`, ...

Each subcommand lives in `bench/commands/<name>.py` with `add_arguments(parser)` and
`run(args) -> int`; `COMMANDS` lists them. Bad input (unknown names, malformed flags, missing
datasets) prints one line and exits with status 2. A run exits 0 when every cell of its matrix
has an ok record, 1 otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

from bench.errors import UsageError, one_line

# name -> (module under bench.commands, help); the first is the default command
COMMANDS = {
    "run": "run a benchmark matrix (the default command)",
    "list": "methods (with variants and options) and datasets (with aliases)",
    "report": "rebuild leaderboard tables from the records",
    "data": "verify datasets on disk and print their statistics (--benchmark: input-pipeline speed)",
    "speed": "training/inference throughput, memory and MFU of every method, eager and fused side by side",
    "eval": "re-evaluate saved models (--save-model) on a dataset's test split, exactly as the runner does",
    "explain": "figures of what each saved model computes on test images (attention, selected tokens, boxes)",
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises UsageError (one line, exit 2) instead of printing usage and exiting."""

    def error(self, message: str):  # noqa: D102
        raise UsageError(message)


def command_module(name: str):
    return importlib.import_module(f"bench.commands.{name}")


def prog_name() -> str:
    """`fgbench` when started as the installed console script, else `bench.py`."""
    return "fgbench" if os.path.basename(sys.argv[0] or "") == "fgbench" else "bench.py"


def build_parser() -> ArgumentParser:
    from bench import __version__

    parser = ArgumentParser(prog=prog_name(), description="fgbench: fine-grained ViT methods, benchmarked honestly.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=ArgumentParser)
    for name, help_text in COMMANDS.items():
        command_module(name).add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    argv = list(argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv = ["run", *argv]
    args = build_parser().parse_args(argv)
    args.raw_argv = argv[1:]  # the subcommand's own flags, for re-launching workers with them
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse_args(argv)
        from bench.data.cards import use_card_files

        use_card_files(getattr(args, "card", None) or [])  # --card FILE: the user's own datasets
        return command_module(args.command).run(args)
    except UsageError as exc:
        print(f"{prog_name()}: error: {one_line(str(exc))}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print(f"{prog_name()}: interrupted", file=sys.stderr)
        return 130
