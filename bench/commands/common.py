"""Arguments and parsing shared by several subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.errors import UsageError

PRECISIONS = ("no", "fp16", "bf16")


def add_results_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results-dir", type=Path, default=Path("results"), help="records and tables (default: results)")


def add_card_arg(p) -> None:
    p.add_argument("--card", action="append", default=[], type=Path, metavar="FILE",
                   help="a dataset card of your own (YAML, like datasets/cub.yaml; repeatable); folders of cards "
                        "can also be named by $FGBENCH_CARDS")


def add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    add_card_arg(g)
    g.add_argument("--data-root", type=Path, default=Path("data"), help="folder holding the datasets (default: data)")
    g.add_argument("--data-path", action="append", default=[], metavar="NAME=DIR",
                   help="folder of one dataset (or its parent, or a parquet file), overriding the search under "
                        "--data-root (repeatable)")
    g.add_argument("--data-opt", action="append", default=[], metavar="NAME.KEY=VALUE",
                   help="reader option of one dataset, e.g. cotton.label_offset=0, cub.format=hf, "
                        "cub.label_column=label (repeatable; see README, Datasets)")


def data_options(args: argparse.Namespace) -> dict[str, dict]:
    """`--data-path name=DIR` and `--data-opt name.key=value` -> {canonical dataset name: {key: value}}."""
    from bench.data import get_card
    from bench.recipe import parse_assignments

    out: dict[str, dict] = {}
    for name, path in parse_assignments(args.data_path, "--data-path").items():
        card = get_card(name)
        if card.is_group:
            raise UsageError(f"--data-path names one dataset, and {card.name} is a group of {', '.join(card.members)}; "
                             "use --data-root, or one --data-path per member")
        out.setdefault(card.name, {})["path"] = str(path)
    for target, value in parse_assignments(args.data_opt, "--data-opt").items():
        name, dot, key = target.rpartition(".")
        if not dot or not name or not key:
            raise UsageError(f"--data-opt expects NAME.KEY=VALUE (e.g. cotton.label_offset=0), got {target!r}")
        card = get_card(name)
        for member in card.members or (card.name,):  # an option for a group applies to each member
            out.setdefault(get_card(member).name, {})[key] = value
    return out


def method_specs(spec: str):
    """`--methods` -> [(adapter, variant or None)], `all` expanded, duplicates dropped."""
    from methods import method_names, parse_method_spec

    items = [s.strip() for s in spec.split(",") if s.strip()]
    if not items:
        raise UsageError("--methods is empty; give a comma list of methods or 'all'")
    out = []
    for item in items:
        for one in (method_names(only_in_all=True) if item == "all" else [item]):
            adapter, variant = parse_method_spec(one)
            if all((a.name, v) != (adapter.name, variant) for a, v in out):
                out.append((adapter, variant))
    return out


def drop_flags(argv: list[str], flags: dict[str, bool]) -> list[str]:
    """`argv` without the named flags, in both `--flag value` and `--flag=value` spellings; the
    mapping says whether each flag takes a value (so that its value goes too)."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
            continue
        name = item.split("=", 1)[0]
        if name in flags:
            skip = flags[name] and "=" not in item
            continue
        out.append(item)
    return out
