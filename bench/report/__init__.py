"""Results that can be published: seed statistics, paper-vs-ours tables, LaTeX/Markdown, HTML.

Everything is a pure function of the records directory (`bench.py report` is idempotent):
`runs` flattens records, `stats` holds the statistics, `board` builds the long leaderboard,
`paper` the published numbers, `markdown`/`latex`/`html` render, `write` writes the files.
"""

from bench.report.board import BOARD_COLUMNS, leaderboard
from bench.report.markdown import render_markdown, render_report_markdown
from bench.report.paper import load_paper_results
from bench.report.runs import RUN_COLUMNS, curves_frame, runs_frame
from bench.report.write import DEFAULT_BASELINE, resolve_baseline, write_report

__all__ = [
    "BOARD_COLUMNS", "DEFAULT_BASELINE", "RUN_COLUMNS", "curves_frame", "leaderboard", "load_paper_results",
    "render_markdown", "render_report_markdown", "resolve_baseline", "runs_frame", "write_report",
]
