"""Each phase criterion at its PASS / FAIL / INCONCLUSIVE boundaries (intervals against the plan's margins)."""

import time

import pytest

from orthonoise.optim.registry import REGISTRY, Kind, Role
from orthonoise.report import criteria
from orthonoise.report.analysis import analyse

from .fake_runs import TARGETS, linear_curve, write_run

BASE = [2.004, 2.006]  # mean 2.005, tiny spread: intervals of a few hundredths of a percent


def scaled(values, pct):
    """The values shifted by pct % of their mean (keeps the spread)."""
    shift = sum(values) / len(values) * pct / 100
    return [v + shift for v in values]


def make(root, name, finals, **config):
    for seed, final in enumerate(finals, start=1):
        write_run(root, f"{name}/seed={seed}", seed=seed, val=linear_curve(final, config.get("max_steps", 200)),
                  **config)


def run_sweep(root, groups):
    """groups: name -> (finals, config kwargs). Returns the analysis."""
    for name, (finals, config) in groups.items():
        make(root, name, finals, **config)
    return analyse(root)


ORTHO = {"optimizer": "orthonoise", "alpha": 1e-3}


# ---- 3.1 ----

@pytest.mark.parametrize("pct, verdict", [(4.9, "PASS"), (-4.9, "PASS"), (5.1, "FAIL"), (-5.1, "FAIL")])
def test_loss_within_5pct(tmp_path, pct, verdict):
    a = run_sweep(tmp_path, {"m": (BASE, {}), "o": (scaled(BASE, pct), ORTHO)})
    assert criteria.loss_within_baseline(a.groups, a.families).verdict == verdict


def test_loss_within_5pct_is_inconclusive_when_the_interval_straddles_the_margin(tmp_path):
    # Δ 4% but seeds spread ±3%: neither equivalence nor a difference beyond 5% is shown
    a = run_sweep(tmp_path, {"m": ([1.94, 2.06], {}), "o": ([2.08, 2.08 * 1.04 * 1.03], ORTHO)})
    result = criteria.loss_within_baseline(a.groups, a.families)
    assert result.verdict == "INCONCLUSIVE", result.numbers


def test_loss_within_5pct_needs_two_seeds(tmp_path):
    a = run_sweep(tmp_path, {"m": (BASE, {}), "o": (BASE[:1], ORTHO)})
    result = criteria.loss_within_baseline(a.groups, a.families)
    assert result.verdict == "INCONCLUSIVE" and "fewer than 2" in result.numbers


def test_no_crashes(tmp_path):
    a = run_sweep(tmp_path, {"m": (BASE, {})})
    now = time.time()
    assert criteria.no_crashes(a.groups, now).verdict == "PASS"
    write_run(tmp_path, "late", seed=9, status=None, metrics=False)  # just started, nothing written yet
    groups = analyse(tmp_path).groups
    assert criteria.no_crashes(groups, now).verdict == "INCONCLUSIVE"
    assert criteria.no_crashes(groups, now + 3600).verdict == "FAIL"  # still nothing an hour later
    write_run(tmp_path, "boom", seed=8, status="diverged", val={50: 9.0})
    result = criteria.no_crashes(analyse(tmp_path).groups, now)
    assert result.verdict == "FAIL" and "boom (diverged)" in result.numbers


def test_an_interrupted_job_is_counted_and_leaves_no_crashes_undecided(tmp_path):
    run_sweep(tmp_path, {"m": (BASE, {})})
    write_run(tmp_path, "stopped", seed=3, status="interrupted", val={50: 2.4})
    a = analyse(tmp_path)
    result = criteria.no_crashes(a.groups, time.time())
    assert result.verdict == "INCONCLUSIVE" and "3 jobs" in result.numbers and "1 interrupted" in result.numbers
    assert a.interim


def test_eff_rank_logged(tmp_path):
    write_run(tmp_path, "m", val=linear_curve(2.0), eff_rank={200: 10.0})
    write_run(tmp_path, "a", optimizer="adamw", val=linear_curve(2.0))  # AdamW logs no rank: exempt
    assert criteria.eff_rank_logged(analyse(tmp_path).groups).verdict == "PASS"
    write_run(tmp_path, "o", optimizer="orthonoise", alpha=1e-3, val=linear_curve(2.0))
    result = criteria.eff_rank_logged(analyse(tmp_path).groups)
    assert result.verdict == "FAIL" and "1/2" in result.numbers


# ---- 3.2 ----

@pytest.mark.parametrize("pct, verdict", [(-1.01, "PASS"), (-0.99, "FAIL")])
def test_beats_baseline_by_1pct_tests_the_margin(tmp_path, pct, verdict):
    a = run_sweep(tmp_path, {"m": (BASE, {}), "o": (scaled(BASE, pct), ORTHO)})
    result = criteria.beats_baseline(a.groups, a.families)
    assert result.verdict == verdict, result.numbers


