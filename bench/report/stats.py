"""Statistics over seeds: what a reader needs to judge a number, computed with scipy.

Benchmarks here have few seeds (3-5), so intervals are Student-t intervals, which are exact under
normality and honest about tiny samples, where a bootstrap would only resample the same handful of
values. Comparisons are paired by seed (same seed list for every method, so init and data order
match) and report a verdict only when the interval excludes zero *and* the per-seed probability of
improvement clears a threshold (Bouthillier et al., MLSys 2021, use 0.75).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
IMPROVEMENT_THRESHOLD = 0.75  # P(A > B) a verdict needs, besides a CI that excludes 0
CV_FLAG = 0.05  # speed/memory spread over runs above this is flagged as noisy
MIN_SEEDS_FOR_INTERVAL = 3  # 2 seeds: 1 degree of freedom, a half-width of 12.7 standard errors
ACCURACY_BOUNDS = (0.0, 100.0)
NAN = float("nan")


def _finite(values: Iterable[float | None]) -> np.ndarray:
    out = np.asarray([float(v) for v in values if v is not None], dtype=np.float64)
    return out[np.isfinite(out)]


@dataclass(frozen=True)
class SeedStats:
    """Summary of one metric over seeds: n, mean, sd (ddof=1), t-interval, range."""

    n: int
    mean: float
    sd: float
    ci_low: float
    ci_high: float
    min: float
    max: float


def t_interval(mean: float, sd: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student-t interval of a mean; undefined (NaN) for fewer than 2 values, a point when sd is 0."""
    if n < 2 or not math.isfinite(sd):
        return NAN, NAN
    if sd == 0:
        return mean, mean
    low, high = stats.t.interval(confidence, df=n - 1, loc=mean, scale=sd / math.sqrt(n))
    return float(low), float(high)


def seed_stats(values: Iterable[float | None], confidence: float = CONFIDENCE) -> SeedStats:
    """n, mean, sd, CI, min, max of the finite values (missing values are skipped, not zeros)."""
    x = _finite(values)
    n = len(x)
    if n == 0:
        return SeedStats(0, NAN, NAN, NAN, NAN, NAN, NAN)
    mean = float(x.mean())
    sd = float(x.std(ddof=1)) if n > 1 else NAN  # one seed has no spread to report
    low, high = t_interval(mean, sd, n, confidence)
    return SeedStats(n, mean, sd, low, high, float(x.min()), float(x.max()))


def shown_interval(low: float, high: float, n: int, bounds: tuple[float, float] = ACCURACY_BOUNDS
                   ) -> tuple[float, float, bool] | None:
    """The interval a table or plot may show for an accuracy: None below MIN_SEEDS_FOR_INTERVAL seeds
    (show the range instead), else the t-interval clipped to the possible values, with whether it
    was clipped (a clipped interval is always marked; the CSV keeps the unclipped bounds)."""
    if n < MIN_SEEDS_FOR_INTERVAL or not (math.isfinite(low) and math.isfinite(high)):
        return None
    lo, hi = max(low, bounds[0]), min(high, bounds[1])
    return lo, hi, (lo, hi) != (low, high)


@dataclass(frozen=True)
class PairedStats:
    """Per-seed differences A - B over the seeds both finished, and what they support."""

    n: int
    mean: float
    sd: float
    ci_low: float
    ci_high: float
    p_improve: float  # fraction of seeds with A > B (ties count one half)
    verdict: str  # "better" / "worse" / "" (undecided)


def verdict(ci_low: float, ci_high: float, p_improve: float, threshold: float = IMPROVEMENT_THRESHOLD) -> str:
    """"better"/"worse" only when the CI excludes 0 and P(improvement) agrees; otherwise ""."""
    if math.isfinite(ci_low) and ci_low > 0 and p_improve >= threshold:
        return "better"
    if math.isfinite(ci_high) and ci_high < 0 and p_improve <= 1 - threshold:
        return "worse"
    return ""


def paired_stats(
    a: Mapping[int, float | None],
    b: Mapping[int, float | None],
    confidence: float = CONFIDENCE,
    threshold: float = IMPROVEMENT_THRESHOLD,
) -> PairedStats:
    """Compare A with B on the seeds where both have a finite value (`{seed: value}` each)."""
    seeds = sorted(s for s in set(a) & set(b) if _finite([a[s]]).size and _finite([b[s]]).size)
    d = np.asarray([float(a[s]) - float(b[s]) for s in seeds], dtype=np.float64)
    if d.size == 0:
        return PairedStats(0, NAN, NAN, NAN, NAN, NAN, "")
    s = seed_stats(d, confidence)
    p_improve = float((np.sum(d > 0) + 0.5 * np.sum(d == 0)) / d.size)
    return PairedStats(s.n, s.mean, s.sd, s.ci_low, s.ci_high, p_improve,
                       verdict(s.ci_low, s.ci_high, p_improve, threshold))


@dataclass(frozen=True)
class SpreadStats:
    """Throughput/memory over runs: median, p90 and coefficient of variation (sd/mean, ddof=1)."""

    n: int
    median: float
    p90: float
    cv: float
    noisy: bool  # cv > CV_FLAG


def spread_stats(values: Iterable[float | None], cv_flag: float = CV_FLAG) -> SpreadStats:
    x = _finite(values)
    if x.size == 0:
        return SpreadStats(0, NAN, NAN, NAN, False)
    cv = float(x.std(ddof=1) / x.mean()) if x.size > 1 and x.mean() > 0 else NAN
    return SpreadStats(int(x.size), float(np.median(x)), float(np.percentile(x, 90)), cv,
                       bool(math.isfinite(cv) and cv > cv_flag))


def pareto_front(x: Sequence[float], y: Sequence[float]) -> list[bool]:
    """Which points no other point beats on both axes (higher is better on each); NaN is never on it."""
    points = [(float(a), float(b)) for a, b in zip(x, y)]
    front = []
    for i, (xi, yi) in enumerate(points):
        if not (math.isfinite(xi) and math.isfinite(yi)):
            front.append(False)
            continue
        dominated = any(
            j != i and math.isfinite(xj) and math.isfinite(yj) and xj >= xi and yj >= yi and (xj > xi or yj > yi)
            for j, (xj, yj) in enumerate(points)
        )
        front.append(not dominated)
    return front
