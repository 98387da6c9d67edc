"""Each phase criterion at its PASS / FAIL / INCONCLUSIVE boundaries."""

import time

import pytest

from orthonoise.report import criteria
from orthonoise.report.analysis import analyse

from .fake_runs import linear_curve, write_run

BASE = [2.004, 2.006]  # mean 2.005, tiny spread: a 1% gap is clearly significant with 2 seeds


def scaled(values, pct):
    """The values shifted by pct % of their mean (keeps the spread)."""
    shift = sum(values) / len(values) * pct / 100
    return [v + shift for v in values]


def make(root, name, finals, **config):
    for seed, final in enumerate(finals, start=1):
        write_run(root, f"{name}/seed={seed}", seed=seed, val=linear_curve(final, config.get("max_steps", 200)),
                  **config)


def run_sweep(root, groups):
    """groups: name -> (finals, config kwargs). Returns (groups, rows)."""
    for name, (finals, config) in groups.items():
        make(root, name, finals, **config)
    _, groups, rows = analyse(root)
    return groups, rows


ORTHO = {"optimizer": "orthonoise", "alpha": 1e-3}


# ---- 3.1 ----

@pytest.mark.parametrize("pct, verdict", [(4.9, "PASS"), (-4.9, "PASS"), (5.1, "FAIL"), (-5.1, "FAIL")])
def test_loss_within_5pct(tmp_path, pct, verdict):
    _, rows = run_sweep(tmp_path, {"m": (BASE, {}), "o": (scaled(BASE, pct), ORTHO)})
    assert criteria.loss_within_baseline(rows).verdict == verdict


def test_loss_within_5pct_needs_two_seeds(tmp_path):
    _, rows = run_sweep(tmp_path, {"m": (BASE, {}), "o": (BASE[:1], ORTHO)})
    result = criteria.loss_within_baseline(rows)
    assert result.verdict == "INCONCLUSIVE" and "n=1 vs 2" in result.numbers


def test_no_crashes(tmp_path):
    groups, _ = run_sweep(tmp_path, {"m": (BASE, {})})
    now = time.time()
    assert criteria.no_crashes(groups, now).verdict == "PASS"
    write_run(tmp_path, "late", seed=9, status=None, metrics=False)  # just started, nothing written yet
    groups, _ = analyse(tmp_path)[1:]
    assert criteria.no_crashes(groups, now).verdict == "INCONCLUSIVE"
    assert criteria.no_crashes(groups, now + 3600).verdict == "FAIL"  # still nothing an hour later
    write_run(tmp_path, "boom", seed=8, status="diverged", val={50: 9.0})
    groups = analyse(tmp_path)[1]
    result = criteria.no_crashes(groups, now)
    assert result.verdict == "FAIL" and "boom (diverged)" in result.numbers


def test_an_interrupted_job_is_counted_and_leaves_no_crashes_undecided(tmp_path):
    run_sweep(tmp_path, {"m": (BASE, {})})
    write_run(tmp_path, "stopped", seed=3, status="interrupted", val={50: 2.4})
    result = criteria.no_crashes(analyse(tmp_path)[1], time.time())
    assert result.verdict == "INCONCLUSIVE" and "3 jobs" in result.numbers and "1 interrupted" in result.numbers


def test_eff_rank_logged(tmp_path):
    write_run(tmp_path, "m", val=linear_curve(2.0), eff_rank={200: 10.0})
    write_run(tmp_path, "a", optimizer="adamw", val=linear_curve(2.0))  # AdamW logs no rank: exempt
    assert criteria.eff_rank_logged(analyse(tmp_path)[1]).verdict == "PASS"
    write_run(tmp_path, "o", optimizer="orthonoise", alpha=1e-3, val=linear_curve(2.0))
    result = criteria.eff_rank_logged(analyse(tmp_path)[1])
    assert result.verdict == "FAIL" and "1/2" in result.numbers


# ---- 3.2 ----

@pytest.mark.parametrize("pct, verdict", [(-1.01, "PASS"), (-0.99, "FAIL")])
def test_alpha_beats_baseline_by_1pct(tmp_path, pct, verdict):
    _, rows = run_sweep(tmp_path, {"m": (BASE, {}), "o": (scaled(BASE, pct), ORTHO)})
    result = criteria.alpha_beats_baseline(rows)
    assert result.verdict == verdict, result.numbers


def test_alpha_beats_baseline_needs_significance(tmp_path):
    # 2% lower on average, but seeds spread ±5%: Welch p >> 0.05
    _, rows = run_sweep(tmp_path, {"m": ([1.90, 2.11], {}), "o": ([1.86, 2.07], ORTHO)})
    assert rows[1].welch_final.pvalue > 0.05
    assert criteria.alpha_beats_baseline(rows).verdict == "FAIL"


def test_alpha_beats_baseline_one_pass_suffices_and_single_seeds_are_inconclusive(tmp_path):
    _, rows = run_sweep(tmp_path, {"m": (BASE, {}), "o": (scaled(BASE, 0.5), ORTHO),
                                   "p": (scaled(BASE, -3)[:1], {"optimizer": "orthonoise", "alpha": 5e-3})})
    assert criteria.alpha_beats_baseline(rows).verdict == "INCONCLUSIVE"  # the only candidate winner has n=1
    make(tmp_path, "q", scaled(BASE, -2), optimizer="orthonoise", alpha=1e-2)
    result = criteria.alpha_beats_baseline(analyse(tmp_path)[2])
    assert result.verdict == "PASS" and "Bonferroni" in result.numbers


