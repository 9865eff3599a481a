"""`bench.py list`: registered methods (variants, options) and dataset cards (aliases, sizes)."""

from __future__ import annotations

import argparse
import json

from bench.commands.common import add_card_arg


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_card_arg(p)


def run(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from bench.data import load_cards
    from methods import get_method, method_names

    methods = []
    for name in method_names():
        m = get_method(name)
        methods.append({"name": name, "in_all": m.in_all, "summary": m.summary, "variants": list(m.variants),
                        "options": dict(m.options), "reference": m.reference})
    datasets = [{"name": c.name, "title": c.title, "aliases": list(c.aliases), "format": c.format,
                 "num_classes": c.num_classes, "members": list(c.members), "splits": dict(c.splits)}
                for c in load_cards().values()]
    if args.json:
        print(json.dumps({"methods": methods, "datasets": datasets}, indent=2, default=str))
        return 0
    print(tabulate([[m["name"], ", ".join(m["variants"]) or "–",
                     ", ".join(f"{k}={v}" for k, v in m["options"].items()) or "–", m["summary"]] for m in methods],
                   headers=["method", "variants", "options (defaults)", "summary"]))
    print()
    print(tabulate([[d["name"], ", ".join(d["aliases"]) or "–", d["format"], d["num_classes"] or "–",
                     " / ".join(f"{k} {v}" for k, v in d["splits"].items()) or ", ".join(d["members"]) or "–",
                     d["title"]] for d in datasets],
                   headers=["dataset", "aliases", "format", "classes", "expected splits", "title"]))
    return 0
