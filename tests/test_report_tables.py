"""`bench.py report` outputs from synthetic records: statistics, tables, idempotence, robustness."""

from __future__ import annotations

import configparser
import io
import math
import re

import pandas as pd
import pytest
from conftest import REPO, run_bench
from synthetic_records import make_record, mixed_matrix, write_runs

from bench import records
from bench.errors import UsageError
from bench.report import leaderboard, load_paper_results, runs_frame, write_report
from bench.report.latex import render_latex
from bench.report.paper import DEFAULT_PATH
from bench.report.write import dataset_csv_name

FGBENCH_METHODS = {"vit", "transfg", "ffvt", "mixvit", "sovit", "ramstrans"}
CANONICAL_DATASETS = {"cotton", "soyloc", "soygene", "soyageing", "soyglobal", "cub", "dogs", "cars", "nabirds",
                      "inat2017"} | {f"soyageing_r{i}" for i in (1, 3, 4, 5, 6)}


@pytest.fixture
def mixed(tmp_path):
    results = tmp_path / "results"
    mixed_matrix(results)
    return results


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """The mixed matrix with its report written once (read-only for the tests that use it)."""
    results = tmp_path_factory.mktemp("reported") / "results"
    mixed_matrix(results)
    write_report(results)
    return results


def row(board: pd.DataFrame, method: str, dataset: str) -> pd.Series:
    match = board[(board["method_label"] == method) & (board["dataset"] == dataset)]
    assert len(match) == 1
    return match.iloc[0]


def pipe_table(text: str, heading: str) -> pd.DataFrame:
    """The first Markdown pipe table after `heading`, parsed back with pandas."""
    block = []
    for line in text.split(heading, 1)[1].splitlines()[1:]:
        if line.startswith("|"):
            block.append(line)
        elif block:
            break
    frame = pd.read_csv(io.StringIO("\n".join(block)), sep="|", skipinitialspace=True, dtype=str)
    frame = frame.drop(columns=[c for c in frame.columns if c.startswith("Unnamed")])
    frame.columns = [c.strip() for c in frame.columns]
    frame = frame.iloc[1:].map(lambda v: v.strip() if isinstance(v, str) else v)  # drop the |:---| row
    return frame.reset_index(drop=True)


def test_mixed_statuses_are_counted_beside_the_numbers(mixed):
    board = leaderboard(runs_frame(mixed), baseline="vit", paper=load_paper_results())
    ffvt = row(board, "ffvt", "cotton")
    assert (ffvt.n_runs, ffvt.n_ok, ffvt.n_failed, ffvt.n_oom, ffvt.n_diverged) == (4, 3, 1, 0, 0)
    assert ffvt.top1_mean == pytest.approx((56 + 57.5 + 58) / 3)
    assert ffvt.top1_sd == pytest.approx(pd.Series([56, 57.5, 58]).std())
    assert (row(board, "mixvit", "cotton").n_diverged, row(board, "vit", "soyloc").n_oom) == (1, 1)
    # paired by seed against vit: d = 6, 5.5, 7
    assert (ffvt.baseline, ffvt.delta_n, ffvt.delta_mean) == ("vit", 3, pytest.approx(37 / 6))
    assert ffvt.delta_ci_low > 0 and ffvt.p_improve == 1.0 and ffvt.verdict == "better"
    mix = row(board, "mixvit", "cotton")  # d = -1, 1, 0.5: undecided
    assert mix.delta_ci_low < 0 < mix.delta_ci_high and pd.isna(mix.verdict)
    assert pd.isna(row(board, "vit", "cotton").delta_mean)
    # published numbers sit in their own columns, not in ours
    assert (ffvt.paper_top1, ffvt.paper_verified) == (57.92, False)
    assert ffvt.top1_mean != ffvt.paper_top1
    # ranks and Pareto front per protocol: mixvit is slower and less accurate than ffvt
    assert list(board[board.dataset == "cotton"].method_label) == ["ffvt", "mixvit", "vit"]
    assert list(board[board.dataset == "cotton"]["rank"]) == [1, 2, 3]
    assert list(board[board.dataset == "cotton"].pareto) == [True, False, True]


