"""Seed statistics against values computed by hand (t quantiles from printed tables)."""

from __future__ import annotations

import math

import pytest

from bench.report.stats import pareto_front, paired_stats, seed_stats, spread_stats, t_interval, verdict

T975 = {1: 12.706204736, 2: 4.302652730, 3: 3.182446305, 4: 2.776445105}  # Student t, 97.5% quantile


def approx(value, rel=1e-7):
    return pytest.approx(value, rel=rel, abs=1e-9)


def test_four_seeds_mean_sd_t_interval_range():
    s = seed_stats([1.0, 2.0, 3.0, 4.0])
    sd = math.sqrt(5 / 3)  # squared deviations 2.25+0.25+0.25+2.25 = 5 over n-1 = 3
    half = T975[3] * sd / 2
    assert (s.n, s.mean, s.min, s.max) == (4, 2.5, 1.0, 4.0)
    assert s.sd == approx(sd)
    assert (s.ci_low, s.ci_high) == (approx(2.5 - half), approx(2.5 + half))
    assert s.ci_low == approx(0.44573974, rel=1e-6)  # 2.5 - 3.1824463 * 0.6454972


def test_two_seeds_interval_is_wide_with_one_degree_of_freedom():
    s = seed_stats([80.0, 82.0])
    assert (s.n, s.mean, s.sd) == (2, 81.0, approx(math.sqrt(2)))
    assert (s.ci_low, s.ci_high) == (approx(81 - T975[1]), approx(81 + T975[1]))  # se = sqrt(2)/sqrt(2) = 1


def test_one_seed_has_a_mean_but_no_spread_or_interval():
    s = seed_stats([57.5])
    assert (s.n, s.mean, s.min, s.max) == (1, 57.5, 57.5, 57.5)
    assert math.isnan(s.sd) and math.isnan(s.ci_low) and math.isnan(s.ci_high)


def test_missing_values_are_skipped_not_counted_as_zero():
    s = seed_stats([None, float("nan"), 3.0, 5.0])
    assert (s.n, s.mean, s.min) == (2, 4.0, 3.0)
    empty = seed_stats([])
    assert empty.n == 0 and math.isnan(empty.mean) and math.isnan(empty.ci_low)


def test_identical_seeds_give_a_point_interval():
    s = seed_stats([70.0, 70.0, 70.0])
    assert (s.sd, s.ci_low, s.ci_high) == (0.0, 70.0, 70.0)
    assert all(math.isnan(v) for v in t_interval(70.0, 0.0, 1))


def test_paired_differences_use_shared_seeds_only_and_need_the_ci_to_exclude_zero():
    a = {0: 52.0, 1: 55.0, 2: 53.0}
    b = {0: 50.0, 1: 51.0, 2: 52.0, 3: 60.0}  # seed 3 has no partner: ignored
    p = paired_stats(a, b)
    d_mean, d_sd = 7 / 3, math.sqrt(14 / 3 / 2)  # d = 2, 4, 1
    half = T975[2] * d_sd / math.sqrt(3)
    assert (p.n, p.mean, p.sd) == (3, approx(d_mean), approx(d_sd))
    assert (p.ci_low, p.ci_high) == (approx(d_mean - half), approx(d_mean + half))
    assert p.p_improve == 1.0
    assert p.ci_low < 0 and p.verdict == ""  # every seed improved, but 3 seeds cannot exclude 0


def test_paired_verdicts_better_and_worse():
    base = {s: 50.0 for s in range(5)}
    better = {s: 50.0 + d for s, d in enumerate([2.0, 3.0, 2.5, 3.5, 2.0])}
    p = paired_stats(better, base)
    half = T975[4] * math.sqrt(0.425) / math.sqrt(5)
    assert (p.mean, p.ci_low, p.ci_high) == (approx(2.6), approx(2.6 - half), approx(2.6 + half))
    assert (p.p_improve, p.verdict) == (1.0, "better")
    q = paired_stats(base, better)
    assert (q.p_improve, q.verdict) == (0.0, "worse")


def test_probability_of_improvement_counts_ties_as_half():
    p = paired_stats({0: 1.0, 1: 2.0, 2: 0.0, 3: 3.0}, {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0})  # d = 0, 1, -1, 2
    assert p.p_improve == 0.625


def test_paired_edge_cases_one_and_two_pairs_and_none():
    one = paired_stats({0: 60.0}, {0: 50.0})
    assert (one.n, one.mean, one.verdict) == (1, 10.0, "") and math.isnan(one.ci_low)
    two = paired_stats({0: 51.0, 1: 53.0}, {0: 50.0, 1: 50.0})  # d = 1, 3
    assert (two.n, two.mean) == (2, 2.0)
    assert (two.ci_low, two.ci_high) == (approx(2 - T975[1]), approx(2 + T975[1]))
    none = paired_stats({0: 1.0}, {1: 1.0})
    assert none.n == 0 and math.isnan(none.mean) and none.verdict == ""


def test_verdict_needs_both_the_interval_and_the_probability():
    assert verdict(0.5, 2.0, 0.8) == "better"
    assert verdict(0.5, 2.0, 0.6) == ""  # CI excludes 0 but too few seeds improved
    assert verdict(-2.0, -0.5, 0.2) == "worse"
    assert verdict(-0.5, 2.0, 1.0) == ""
    assert verdict(float("nan"), float("nan"), 1.0) == ""


def test_spread_median_p90_and_cv_flag():
    s = spread_stats([100.0, 110.0, 90.0, 100.0])
    assert (s.n, s.median, s.p90) == (4, 100.0, approx(107.0))  # sorted 90,100,100,110: 100 + 0.7*10
    assert s.cv == approx(math.sqrt(200 / 3) / 100) and s.noisy  # 8.2% > 5%
    calm = spread_stats([100.0, 101.0])
    assert calm.cv == approx(math.sqrt(0.5) / 100.5) and not calm.noisy
    single = spread_stats([42.0])
    assert (single.median, single.p90, single.noisy) == (42.0, 42.0, False) and math.isnan(single.cv)


def test_pareto_front_keeps_undominated_points():
    assert pareto_front([1, 2, 3, 2], [3, 2, 1, 1]) == [True, True, True, False]
    assert pareto_front([1, 1], [5, 5]) == [True, True]  # equal points do not dominate each other
    assert pareto_front([1, float("nan"), 0.5], [1, 9, 0.5]) == [True, False, False]
