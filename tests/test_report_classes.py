"""Per-class analysis: the tally against a loop, the report's per-class CSVs, the paired test
across classes, and the confusion view."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from synthetic_records import make_record, write_runs

from bench.classes import ClassTally
from bench.report import write_report
from bench.report.classes import class_frame, where_methods_differ

NAMES = [f"sp{i}" for i in range(6)]
# per seed, per class top-1 % (6 classes, 10 test images each)
PER_CLASS = {
    "vit": [[50, 40, 30, 60, 70, 20], [60, 40, 20, 60, 50, 20]],
    "ffvt": [[90, 40, 30, 70, 70, 60], [70, 50, 40, 60, 70, 40]],
}


def classes_block(top1: list[float], confusions: list[tuple[int, int, int]]) -> dict:
    return {"n": [10] * 6, "top1": [float(v) for v in top1], "names": NAMES,
            "confusions": [{"true": t, "pred": p, "count": c} for t, p, c in confusions]}


def test_tally_matches_a_loop_over_samples():
    gen = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 7, (200,), generator=gen)
    predicted = torch.where(torch.rand(200, generator=gen) < 0.6, targets, torch.randint(0, 7, (200,), generator=gen))
    targets[targets == 6] = 5  # class 6 has no test sample
    tally = ClassTally(7)
    for chunk in range(0, 200, 64):  # as gathered batches arrive
        tally.update(predicted[chunk:chunk + 64], targets[chunk:chunk + 64])
    summary = tally.summary(top=5)
    for c in range(7):
        mine = [int(p) for p, t in zip(predicted, targets) if t == c]
        assert summary["n"][c] == len(mine)
        assert summary["top1"][c] == (100.0 * sum(p == c for p in mine) / len(mine) if mine else None)
    mistakes = Counter((int(t), int(p)) for p, t in zip(predicted, targets) if p != t)
    expected = sorted(mistakes.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    assert [(d["true"], d["pred"], d["count"]) for d in summary["confusions"]] == [(t, p, n) for (t, p), n in expected]
    assert "names" not in summary and tally.summary(NAMES + ["x"])["names"][6] == "x"


@pytest.fixture
def results(tmp_path):
    recs = []
    for method, seeds in PER_CLASS.items():
        for seed, top1 in enumerate(seeds):
            confusions = [(2, 3, 7 - seed), (5, 0, 4)] if method == "vit" else [(1, 4, 3)]
            recs.append(make_record(method, "cub", seed, float(np.mean(top1)),
                                    extra={"accuracy": {**make_record(method, "cub", seed, 50.0)["accuracy"],
                                                        "top1_last": float(np.mean(top1)),
                                                        "classes": classes_block(top1, confusions)}}))
    recs.append(make_record("vit", "cotton", 0, 40.0))  # an old-style record without per-class figures
    write_runs(tmp_path / "results", recs)
    return tmp_path / "results"


def test_where_methods_differ_averages_seeds_and_pairs_classes(results):
    differ = where_methods_differ(class_frame(results), "vit", top=3)
    assert list(differ["method_label"].unique()) == ["ffvt"]
    vit, ffvt = np.mean(PER_CLASS["vit"], axis=0), np.mean(PER_CLASS["ffvt"], axis=0)
    gain = ffvt - vit  # [25, 5, 10, 5, 10, 30]
    first = differ.iloc[0]
    assert first["n_classes"] == 6 and first["mean_gain"] == pytest.approx(gain.mean())
    assert (first["classes_better"], first["classes_worse"], first["classes_tied"]) == (6, 0, 0)
    assert first["wilcoxon_p"] == pytest.approx(stats.wilcoxon(ffvt, vit).pvalue)
    assert list(differ["class"]) == [5, 0, 2]  # largest gains first; ties by class index
    assert list(differ["name"]) == ["sp5", "sp0", "sp2"]
    assert list(differ["gain"]) == pytest.approx([30.0, 25.0, 10.0])
    assert list(differ["top1"]) == pytest.approx([50.0, 80.0, 35.0])
    assert where_methods_differ(class_frame(results), None).empty


def test_report_writes_per_class_csvs_and_the_page_shows_both_views(results):
    _, paths = write_report(results)
    per_class = pd.read_csv(results / "per-class-cub.csv")
    assert len(per_class) == 12 and set(per_class["method_label"]) == {"vit", "ffvt"}
    row = per_class[(per_class["method_label"] == "ffvt") & (per_class["class"] == 0)].iloc[0]
    assert (row["name"], row["seeds"], row["top1_mean"], row["top1_min"], row["top1_max"]) == ("sp0", 2, 80, 70, 90)
    differ = pd.read_csv(results / "where-methods-differ-cub.csv")
    assert list(differ["class"][:2]) == [5, 0]
    assert not (results / "per-class-cotton.csv").exists()  # its records have no per-class figures
    page = (results / "index.html").read_text()
    section = page[page.index('id="ds-cub"'):]
    assert "Where methods differ" in section and "sp5 +30.0 (50.0 vs 20.0)" in section
    confusions = section[section.index("Top confusions"):]
    assert confusions.index("sp2") < confusions.index("sp5")  # (2→3) 7+6 = 13 before (5→0) 4+4 = 8
    assert ">13</td>" in confusions and ">8</td>" in confusions
    # stale per-class files go when their records do
    for path in (results / "runs" / "cub").rglob("*.json"):
        path.unlink()
    write_report(results)
    assert not (results / "per-class-cub.csv").exists() and not (results / "where-methods-differ-cub.csv").exists()