def test_report_is_byte_identical_when_run_twice(mixed):
    _, paths = write_report(mixed)
    first = {p.name: p.read_bytes() for p in paths}
    _, again = write_report(mixed)
    assert {p.name: p.read_bytes() for p in again} == first
    assert set(first) == {"runs.csv", "leaderboard.csv", "leaderboard.md", "leaderboard.tex", "index.html",
                          "leaderboard-cotton.csv", "leaderboard-soyloc.csv"}
    for name, data in first.items():  # no clock, no absolute paths (records hold /data/..., tmp dirs)
        text = data.decode()
        assert str(mixed) not in text and "/data/" not in text and "2025-01-01" not in text, name


def test_csvs_are_long_form_and_numeric(reported):
    board = pd.read_csv(reported / "leaderboard.csv")
    assert len(board) == 6 and set(board.dataset) == {"cotton", "soyloc"}
    for column in ("n_ok", "n_failed", "top1_mean", "top1_sd", "top1_ci_low", "delta_mean", "p_improve", "paper_top1",
                   "train_sps_median", "train_sps_cv", "peak_mem_mb_median", "rank"):
        assert pd.api.types.is_numeric_dtype(board[column]), column
    cotton = pd.read_csv(reported / dataset_csv_name("cotton"))
    assert cotton.columns[0] == "rank" and list(cotton["rank"]) == [1, 2, 3]
    assert cotton["top1_mean"].is_monotonic_decreasing
    runs = pd.read_csv(reported / "runs.csv")
    assert len(runs) == 21 and runs["record"].str.startswith("runs/").all()
    assert set(runs["status"]) == {"ok", "failed", "oom", "diverged"}


def test_stale_dataset_csv_is_removed(mixed):
    write_report(mixed)
    for path in (records.runs_dir(mixed) / "soyloc").rglob("*.json"):
        path.unlink()
    write_report(mixed)
    assert (mixed / "leaderboard-cotton.csv").exists() and not (mixed / "leaderboard-soyloc.csv").exists()


def test_markdown_tables_parse_back_with_pandas(reported):
    text = (reported / "leaderboard.md").read_text()
    wide = pipe_table(text, "## preset tiny · precision no · ddp · 1 process")
    assert list(wide.columns) == ["Method", "cotton", "cotton (paper)", "soyloc", "soyloc (paper)"]
    assert list(wide["Method"]) == ["ffvt", "mixvit", "vit"]
    cells = wide.set_index("Method")
    assert cells.loc["ffvt", "cotton"] == "57.17 ± 1.04 (n=3; 1 failed)"
    assert cells.loc["vit", "soyloc"] == "41.00 ± 1.00 (n=3; 1 oom)"
    assert cells.loc["mixvit", "cotton (paper)"] == "60.42†"
    long = pipe_table(text, "## cotton: all settings")
    assert list(long["Method"]) == ["ffvt", "mixvit", "vit"]
    assert pd.to_numeric(long["Top-5 %"]).tolist() == pytest.approx([77.17, 71.17, 71.0])
    assert long.loc[0, "Verdict"] == "better"


def check_latex_shape(tex: str) -> None:
    """Environments nest and close, braces and math balance, every row has all its columns."""
    stack = []
    for kind, name in re.findall(r"\\(begin|end)\{([^}]*)\}", tex):
        if kind == "begin":
            stack.append(name)
        else:
            assert stack and stack.pop() == name, f"\\end{{{name}}} closes the wrong environment"
    assert not stack, f"unclosed environments {stack}"
    plain = re.sub(r"\\[{}$&%_#]", "", tex)
    assert plain.count("{") == plain.count("}")
    assert plain.count("$") % 2 == 0
    for table in re.findall(r"\\begin\{tabular\}\{([lcr]+)\}(.*?)\\end\{tabular\}", tex, re.S):
        spec, body = table
        assert [line.strip() for line in body.strip().splitlines() if line.strip().startswith("\\")
                and "rule" in line] == ["\\toprule", "\\midrule", "\\bottomrule"]
        rows = [line for line in body.splitlines() if line.rstrip().endswith("\\\\")]
        assert rows
        for line in rows:
            assert len(re.findall(r"(?<!\\)&", line)) == len(spec) - 1, line


