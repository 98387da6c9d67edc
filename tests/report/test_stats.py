"""Seed statistics against values worked out by hand."""

import math

import pytest

from orthonoise.report.stats import describe, paired, relative_pct, welch


def test_describe_mean_std_and_t_interval():
    sample = describe([1.0, 2.0, 3.0, 4.0])
    # mean 2.5; std = sqrt((2.25 + 0.25 + 0.25 + 2.25) / 3) = sqrt(5/3); t(0.975, df=3) = 3.182446
    assert sample.n == 4
    assert sample.mean == pytest.approx(2.5)
    assert sample.std == pytest.approx(math.sqrt(5 / 3))
    half = 3.182446305 * math.sqrt(5 / 3) / 2
    assert (sample.ci_low, sample.ci_high) == pytest.approx((2.5 - half, 2.5 + half))


def test_describe_two_seeds_uses_t_with_one_degree_of_freedom():
    sample = describe([2.0, 2.02])
    # std = 0.02/sqrt(2); t(0.975, df=1) = 12.7062; half = 12.7062 * std / sqrt(2) = 0.127062
    assert sample.ci_high - sample.mean == pytest.approx(0.127062, rel=1e-4)


def test_describe_one_value_has_no_spread_and_skips_non_finite():
    sample = describe([2.0, float("nan"), None])
    assert sample.n == 1 and sample.mean == 2.0
    assert math.isnan(sample.std) and math.isnan(sample.ci_low)
    assert describe([]).n == 0


def test_welch_equal_variances():
    test = welch([1, 2, 3], [4, 5, 6])
    # t = (2 - 5) / sqrt(1/3 + 1/3); df = 4; two-sided p from the closed-form t(4) CDF
    t = -3 / math.sqrt(2 / 3)
    u = abs(t) / math.sqrt(4 + t * t)
    assert test.statistic == pytest.approx(t)
    assert test.df == pytest.approx(4)
    assert test.pvalue == pytest.approx(1 - (1.5 * u - 0.5 * u ** 3))


def test_welch_unequal_variances_uses_satterthwaite_df():
    test = welch([1, 2, 3, 4], [2, 4, 6])
    va, vb = (5 / 3) / 4, 4 / 3  # var/n per side
    assert test.statistic == pytest.approx((2.5 - 4) / math.sqrt(va + vb))
    assert test.df == pytest.approx((va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 2))


def test_welch_is_undecidable_below_two_seeds_or_without_spread():
    assert math.isnan(welch([1.0], [2.0, 3.0]).pvalue)
    assert math.isnan(welch([1.0, 1.0], [2.0, 2.0]).pvalue)


def test_paired_over_matching_seeds():
    test = paired({1: 1.0, 2: 2.0, 3: 3.0}, {3: 3.7, 1: 1.5, 2: 2.4})
    # differences -0.5, -0.4, -0.7: mean -0.5333, sd 0.152753, t = mean / (sd / sqrt 3); df 2
    t = (-1.6 / 3) / (math.sqrt(0.07 / 3) / math.sqrt(3))
    assert test.statistic == pytest.approx(t)
    assert test.pvalue == pytest.approx(1 - abs(t) / math.sqrt(2 + t * t))  # closed-form t(2)


def test_paired_needs_the_same_seeds_on_both_sides():
    assert math.isnan(paired({1: 1.0, 2: 2.0}, {1: 1.5, 3: 2.4}).pvalue)
    assert math.isnan(paired({1: 1.0}, {1: 1.5}).pvalue)


def test_relative_pct_negative_means_lower_loss():
    # two 1b-scale final losses: NOLAH 2.0601 vs baseline 2.0622
    assert relative_pct(2.0601, 2.0622) == pytest.approx(-0.10183, abs=1e-4)
    assert math.isnan(relative_pct(float("nan"), 2.0))
