"""LaTeX tables for papers: booktabs, one `table` per protocol, the best value per column in bold.

tabulate renders the rows (its `latex_raw` format, so our own escaping and `\\textbf` survive);
its three `\\hline`s become booktabs' `\\toprule`, `\\midrule` and `\\bottomrule`. Needs
`\\usepackage{booktabs}` in the preamble.
"""

from __future__ import annotations

import re

import pandas as pd
from tabulate import tabulate

from bench.report import fmt
from bench.report.wide import WideTable, wide_tables

_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
            "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "–": "--", "†": r"$^\dagger$",
            "·": r"$\cdot$"}
_SPECIAL_RE = re.compile("|".join(re.escape(k) for k in _SPECIAL))


def escape(text: str) -> str:
    """Escape LaTeX's special characters in plain text (method names, dataset names, notes)."""
    return _SPECIAL_RE.sub(lambda m: _SPECIAL[m.group(0)], str(text))


def _bold(text: str, on: bool) -> str:
    return rf"\textbf{{{text}}}" if on else text


def _tabular(table: WideTable) -> str:
    headers = ["Method"]
    for dataset in table.datasets:
        headers.append(escape(dataset))
        if dataset in table.paper_datasets:
            headers.append(escape(f"{dataset} (paper)"))
    best = {d: table.best(d) for d in table.datasets}
    best_paper = {d: table.best_paper(d) for d in table.paper_datasets}
    rows = []
    for method in table.methods:
        row = [escape(method)]
        for dataset in table.datasets:
            cell = table.cells.get((method, dataset))
            text = escape(fmt.mean_sd_n(cell, pm="±")).replace("±", r"$\pm$") if cell else "--"
            text = _bold(text, method in best[dataset]) + (r"$^*$" if (method, dataset) in table.ambiguous else "")
            row.append(text)
            if dataset in table.paper_datasets:
                paper = fmt.MISSING
                if cell and not fmt.is_missing(cell.get("paper_top1")):
                    paper = _bold(fmt.num(cell["paper_top1"]), method in best_paper[dataset])
                    paper += "" if cell.get("paper_verified") else "†"
                row.append(escape(paper) if paper == fmt.MISSING else paper.replace("†", r"$^\dagger$"))
        rows.append(row)
    body = tabulate(rows, headers=headers, tablefmt="latex_raw", disable_numparse=True,
                    colalign=["left"] + ["right"] * (len(headers) - 1))
    rules = iter([r"\toprule", r"\midrule", r"\bottomrule"])
    lines = [next(rules) if line.strip() == r"\hline" else line for line in body.splitlines()]
    if sum(line in (r"\toprule", r"\midrule", r"\bottomrule") for line in lines) != 3:
        raise RuntimeError("tabulate's latex_raw layout changed: expected exactly three \\hline rules")
    return "\n".join(lines)


CAPTION = ("Top-1 test accuracy (\\%) at the last training step, mean $\\pm$ sd (number of seeds; runs that gave "
           "no number). Best per column in bold. Paper: published numbers, mostly the best test accuracy over "
           "evaluations of one seed; $^\\dagger$ not yet checked against the paper.")


def render_latex(board: pd.DataFrame) -> str:
    """Every protocol's wide table as a LaTeX `table` float (booktabs)."""
    out = ["% fgbench leaderboard; needs \\usepackage{booktabs}"]
    for index, table in enumerate(wide_tables(board)):
        note = r" $^*$ several settings ran; shown: the one with most seeds." if table.ambiguous else ""
        out += [
            r"\begin{table}[t]",
            r"\centering",
            r"\small",
            f"\\caption{{{escape(table.title)}. {CAPTION}{note}}}",
            f"\\label{{tab:fgbench-{index}}}",
            _tabular(table),
            r"\end{table}",
            "",
        ]
    return "\n".join(out)