def test_latex_is_booktabs_with_best_per_column_in_bold(mixed):
    board = leaderboard(runs_frame(mixed), baseline="vit", paper=load_paper_results())
    tex = render_latex(board)
    check_latex_shape(tex)
    assert "\\toprule" in tex and "\\hline" not in tex
    ffvt_line = next(line for line in tex.splitlines() if line.strip().startswith("ffvt"))
    assert "\\textbf{57.17 $\\pm$ 1.04 (n=3; 1 failed)}" in ffvt_line  # best on cotton
    mix_line = next(line for line in tex.splitlines() if line.strip().startswith("mixvit"))
    assert "\\textbf{60.42}" in mix_line and "\\textbf{51.17" not in mix_line  # best paper number, not best ours
    assert tex.count("\\textbf{") == 4  # ours and paper, per dataset


def test_latex_escapes_names_and_stays_balanced(tmp_path):
    results = tmp_path / "results"
    write_runs(results, [make_record("vit", "cub", s, 80.0 + s, variant="a_b") for s in range(2)]
               + [make_record("ffvt", "cub", s, 81.0 + s) for s in range(2)])
    tex = render_latex(leaderboard(runs_frame(results), paper=load_paper_results()))
    check_latex_shape(tex)
    assert "vit:a\\_b" in tex and "a_b" not in tex


def test_old_partial_and_new_records_render(tmp_path):
    results = tmp_path / "results"
    newer = make_record("ffvt", "cotton", 0, 60.0, extra={"pretrained": {"sha256": "ab" * 32}})
    newer["accuracy"]["top1_valsel"] = 58.0
    broken = make_record("ffvt", "cotton", 1, 61.0)
    broken["accuracy"] = ["not", "a", "mapping"]  # ill-typed block: empty cells, no crash
    broken["speed"] = None
    minimal = {"schema_version": records.SCHEMA_VERSION, "status": "failed", "cell_id": "c0", "method": "vit",
               "dataset": "cotton", "seed": 0, "error": "killed"}
    write_runs(results, [newer, broken])
    records.write_record(records.record_path(results, "cotton", "vit", 0, "c0"), minimal)
    board, paths = write_report(results)
    runs = runs_frame(results)
    assert runs.set_index("method_label").loc["vit", "status"] == "failed"
    assert runs["pretrained_sha256"].dropna().tolist() == ["ab" * 32]
    ffvt = row(board, "ffvt", "cotton")
    assert (ffvt.n_ok, ffvt.top1_mean, ffvt.top1_valsel_mean, ffvt.top1_valsel_n) == (2, 60.0, 58.0, 1)
    vit = row(board, "vit", "cotton")
    assert (vit.n_ok, vit.n_failed) == (0, 1) and math.isnan(vit.top1_mean)
    assert "– (n=0; 1 failed)" in (results / "leaderboard.md").read_text()
    check_latex_shape((results / "leaderboard.tex").read_text())
    assert ("ab" * 32) in (results / "index.html").read_text()


def test_empty_results_dir_writes_empty_tables(tmp_path):
    board, paths = write_report(tmp_path / "results")
    assert board.empty and (tmp_path / "results" / "index.html").exists()
    assert "No records yet" in (tmp_path / "results" / "leaderboard.md").read_text()


def test_shipped_published_numbers_use_fgbench_names_and_are_flagged():
    paper = load_paper_results()
    assert set(paper["method"]) <= FGBENCH_METHODS
    assert set(paper["dataset"]) <= CANONICAL_DATASETS
    assert paper["source"].str.len().min() > 10
    verified = paper[paper["verified"]]
    # only what was read in the paper's own table counts as verified, and it says where that table is
    assert len(verified) >= 1 and verified["url"].str.startswith("https://").all()
    assert set(verified["confidence"]) == {"repository"}
    assert paper["url"].notna().all()
    assert set(paper["confidence"]) <= {"repository", "cited", "memory"}
    assert paper[(paper.method == "ffvt") & (paper.dataset == "cub")]["top1"].tolist() == [91.6]


