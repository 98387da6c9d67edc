"""Minimum detectable effects and seeds needed: the formula, its monotonicity, and a simulation of its promise."""
import math

import numpy as np
import pytest
from scipy import stats

from orthonoise.report import engine, power

from .fake_runs import linear_curve, write_run


def test_paired_mde_is_the_textbook_formula():
    n, sigma, rho = 4, 1.0, 0.5
    se = sigma * math.sqrt(1 - rho) * math.sqrt(2 / n)
    expected = (stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.8, n - 1)) * se
    assert power.mde_pct(sigma, rho, n, power.PAIRED) == pytest.approx(expected)


def test_more_seeds_detect_less_and_multiplicity_costs():
    paired = [power.mde_pct(1.0, 0.5, n, power.PAIRED) for n in (2, 3, 5, 8)]
    assert paired == sorted(paired, reverse=True)
    # many seeds (the pooled error df hardly matter): ten simultaneous comparisons need a wider interval than two
    assert power.mde_pct(1.0, 0.5, 20, power.MANY_TO_ONE, k=10) > power.mde_pct(1.0, 0.5, 20, power.MANY_TO_ONE, k=2)


def test_seeds_needed_is_the_fewest_that_reach_the_margin():
    n = power.seeds_needed(1.0, 0.5, 1.0, power.PAIRED)
    assert power.mde_pct(1.0, 0.5, n, power.PAIRED) <= 1.0 < power.mde_pct(1.0, 0.5, n - 1, power.PAIRED)
    assert power.seeds_needed(10.0, 0.0, 0.1, power.PAIRED) is None  # beyond MAX_SEEDS


def test_a_true_effect_at_the_mde_is_detected_80_percent_of_the_time():
    n, sigma, rho = 5, 1.0, 0.5
    effect = power.mde_pct(sigma, rho, n, power.PAIRED)
    rng = np.random.default_rng(3)
    hits, sims = 0, 2000
    for _ in range(sims):
        block = rng.normal(0, sigma / 100 * math.sqrt(rho), n)
        noise = rng.normal(0, sigma / 100 * math.sqrt(1 - rho), (2, n))
        base = {s: math.exp(block[s] + noise[0, s]) for s in range(n)}
        better = {s: math.exp(math.log1p(-effect / 100) + block[s] + noise[1, s]) for s in range(n)}
        hits += engine.pair(better, base).t_bounds_pct(0.95)[1] < 0
    assert abs(hits / sims - 0.8) < 3 * math.sqrt(0.8 * 0.2 / sims) + 0.02  # log vs % scale: a small slack


def test_power_lines_name_the_numbers():
    lines = power.power_lines("3.2", 3, 10, 1.0, 0.5, "default")
    assert lines[0].startswith("Power (seed std σ̂ = 1.00% of the loss, seed-block share ρ̂ = 0.50; default)")
    assert "10 configs vs one baseline, simultaneous" in lines[1] and "seeds per arm" in lines[1]
    assert power.power_lines("none", 3, 10, 1.0, 0.5, "default") == []


def test_noise_from_an_earlier_sweep_is_measured_there_else_the_default(tmp_path):
    earlier, empty = tmp_path / "earlier", tmp_path / "empty"
    empty.mkdir()
    for seed, shift in ((1, 0.0), (2, 0.03), (3, -0.02)):
        write_run(earlier, f"m{seed}", seed=seed, val=linear_curve(2.0 + shift))
        write_run(earlier, f"o{seed}", seed=seed, optimizer="orthonoise", alpha=1e-3,
                  val=linear_curve(1.99 + shift + 0.01 * (seed == 2)))
    sigma, rho, source = power.noise_of(earlier)
    assert 0 < sigma < 5 and 0 <= rho <= 1 and source.startswith(f"measured in {earlier}, ")
    assert power.measured_in(earlier, shown_as="X")[2].startswith("measured in X, ")
    assert power.measured_in(empty) is None
    assert power.noise_of(empty)[:2] == (power.DEFAULT_SIGMA_PCT, power.DEFAULT_RHO)
