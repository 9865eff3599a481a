"""`results/index.html`: a static leaderboard page, one file, no server, no external assets.

Per dataset: a sortable table (click a column header), the accuracy-vs-throughput scatter with the
Pareto front, every seed's accuracy, training curves when recorded, and the provenance of every run
(git sha, versions, device, precision, weights and split hashes) with a link to its record file.
Links are relative to the results folder, so the folder can be copied or served as it is.
"""

from __future__ import annotations

import re
from html import escape
from typing import Any, Iterable

import pandas as pd

from bench import __version__
from bench.report import fmt
from bench.report.markdown import NOTES, wide_rows
from bench.report.plots import curves_svg, scatter_svg, setting_labels, strip_svg
from bench.report.wide import wide_tables

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d1d1f}
body{margin:0 auto;max-width:1400px;padding:0 1.5rem 3rem}
h1{margin:1.2rem 0 .4rem}h2{margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
p.note{color:#444;max-width:70rem}nav a{margin-right:1rem}
.scroll{overflow-x:auto}
table{border-collapse:collapse;margin:.6rem 0;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d8d8d8;padding:.25rem .5rem;text-align:right;white-space:nowrap}
th{background:#f3f3f5;position:sticky;top:0}td.text,th.text{text-align:left}
th button{all:unset;cursor:pointer;font-weight:600}th button:focus-visible{outline:2px solid #36c}
th[aria-sort=ascending] button::after{content:" \\25B2"}th[aria-sort=descending] button::after{content:" \\25BC"}
tr.best td{background:#eef7ee}td.bad{color:#a40000}td.paper{color:#555;font-style:italic}
.figures{display:flex;flex-wrap:wrap;gap:1rem;align-items:flex-start}
figure{margin:.5rem 0;border:1px solid #eee;padding:.4rem}figure svg{max-width:100%;height:auto;display:block}
figcaption{font-size:12px;color:#555;max-width:40rem}details{margin:.6rem 0}summary{cursor:pointer;font-weight:600}
""".strip()

SORT_SCRIPT = """
(function () {
  function key(cell) {
    var raw = cell.getAttribute("data-sort");
    if (raw === null || raw === "") { return null; }
    var value = Number(raw);
    return isNaN(value) ? raw.toLowerCase() : value;
  }
  function compare(a, b) {
    if (typeof a === "number" && typeof b === "number") { return a - b; }
    return String(a).localeCompare(String(b));
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var headers = table.querySelectorAll("thead th");
    headers.forEach(function (th, column) {
      var button = th.querySelector("button");
      if (!button) { return; }
      button.addEventListener("click", function () {
        var ascending = th.getAttribute("aria-sort") !== "ascending";
        headers.forEach(function (other) { other.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (r1, r2) {
          var a = key(r1.cells[column]), b = key(r2.cells[column]);
          if (a === null || b === null) { return (a === null) - (b === null); }
          return ascending ? compare(a, b) : compare(b, a);
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  });
})();
""".strip()


def _anchor(name: str) -> str:
    return "ds-" + re.sub(r"[^a-z0-9_-]+", "-", str(name).lower())


def _cell(text: Any, sort: Any = None, cls: str = "", title: str | None = None) -> str:
    """A `<td>`; `sort` (a number or text) is what the column sorts on."""
    attrs = []
    if cls:
        attrs.append(f'class="{cls}"')
    if sort is not None and not fmt.is_missing(sort):
        attrs.append(f'data-sort="{escape(str(sort))}"')
    if title:
        attrs.append(f'title="{escape(title)}"')
    return f"<td {' '.join(attrs)}>{text}</td>" if attrs else f"<td>{text}</td>"


def _table(headers: Iterable[tuple[str, bool]], rows: Iterable[str], sortable: bool = True) -> str:
    """`headers`: (label, is_text). Sortable tables get a button per header."""
    ths = []
    for label, is_text in headers:
        inner = f'<button type="button">{escape(label)}</button>' if sortable else escape(label)
        ths.append(f'<th scope="col"{" class=text" if is_text else ""}>{inner}</th>')
    cls = ' class="sortable"' if sortable else ""
    return (f'<div class="scroll"><table{cls}><thead><tr>{"".join(ths)}</tr></thead>'
            f'<tbody>\n{chr(10).join(rows)}\n</tbody></table></div>')


def provenance(run: dict[str, Any]) -> str:
    """How one number was made, in one line (the tooltip of its record link)."""
    sha = fmt.text(run.get("git_sha"))
    parts = [f"git {sha[:10] or fmt.MISSING}{' (dirty)' if run.get('git_dirty') is True else ''}",
             f"fgbench {fmt.text(run.get('fgbench_version')) or fmt.MISSING}"]
    parts += [f"{lib} {fmt.text(run.get(f'{lib}_version')) or fmt.MISSING}" for lib in ("torch", "timm", "accelerate")]
    parts += [f"device {fmt.text(run.get('device_name')) or fmt.MISSING}",
              f"precision {fmt.text(run.get('mixed_precision')) or fmt.MISSING}",
              f"weights sha256 {fmt.text(run.get('pretrained_sha256')) or fmt.MISSING}",
              f"splits {fmt.text(run.get('split_hashes')) or fmt.MISSING}"]
    return " · ".join(parts)


def _record_links(runs: pd.DataFrame) -> str:
    links = []
    for run in runs.sort_values(["seed", "record"]).to_dict("records"):
        seed = "?" if fmt.is_missing(run["seed"]) else int(run["seed"])
        status = "" if run["status"] == "ok" else f" ({run['status']})"
        links.append(f'<a href="{escape(run["record"])}" title="{escape(provenance(run))}">s{seed}{escape(status)}</a>')
    return " ".join(links)


BOARD_HEADERS = [("Rank", False), ("Method", True), ("Preset", True), ("Precision", True), ("Seeds ok", False),
                 ("Not ok", True), ("Top-1 % (last)", False), ("95% CI", False), ("Min–max", False),
                 ("Δ vs baseline", False), ("Δ 95% CI", False), ("P(>base)", False), ("Verdict", True),
                 ("Paper", False), ("Top-5 %", False), ("Best-of-evals % (optimistic)", False),
                 ("Train img/s median", False), ("Train img/s p90", False), ("Train CV", False),
                 ("Eval img/s", False), ("Peak MB", False), ("Params (M)", False), ("Pareto", True),
                 ("Records (hover: provenance)", True)]


def _board_row(row: dict[str, Any], runs: pd.DataFrame) -> str:
    cv = row["train_sps_cv"]
    cv_text = fmt.MISSING if fmt.is_missing(cv) else f"{100 * cv:.1f}%" + (" noisy" if row["train_sps_noisy"] else "")
    paper_title = None
    if not fmt.is_missing(row["paper_top1"]):
        checked = "verified" if row["paper_verified"] else "not verified"
        paper_title = (f"{fmt.text(row['paper_source'])}; backbone {fmt.text(row['paper_backbone'])}; "
                       f"selection {fmt.text(row['paper_selection'])}; {checked} ({fmt.text(row['paper_confidence'])})")
    paper = fmt.num(row["paper_top1"]) + ("" if fmt.is_missing(row["paper_top1"]) or row["paper_verified"] else "†")
    if fmt.text(row["paper_url"]) and not fmt.is_missing(row["paper_top1"]):  # the source opens to the table quoted
        paper = f'<a href="{escape(fmt.text(row["paper_url"]))}">{paper}</a>'
    mem = fmt.num(row["peak_mem_mb_median"], 0) + (" RSS" if row["mem_kind"] == "cpu_rss" else "")
    top1 = escape(fmt.mean_sd_n(row).rsplit(" (", 1)[0])
    delta_title = None
    if fmt.text(row["baseline"]):
        delta_title = f"vs {row['baseline']}, {fmt.count(row['delta_n'])} paired seeds"
    not_ok = fmt.not_ok(row)
    cells = [
        _cell(fmt.num(row["rank"], 0), row["rank"]),
        _cell(escape(fmt.text(row["method_label"])), row["method_label"], "text"),
        _cell(escape(fmt.text(row["preset"])), row["preset"], "text"),
        _cell(escape(fmt.text(row["precision"])), row["precision"], "text"),
        _cell(fmt.count(row["n_ok"]), row["n_ok"]),
        _cell(escape(not_ok), row["n_runs"] - row["n_ok"], "text bad" if not_ok else "text"),
        _cell(top1, row["top1_mean"]),
        _cell(escape(fmt.accuracy_interval(row)), row["top1_ci_low"]),
        _cell(fmt.span(row["top1_min"], row["top1_max"]), row["top1_min"]),
        _cell(fmt.signed(row["delta_mean"]), row["delta_mean"], title=delta_title),
        _cell(escape(fmt.delta_interval(row)), row["delta_ci_low"]),
        _cell(fmt.num(row["p_improve"]), row["p_improve"]),
        _cell(escape(fmt.text(row["verdict"])), fmt.text(row["verdict"]), "text"),
        _cell(paper, row["paper_top1"], "paper", paper_title),
        _cell(fmt.num(row["top5_mean"]), row["top5_mean"]),
        _cell(fmt.num(row["top1_best_optimistic_mean"]), row["top1_best_optimistic_mean"]),
        _cell(fmt.num(row["train_sps_median"], 1), row["train_sps_median"]),
        _cell(fmt.num(row["train_sps_p90"], 1), row["train_sps_p90"]),
        _cell(cv_text, row["train_sps_cv"]),
        _cell(fmt.num(row["eval_sps_median"], 1), row["eval_sps_median"]),
        _cell(mem, row["peak_mem_mb_median"]),
        _cell(fmt.num(row["params_m"]), row["params_m"]),
        _cell("yes" if row["pareto"] else "", "yes" if row["pareto"] else "", "text"),
        _cell(_record_links(runs[runs["record"].isin(fmt.text(row["records"]).split(";"))]), None, "text"),
    ]
    best = ' class="best"' if row["rank"] == 1 and fmt.count(row["n_ok"]) else ""
    return f"<tr{best}>{''.join(cells)}</tr>"


PROVENANCE_HEADERS = [("Record", True), ("Method", True), ("Seed", False), ("Status", True), ("Top-1 % (last)", False),
                      ("Git sha", True), ("fgbench", True), ("torch", True), ("timm", True), ("accelerate", True),
                      ("Device", True), ("Precision", True), ("Weights sha256", True), ("Split hashes", True),
                      ("Error", True)]


def _provenance_row(run: dict[str, Any]) -> str:
    sha = fmt.text(run["git_sha"])
    weights = fmt.text(run["pretrained_sha256"])
    link = f'<a href="{escape(run["record"])}">{escape(run["record"].rsplit("/", 1)[-1])}</a>'
    cells = [_cell(link, run["record"], "text"),
             _cell(escape(fmt.text(run["method_label"])), run["method_label"], "text"),
             _cell(fmt.num(run["seed"], 0), run["seed"]),
             _cell(escape(fmt.text(run["status"])), run["status"], "text" if run["status"] == "ok" else "text bad"),
             _cell(fmt.num(run["top1_last"]), run["top1_last"]),
             _cell(escape(sha[:10] + (" (dirty)" if run["git_dirty"] is True else "")), sha, "text", sha or None)]
    cells += [_cell(escape(fmt.text(run[c])), run[c], "text")
              for c in ("fgbench_version", "torch_version", "timm_version", "accelerate_version", "device_name",
                        "mixed_precision")]
    cells += [_cell(escape(weights[:12]), weights, "text", weights or None),
              _cell(escape(fmt.text(run["split_hashes"])), run["split_hashes"], "text"),
              _cell(escape(fmt.text(run["error"])), run["error"], "text bad" if fmt.text(run["error"]) else "text")]
    return f"<tr>{''.join(cells)}</tr>"


def _figure(svg: str | None, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{escape(caption)}</figcaption></figure>" if svg else ""


def _dataset_section(dataset: str, board: pd.DataFrame, runs: pd.DataFrame, curves: pd.DataFrame,
                     extra: str = "") -> str:
    labels = setting_labels(board)
    salt = _anchor(dataset)
    figures = "".join([
        _figure(scatter_svg(board, labels, salt),
                "Accuracy against training throughput; error bars: sd over seeds; markers outlined in black and "
                "joined by the dashed line form the Pareto front (no other setting is both faster and more accurate)."),
        _figure(strip_svg(runs, board, labels, salt), "Last-step accuracy of every seed."),
        _figure(curves_svg(curves, labels, salt), "Training curves: periodic test accuracy and training loss."),
    ])
    rows = [_board_row(row, runs) for row in board.to_dict("records")]
    prov = [_provenance_row(run) for run in runs.to_dict("records")]
    return "\n".join([
        f'<section id="{_anchor(dataset)}"><h2>{escape(dataset)}</h2>',
        _table(BOARD_HEADERS, rows),
        f'<div class="figures">{figures}</div>' if figures else "<p>No finished run to plot.</p>",
        extra,
        f"<details><summary>Provenance of the {len(prov)} run{'s' if len(prov) != 1 else ''}</summary>",
        _table(PROVENANCE_HEADERS, prov),
        "</details></section>",
    ])


def _overview(board: pd.DataFrame) -> str:
    parts = ['<section id="overview"><h2>Overview</h2>']
    for table in wide_tables(board):
        headers, rows = wide_rows(table)
        body = ["<tr>" + "".join(_cell(escape(v), None, "text" if i == 0 else "") for i, v in enumerate(row)) + "</tr>"
                for row in rows]
        parts += [f"<h3>{escape(table.title)}</h3>", _table([(h, i == 0) for i, h in enumerate(headers)], body,
                                                             sortable=False)]
    parts.append("</section>")
    return "\n".join(parts)


def render_html(board: pd.DataFrame, runs: pd.DataFrame, curves: pd.DataFrame, baseline: str | None,
                differ: pd.DataFrame | None = None, confusions: pd.DataFrame | None = None,
                gallery: str = "") -> str:
    """The whole page; a pure function of its inputs (no clock, no absolute paths).

    differ, confusions: `bench.report.classes` tables (per-class views); gallery: the explain
    gallery's HTML (`bench.report.gallery`), placed after the datasets."""
    from bench.report.html_classes import confusion_section, differ_section

    datasets = sorted(board["dataset"].dropna().unique()) if not board.empty else []
    nav = " ".join(f'<a href="#{_anchor(d)}">{escape(d)}</a>' for d in datasets)
    nav += ' <a href="#gallery">explain gallery</a>' if gallery else ""

    def extra(d: str) -> str:
        parts = [differ_section(differ[differ["dataset"] == d]) if differ is not None else "",
                 confusion_section(confusions[confusions["dataset"] == d]) if confusions is not None else ""]
        return "\n".join(p for p in parts if p)

    sections = [_dataset_section(d, board[board["dataset"] == d], runs[runs["dataset"] == d],
                                 curves[curves["dataset"] == d], extra(d)) for d in datasets]
    baseline_note = f"Δ and P(>base): paired by seed against <b>{escape(baseline)}</b> of the same protocol; " \
                    "a verdict is given only when the 95% CI excludes 0 and P agrees." if baseline else ""
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',
        "<title>fgbench leaderboard</title>",
        f"<style>{STYLE}</style></head><body>",
        "<header><h1>fgbench leaderboard</h1>",
        f'<p class="note">{escape(NOTES).replace("`", "")}</p>',
        f'<p class="note">{baseline_note} Built by <code>bench.py report</code> (fgbench {escape(__version__)}) '
        f"from {len(runs)} record{'s' if len(runs) != 1 else ''}.</p>",
        f"<nav>{nav}</nav></header>" if nav else "</header><p>No records yet: run <code>bench.py</code> first.</p>",
        _overview(board) if datasets else "",
        *sections,
        gallery,
        f"<script>{SORT_SCRIPT}</script>",
        "</body></html>",
        "",
    ])