@pytest.mark.parametrize("content, message", [
    ("schema_version: 1\nresults:\n  - {method: ffvt, dataset: cub, top1: 191, source: x, verified: false}\n",
     "top1 must be a percentage"),
    ("schema_version: 1\nresults:\n  - {method: FFVT, dataset: cub, top1: 91, source: x, verified: false}\n",
     "method must be an fgbench name"),
    ("schema_version: 1\nresults:\n  - {method: ffvt, dataset: cub, top1: 91, verified: no}\n",
     "missing keys ['source']"),
    ("schema_version: 1\nresults:\n  - {method: ffvt, dataset: cub, top1: 91, source: x, verified: yes, by: me}\n",
     "unknown keys ['by']"),
    ("results: [\n", "not valid YAML"),
    ("schema_version: 1\nresults:\n  - {method: ffvt, dataset: cub, top1: 91, source: x, verified: true}\n",
     "a verified entry needs the url of the table"),
    ("schema_version: 1\nresults:\n  - {method: ffvt, dataset: cub, top1: 91, source: x, verified: false, url: nope}\n",
     "url must be an http(s) address"),
])
def test_bad_published_numbers_are_rejected(tmp_path, content, message):
    bad = tmp_path / "paper.yaml"
    bad.write_text(content)
    with pytest.raises(UsageError, match=re.escape(message)):
        load_paper_results(bad)


def test_bad_published_numbers_file_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "paper.yaml"
    bad.write_text("schema_version: 1\nresults:\n"
                   "  - {method: ffvt, dataset: cub, top1: -1, source: x, verified: false}\n")
    (tmp_path / "results").mkdir()
    done = run_bench("report", "--results-dir", str(tmp_path / "results"), "--paper", str(bad))
    assert done.returncode == 2
    assert done.stderr.startswith("bench.py: error: ") and len(done.stderr.strip().splitlines()) == 1
    assert "paper.yaml results[0]: top1 must be a percentage between 0 and 100, got -1" in done.stderr


def test_cli_prints_latex_and_rejects_an_unknown_baseline(mixed):
    done = run_bench("report", "--results-dir", str(mixed), "--format", "latex", "--baseline", "mixvit")
    assert done.returncode == 0, done.stderr
    check_latex_shape(done.stdout)
    board = pd.read_csv(mixed / "leaderboard.csv")
    assert set(board["baseline"].dropna()) == {"mixvit"}
    bad = run_bench("report", "--results-dir", str(mixed), "--baseline", "vitt")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "--baseline vitt: no record has this method; methods with records: ffvt, mixvit, vit" in bad.stderr
    missing = run_bench("report", "--results-dir", str(mixed.parent / "typo"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert not (mixed.parent / "typo").exists()


def test_published_numbers_ship_as_package_data():
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    shipped = config["options.package_data"]["bench.report"].split()
    assert DEFAULT_PATH.name in shipped and DEFAULT_PATH.parent == REPO / "bench" / "report"


def test_html_is_self_contained_with_unique_ids_and_relative_links(reported):
    page = (reported / "index.html").read_text()
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids)) and len(ids) > 20  # several inline SVGs share one document
    for ref in re.findall(r'(?:href="#|url\(#)([^")]+)', page):
        assert ref in ids, ref
    assert page.count("<svg") == 6 and "<?xml" not in page
    assert not re.search(r'src="(?:https?:)?//', page) and not re.search(r'<link[^>]*href="(?:https?:)?//', page)
    # the only links out of the page are the published numbers' sources
    outside = re.findall(r'href="((?:https?:)?//[^"]*)"', page)
    assert outside and set(outside) <= set(load_paper_results()["url"])
    assert re.findall(r'href="(runs/[^"]+)"', page) and all(
        (reported / link).is_file() for link in re.findall(r'href="(runs/[^"]+)"', page))