def _write_ranks(root, name, ranks, **config):
    for seed, rank in enumerate(ranks, start=1):
        write_run(root, f"{name}/seed={seed}", seed=seed, val=linear_curve(2.0), eff_rank={200: rank}, **config)


@pytest.mark.parametrize("ortho_ranks, verdict", [([14.0, 14.2], "PASS"), ([12.0, 12.3], "FAIL"),
                                                   ([9.0, 9.2], "FAIL"), ([14.0], "INCONCLUSIVE")])
def test_eff_rank_higher(tmp_path, ortho_ranks, verdict):
    _write_ranks(tmp_path, "m", [12.0, 12.2])
    _write_ranks(tmp_path, "o", ortho_ranks, **ORTHO)
    assert criteria.eff_rank_higher(analyse(tmp_path)[1]).verdict == verdict


@pytest.mark.parametrize("iso_pct, verdict", [(1.0, "PASS"), (0.0, "FAIL"), (-1.0, "FAIL")])
def test_isotropic_underperforms_at_matched_alpha(tmp_path, iso_pct, verdict):
    groups, _ = run_sweep(tmp_path, {
        "m": (BASE, {}), "o": (BASE, ORTHO),
        "o5": (scaled(BASE, 5), {"optimizer": "orthonoise", "alpha": 5e-3}),  # other alpha: not the match
        "i": (scaled(BASE, iso_pct), {"optimizer": "isotropic", "alpha": 1e-3})})
    result = criteria.isotropic_underperforms(groups)
    assert result.verdict == verdict, result.numbers
    assert "alpha=0.001" in result.numbers.split(" vs ")[1]


def test_isotropic_without_matching_orthonoise_is_inconclusive(tmp_path):
    groups, _ = run_sweep(tmp_path, {"o": (BASE, ORTHO), "i": (BASE, {"optimizer": "isotropic", "alpha": 1e-2})})
    assert criteria.isotropic_underperforms(groups).verdict == "INCONCLUSIVE"


# ---- 3.3 ----

B1 = {"preset": "granite-1b", "pretrained": True, "max_steps": 500}


@pytest.mark.parametrize("pct, verdict", [(-0.6, "PASS"), (-0.4, "FAIL")])
def test_advantage_replicates_above_half_percent(tmp_path, pct, verdict):
    _, rows = run_sweep(tmp_path, {"m": (BASE, B1), "o": (scaled(BASE, pct), {**ORTHO, **B1})})
    assert criteria.advantage_replicates(rows).verdict == verdict


def _early(root, name, at100, **config):
    for seed, loss in enumerate(at100, start=1):
        write_run(root, f"{name}/seed={seed}", seed=seed, val={50: 3.0, 100: loss, 150: 2.1, 200: 2.0}, **config)


@pytest.mark.parametrize("pct, verdict", [(1.9, "PASS"), (-9.4, "PASS"), (2.1, "FAIL"), (9.4, "FAIL")])
def test_early_training_stable_within_tolerance(tmp_path, pct, verdict):
    _early(tmp_path, "m", [2.1059, 2.1059])
    _early(tmp_path, "o", [2.1059 * (1 + pct / 100)] * 2, **ORTHO)
    result = criteria.early_training_stable(analyse(tmp_path)[2])
    assert result.verdict == verdict, result.numbers
    assert "step 100" in result.numbers


def test_early_training_needs_an_eval_by_step_100(tmp_path):
    for name, config in (("m", {}), ("o", ORTHO)):
        for seed in (1, 2):
            write_run(tmp_path, f"{name}/{seed}", seed=seed, val={150: 2.1, 200: 2.0}, **config)
    assert criteria.early_training_stable(analyse(tmp_path)[2]).verdict == "INCONCLUSIVE"


@pytest.mark.parametrize("ortho_final, verdict", [(1.9, "PASS"), (2.004, "FAIL")])
def test_from_scratch_faster(tmp_path, ortho_final, verdict):
    # baseline's mean curve reaches its own mean final (2.0) only at step 200; OrthoNoise at 1.9 gets
    # there by step 100; at 2.004 it never does
    groups, _ = run_sweep(tmp_path, {"m": ([1.999, 2.001], {}),
                                     "o": ([ortho_final - 0.001, ortho_final + 0.001], ORTHO)})
    result = criteria.from_scratch_faster(groups)
    assert result.verdict == verdict, result.numbers


def test_from_scratch_skips_fine_tuning(tmp_path):
    groups, _ = run_sweep(tmp_path, {"m": (BASE, B1), "o": (BASE, {**ORTHO, **B1})})
    assert criteria.from_scratch_faster(groups).verdict == "INCONCLUSIVE"


# ---- 4 ----

def test_phase4_per_model(tmp_path):
    small = {"preset": "granite-350m"}
    _, rows = run_sweep(tmp_path, {"m350": (BASE, small), "o350": (scaled(BASE, -0.5), {**ORTHO, **small}),
                                   "m1b": (BASE, B1), "o1b": (scaled(BASE, 0.3), {**ORTHO, **B1})})
    verdicts = {c.name.split(":")[0]: c.verdict for c in criteria.beats_baseline_per_model(rows)}
    assert verdicts == {"granite-350m": "PASS", "granite-1b": "FAIL"}


def test_evaluate_dispatches_on_phase(tmp_path):
    groups, rows = run_sweep(tmp_path, {"m": (BASE, {})})
    assert [len(criteria.evaluate(p, groups, rows, time.time())) for p in ("3.1", "3.2", "3.3", "4", None)] == \
        [3, 3, 3, 1, 0]
    assert {c.verdict for c in criteria.evaluate("3.2", groups, rows, time.time())} == {"INCONCLUSIVE"}
