"""Seed statistics: mean, sample std, t-based 95% CI, Welch's and paired t-tests (scipy)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

NAN = float("nan")


@dataclass(frozen=True)
class Sample:
    n: int
    mean: float
    std: float  # sample standard deviation (ddof=1); nan for n < 2
    ci_low: float  # 95% CI of the mean from Student's t; nan for n < 2
    ci_high: float


def describe(values, confidence: float = 0.95) -> Sample:
    data = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(data)
    if n == 0:
        return Sample(0, NAN, NAN, NAN, NAN)
    mean = float(data.mean())
    if n < 2:
        return Sample(1, mean, NAN, NAN, NAN)
    std = float(data.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return Sample(n, mean, std, mean - half, mean + half)


@dataclass(frozen=True)
class TTest:
    statistic: float
    pvalue: float  # two-sided; nan when undecidable (n < 2 a side, or zero variance on both sides)
    df: float


def welch(a, b) -> TTest:
    """Welch's unequal-variance t-test of mean(a) vs mean(b)."""
    a, b = _finite(a), _finite(b)
    if len(a) < 2 or len(b) < 2:
        return TTest(NAN, NAN, NAN)
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return TTest(NAN, NAN, NAN)  # no spread on either side: the t statistic is undefined
    result = stats.ttest_ind(a, b, equal_var=False)
    return TTest(float(result.statistic), float(result.pvalue), float(getattr(result, "df", NAN)))


def paired(a_by_seed: dict, b_by_seed: dict) -> TTest:
    """Paired t-test over seeds; only when both sides ran exactly the same seeds (n >= 2)."""
    a_by_seed = {s: v for s, v in a_by_seed.items() if v is not None and math.isfinite(v)}
    b_by_seed = {s: v for s, v in b_by_seed.items() if v is not None and math.isfinite(v)}
    if set(a_by_seed) != set(b_by_seed) or len(a_by_seed) < 2:
        return TTest(NAN, NAN, NAN)
    seeds = sorted(a_by_seed, key=str)
    a = [a_by_seed[s] for s in seeds]
    b = [b_by_seed[s] for s in seeds]
    if np.allclose(np.subtract(a, b), np.subtract(a, b)[0]):
        return TTest(NAN, NAN, NAN)  # constant differences: the t statistic is undefined
    result = stats.ttest_rel(a, b)
    return TTest(float(result.statistic), float(result.pvalue), float(len(seeds) - 1))


def relative_pct(value: float, reference: float) -> float:
    """(value - reference) / reference in %; negative = lower (better) loss than the reference."""
    if not (math.isfinite(value) and math.isfinite(reference)) or reference == 0:
        return NAN
    return (value - reference) / abs(reference) * 100.0


def _finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]
