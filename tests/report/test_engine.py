"""The primary analysis against hand-computed values: per-contrast variances, Šidák multipliers, no interval
without spread."""
import math

import numpy as np
import pytest
from scipy import stats

from orthonoise.report import criteria, engine


def logs_to_values(logs: dict) -> dict:
    return {arm: {s: math.exp(v) for s, v in by_seed.items()} for arm, by_seed in logs.items()}


def test_a_shared_seed_contrast_is_the_paired_t_interval_at_the_sidak_level():
    base = {1: 0.70, 2: 0.72, 3: 0.69}
    a = {1: 0.68, 2: 0.705, 3: 0.675}
    b = {1: 0.71, 2: 0.70, 3: 0.72}
    family = engine.many_to_one(logs_to_values({"base": base, "a": a, "b": b}), "base")
    d = np.array([a[s] - base[s] for s in (1, 2, 3)])
    comp = family.comparisons["a"]
    q = stats.t.ppf(0.5 + 0.95 ** 0.5 / 2, 2)  # two configs: each at 0.95^(1/2)
    assert family.method == engine.PAIRED and comp.paired and comp.df == 2
    assert comp.estimate == pytest.approx(d.mean()) and comp.se == pytest.approx(d.std(ddof=1) / math.sqrt(3))
    assert comp.quantile == pytest.approx(q)
    assert comp.bounds_pct() == pytest.approx((100 * math.expm1(d.mean() - q * comp.se),
                                               100 * math.expm1(d.mean() + q * comp.se)))
    p = 2 * stats.t.sf(abs(d.mean()) / comp.se, 2)
    assert comp.p_adjusted == pytest.approx(1 - (1 - p) ** 2)


def test_without_shared_seeds_it_is_welch_with_satterthwaite_df():
    base = {1: 0.70, 2: 0.72, 3: 0.69, 4: 0.71}
    a = {5: 0.60, 6: 0.66, 7: 0.63}
    comp = engine.many_to_one(logs_to_values({"base": base, "a": a}), "base").comparisons["a"]
    xa, xb = np.array(list(a.values())), np.array(list(base.values()))
    va, vb = xa.var(ddof=1) / 3, xb.var(ddof=1) / 4
    assert not comp.paired and comp.se == pytest.approx(math.sqrt(va + vb))
    assert comp.df == pytest.approx((va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 3))
    assert comp.quantile == pytest.approx(stats.t.ppf(0.975, comp.df))


def test_a_noisy_arm_widens_only_its_own_interval():
    rng = np.random.default_rng(2)
    logs = {arm: dict(enumerate(rng.normal(0, 0.005, 20))) for arm in ("base", "a", "b")}
    quiet = engine.many_to_one(logs_to_values(logs), "base").comparisons["a"]
    logs["b"] = {s: 5 * v for s, v in logs["b"].items()}
    family = engine.many_to_one(logs_to_values(logs), "base")
    assert family.comparisons["a"].se == pytest.approx(quiet.se)
    assert family.comparisons["b"].se > 2 * quiet.se


@pytest.mark.parametrize("ratio", [1.0, 0.98], ids=["identical", "constant-minus-2pct"])
def test_no_spread_gives_no_interval_and_says_why(ratio):
    """Identical values, or a constant ratio whose log differences differ only by round-off (σ² ~ 1e-32, which
    an exact `<= 0` test lets through): no interval, INCONCLUSIVE, the reason named."""
    base = {1: 2.0137, 2: 2.0311, 3: 2.0542}
    family = engine.many_to_one({"base": base, "x": {s: v * ratio for s, v in base.items()}}, "base")
    comp = family.comparisons["x"]
    assert comp.reason == engine.NO_SPREAD and family.note == engine.NO_SPREAD
    assert all(math.isnan(b) for b in comp.bounds_pct()) and all(math.isnan(b) for b in comp.t_bounds_pct(0.9))
    assert engine.below(comp.low_pct, comp.high_pct, -1.0) == engine.INCONCLUSIVE
    assert comp.delta_pct == pytest.approx(100 * (ratio - 1))


def test_a_contrast_between_two_configs_is_paired_with_its_own_variance():
    base = {1: 0.70, 2: 0.72, 3: 0.69}
    a = {1: 0.68, 2: 0.705, 3: 0.675}
    b = {1: 0.71, 2: 0.70, 3: 0.72}
    comp = engine.many_to_one(logs_to_values({"base": base, "a": a, "b": b}), "base").contrast("b", "a")
    d = np.array([b[s] - a[s] for s in (1, 2, 3)])
    assert comp.estimate == pytest.approx(d.mean()) and comp.se == pytest.approx(d.std(ddof=1) / math.sqrt(3))
    assert comp.quantile == pytest.approx(stats.t.ppf(0.975, 2))


def test_a_criterion_without_an_interval_says_why():
    base = {1: 2.0137, 2: 2.0311, 3: 2.0542}
    comp = engine.pair({s: 0.98 * v for s, v in base.items()}, base)
    assert engine.below(*comp.t_bounds_pct(0.95), -0.5) == engine.INCONCLUSIVE
    assert criteria.why_no_interval(comp) == f" ({engine.NO_SPREAD})"