def test_not_significant_is_inconclusive_not_fail(tmp_path):
    # 2% lower on average, but seeds spread ±5%: the interval covers both −1% and 0
    a = run_sweep(tmp_path, {"m": ([1.90, 2.11], {}), "o": ([1.86, 2.07], ORTHO)})
    result = criteria.beats_baseline(a.groups, a.families)
    assert result.verdict == "INCONCLUSIVE", result.numbers


def test_beats_baseline_one_pass_suffices_and_single_seeds_are_inconclusive(tmp_path):
    run_sweep(tmp_path, {"m": (BASE, {}), "o": (scaled(BASE, 0.5), ORTHO),
                         "p": (scaled(BASE, -3)[:1], {"optimizer": "orthonoise", "alpha": 5e-3})})
    a = analyse(tmp_path)
    assert criteria.beats_baseline(a.groups, a.families).verdict == "INCONCLUSIVE"  # the winner has n=1
    make(tmp_path, "q", scaled(BASE, -2), optimizer="orthonoise", alpha=1e-2)
    a = analyse(tmp_path)
    result = criteria.beats_baseline(a.groups, a.families)
    assert result.verdict == "PASS" and "Better than baseline (upper bound < 0): optimizer=orthonoise" in result.numbers


def test_a_method_variant_joins_the_criteria_by_its_registry_entry(tmp_path, monkeypatch):
    sketch = {"optimizer": "sketchnoise"}
    monkeypatch.setitem(TARGETS, "sketchnoise", "orthonoise.optim.SketchNoise")
    a = run_sweep(tmp_path, {"m": (BASE, {}), "s": (scaled(BASE, -3), sketch)})
    unregistered = criteria.beats_baseline(a.groups, a.families)
    assert unregistered.verdict == "INCONCLUSIVE" and "sketchnoise" not in unregistered.numbers
    monkeypatch.setitem(REGISTRY, "sketchnoise", Kind("sketchnoise", "orthonoise.optim.SketchNoise", Role.METHOD,
                                                      muon_family=True, compared_with="muon"))
    registered = criteria.beats_baseline(a.groups, a.families)
    assert registered.verdict == "PASS" and "optimizer=sketchnoise" in registered.numbers
    assert "0/4 completed Muon-family runs" in criteria.eff_rank_logged(a.groups).numbers  # muon's and the variant's


def test_a_diverged_seed_stops_a_pass_and_is_counted(tmp_path):
    run_sweep(tmp_path, {"m": (BASE + [2.005], {}), "o": (scaled(BASE, -2) + [1.96], ORTHO)})
    a = analyse(tmp_path)
    assert criteria.beats_baseline(a.groups, a.families).verdict == "PASS"
    (tmp_path / "o" / "seed=3" / "summary.json").write_text(
        '{"status": "diverged", "steps": 50, "max_steps": 200, "diverged": "loss nan"}')
    a = analyse(tmp_path)
    result = criteria.beats_baseline(a.groups, a.families)
    assert result.verdict == "INCONCLUSIVE" and "2/3 completed, 1/3 diverged" in result.numbers
    (tmp_path / "o" / "seed=2" / "summary.json").write_text(
        '{"status": "diverged", "steps": 50, "max_steps": 200, "diverged": "loss nan"}')
    a = analyse(tmp_path)
    result = criteria.beats_baseline(a.groups, a.families)
    assert result.verdict == "FAIL" and "2/3 diverged" in result.numbers  # the method lost most of its seeds


def _write_ranks(root, name, ranks, **config):
    for seed, rank in enumerate(ranks, start=1):
        write_run(root, f"{name}/seed={seed}", seed=seed, val=linear_curve(2.0 + seed / 100), eff_rank={200: rank},
                  **config)


@pytest.mark.parametrize("ortho_ranks, verdict", [([14.0, 14.2], "PASS"), ([12.0, 12.3], "INCONCLUSIVE"),
                                                   ([9.0, 9.2], "FAIL"), ([14.0], "INCONCLUSIVE")])
def test_eff_rank_higher(tmp_path, ortho_ranks, verdict):
    _write_ranks(tmp_path, "m", [12.0, 12.2])
    _write_ranks(tmp_path, "o", ortho_ranks, **ORTHO)
    a = analyse(tmp_path)
    assert criteria.eff_rank_higher(a.groups, a.rank_families).verdict == verdict


@pytest.mark.parametrize("iso_pct, verdict", [(1.0, "PASS"), (0.0, "INCONCLUSIVE"), (-1.0, "FAIL")])
def test_isotropic_underperforms_at_matched_alpha(tmp_path, iso_pct, verdict):
    a = run_sweep(tmp_path, {
        "m": (BASE, {}), "o": (BASE, ORTHO),
        "o5": (scaled(BASE, 5), {"optimizer": "orthonoise", "alpha": 5e-3}),  # other alpha: not the match
        "i": (scaled(BASE, iso_pct), {"optimizer": "isotropic", "alpha": 1e-3})})
    result = criteria.isotropic_underperforms(a.groups, a.families)
    assert result.verdict == verdict, result.numbers
    assert "alpha=0.001" in result.numbers.split(" vs ")[1]


def test_isotropic_without_matching_orthonoise_is_inconclusive(tmp_path):
    a = run_sweep(tmp_path, {"o": (BASE, ORTHO), "i": (BASE, {"optimizer": "isotropic", "alpha": 1e-2})})
    assert criteria.isotropic_underperforms(a.groups, a.families).verdict == "INCONCLUSIVE"


# ---- 3.3 ----

B1 = {"preset": "granite-1b", "pretrained": True, "max_steps": 500}


@pytest.mark.parametrize("pct, verdict", [(-0.6, "PASS"), (-0.4, "FAIL")])
def test_advantage_replicates_above_half_percent(tmp_path, pct, verdict):
    a = run_sweep(tmp_path, {"m": (BASE, B1), "o": (scaled(BASE, pct), {**ORTHO, **B1})})
    assert criteria.advantage_replicates(a.groups).verdict == verdict


def _early(root, name, at100, **config):
    for seed, loss in enumerate(at100, start=1):
        write_run(root, f"{name}/seed={seed}", seed=seed, val={50: 3.0, 100: loss, 150: 2.1, 200: 2.0}, **config)


@pytest.mark.parametrize("pct, verdict", [(1.5, "PASS"), (-9.4, "PASS"), (2.5, "FAIL"), (9.4, "FAIL")])
def test_early_training_stable_is_non_inferiority(tmp_path, pct, verdict):
    base = [2.1059, 2.1159]
    _early(tmp_path, "m", base)
    _early(tmp_path, "o", [base[0] * (1 + pct / 100) * 1.0001, base[1] * (1 + pct / 100) * 0.9999], **ORTHO)
    result = criteria.early_training_stable(analyse(tmp_path).groups)
    assert result.verdict == verdict, result.numbers
    assert "step 100" in result.numbers


def test_early_training_needs_an_eval_by_step_100(tmp_path):
    for name, config in (("m", {}), ("o", ORTHO)):
        for seed in (1, 2):
            write_run(tmp_path, f"{name}/{seed}", seed=seed, val={150: 2.1, 200: 2.0}, **config)
    assert criteria.early_training_stable(analyse(tmp_path).groups).verdict == "INCONCLUSIVE"


SLOW = [{50: 2.6, 100: 2.3, 150: 2.1, 200: 2.0}, {50: 2.62, 100: 2.32, 150: 2.12, 200: 2.02}]
FAST = [{50: 2.5, 100: 2.1, 150: 2.0, 200: 1.95}, {50: 2.45, 100: 2.12, 150: 2.0, 200: 1.96}]


@pytest.mark.parametrize("ortho_curves, ortho_wall_s, verdict", [
    (FAST, 60.0, "PASS"),  # ~2/3 of the baseline's steps, same cost per step
    (FAST, 120.0, "FAIL"),  # fewer steps, but each costs twice as much: slower in GPU-seconds
    (SLOW, 60.0, "INCONCLUSIVE"),  # the same curves: no difference shown either way
])
def test_from_scratch_faster_in_steps_and_gpu_seconds(tmp_path, ortho_curves, ortho_wall_s, verdict):
    # target: the baseline's mean loss at 150 = 75% of 200 steps (2.11), reached between evals (interpolated)
    for seed, (slow, fast) in enumerate(zip(SLOW, ortho_curves), start=1):
        write_run(tmp_path, f"m/{seed}", seed=seed, val=slow)
        write_run(tmp_path, f"o/{seed}", seed=seed, val=fast, wall_time_s=ortho_wall_s * (1 + seed / 1000), **ORTHO)
    result = criteria.from_scratch_faster(analyse(tmp_path).groups)
    assert result.verdict == verdict, result.numbers
    assert "target 2.1100" in result.numbers


def test_from_scratch_skips_fine_tuning(tmp_path):
    a = run_sweep(tmp_path, {"m": (BASE, B1), "o": (BASE, {**ORTHO, **B1})})
    assert criteria.from_scratch_faster(a.groups).verdict == "INCONCLUSIVE"


# ---- 4 ----

def test_phase4_per_model(tmp_path):
    small = {"preset": "granite-350m"}
    a = run_sweep(tmp_path, {"m350": (BASE, small), "o350": (scaled(BASE, -0.5), {**ORTHO, **small}),
                             "m1b": (BASE, B1), "o1b": (scaled(BASE, 0.3), {**ORTHO, **B1})})
    verdicts = {c.name.split(":")[0]: c.verdict for c in criteria.beats_baseline_per_model(a.groups)}
    assert verdicts == {"granite-350m": "PASS", "granite-1b": "FAIL"}


def test_evaluate_dispatches_on_phase(tmp_path):
    a = run_sweep(tmp_path, {"m": (BASE, {})})
    counts = [len(criteria.evaluate(p, a.groups, a.families, a.rank_families, time.time()))
              for p in ("3.1", "3.2", "3.3", "4", None)]
    assert counts == [3, 3, 3, 1, 0]
    assert {c.verdict for c in criteria.evaluate("3.2", a.groups, a.families, a.rank_families, time.time())} == \
        {"INCONCLUSIVE"}
