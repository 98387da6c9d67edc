"""The pass criteria of the experiment plan's phases (sweeps/), as three-way verdicts from intervals (engine.py).

PASS when the whole interval clears the plan's margin, FAIL when the whole interval is on the wrong side,
INCONCLUSIVE otherwise: "not shown" is never FAIL. Every item names its arms' seeds by state; a diverged or failed
seed of an arm stops that item from passing (FAIL when the tested arm lost half its seeds or more). Every item names
the settings its arms differ in beyond the comparison's own (fairness.py); one the plan does not declare leaves the
item INCONCLUSIVE. docs/report.md states each rule in words.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from orthonoise.optim.registry import REGISTRY, Role, matches
from orthonoise.run.rundir import EFF_RANK

from . import engine, fairness, measures
from .collect import COMPLETED, DIVERGED, FAILED, MISSING
from .engine import FAIL, INCONCLUSIVE, PASS
from .groups import Group

PHASES = ("3.1", "3.2", "3.3", "4")
SANITY_TOLERANCE_PCT = 5.0  # 3.1: final loss within 5% of the baseline (equivalence, TOST)
SIGNAL_MARGIN_PCT = 1.0  # 3.2: a config beats the baseline by more than 1%
REPLICATION_MARGIN_PCT = 0.5  # 3.3: the advantage at 1B is larger than 0.5%
# 3.3 early stability: loss at step 100 at most this much worse than the baseline's (non-inferiority; the plan's
# margin, docs/report.md; `--early-tolerance` sets another). NOLAH, the archived comparison, was 9.4% worse on 1b.
EARLY_TOLERANCE_PCT = 2.0
TARGET_FRACTION = 0.75  # "faster": target = the baseline's mean loss at 75% of max_steps


@dataclass
class Criterion:
    name: str
    verdict: str
    numbers: str  # the numbers behind the verdict, one item per compared group or pair
    unlike: str = ""  # the settings its compared arms differ in beyond the comparison's own (fairness.py)


@dataclass
class Judgement:
    """One compared item (a group vs its baseline, a pair, ...) inside a criterion."""
    verdict: str
    text: str
    unlike: str = ""


def all_must_pass(judgements: list[Judgement]) -> str:
    verdicts = {j.verdict for j in judgements}
    if not judgements or (INCONCLUSIVE in verdicts and FAIL not in verdicts):
        return INCONCLUSIVE
    return FAIL if FAIL in verdicts else PASS


def one_must_pass(judgements: list[Judgement]) -> str:
    verdicts = [j.verdict for j in judgements]
    if PASS in verdicts:
        return PASS
    return FAIL if verdicts and all(v == FAIL for v in verdicts) else INCONCLUSIVE


def _criterion(name: str, judgements: list[Judgement], combine, empty_reason: str, note: str = "") -> Criterion:
    if not judgements:
        return Criterion(name, INCONCLUSIVE, empty_reason)
    numbers = "; ".join(f"{j.text} → {j.verdict}" for j in judgements)
    unlike = "; ".join(dict.fromkeys(j.unlike for j in judgements if j.unlike))
    return Criterion(name, combine(judgements), numbers + (f". {note}" if note else ""), unlike)


def fmt_pct(value: float) -> str:
    return "nan" if not math.isfinite(value) else f"{value:+.2f}%"


def fmt_interval(bounds: tuple[float, float]) -> str:
    return f"[{fmt_pct(bounds[0])}, {fmt_pct(bounds[1])}]"


def why_no_interval(comp: engine.Comparison) -> str:
    return f" ({comp.reason})" if comp.reason else ""


def health(verdict: str, tested: Group, *others: Group) -> tuple[str, str]:
    """The item's verdict after counting every arm's seeds, and the seed counts to show. A diverged or
    failed seed is evidence against the tested arm (FAIL when it is half its seeds or more; else no PASS);
    one in another arm (the baseline) leaves the comparison INCONCLUSIVE at best."""
    counts = [(len(arm.replicates), arm.count(DIVERGED, FAILED)) for arm in (tested, *others)]
    return lost_seeds_verdict(verdict, counts[0], counts[1:]), seeds_text(tested, *others)


def lost_seeds_verdict(verdict: str, tested: tuple[int, int], others: list[tuple[int, int]]) -> str:
    """The rule behind `health` on (seeds, lost seeds) per arm; table mode applies it to its diverged values."""
    n, bad = tested
    if bad and 2 * bad >= n:
        return FAIL
    if verdict == PASS and (bad or any(lost for _, lost in others)):
        return INCONCLUSIVE
    return verdict


def judge(verdict: str, text: str, tested: Group, *others: Group) -> Judgement:
    """One item: its verdict after the arms' settings are compared (fairness.like_for_like) and their seeds counted
    (health), with both said in the text."""
    verdict, unlike = fairness.like_for_like(verdict, tested, *others)
    verdict, seeds = health(verdict, tested, *others)
    return Judgement(verdict, f"{text} ({seeds}{'; unlike arms: ' + unlike if unlike else ''})", unlike)


def seeds_text(*arms: Group) -> str:
    """'seeds 3 vs 3, all completed', or every arm's seeds by state when any did not complete."""
    if all(arm.count(COMPLETED) == len(arm.replicates) for arm in arms):
        return "seeds " + " vs ".join(str(len(arm.replicates)) for arm in arms) + ", all completed"
    return "seeds " + " vs ".join(arm.seed_counts() for arm in arms)


def _method_groups(groups: list[Group]) -> list[Group]:
    return [g for g in groups if g.has_role(Role.METHOD) and not g.is_baseline and g.baseline is not None]


# ---- phase 3.1 -------------------------------------------------------------------------------

def no_crashes(groups: list[Group], now: float) -> Criterion:
    runs = [run for g in groups for run in g.replicates.values()]
    crashed = [r for r in runs if r.state in (FAILED, DIVERGED) or (r.state == MISSING and r.is_stale(now))]
    unfinished = [r for r in runs if not r.state.finished and r not in crashed]
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.state_text] = counts.get(r.state_text, 0) + 1
    numbers = f"{len(runs)} jobs: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    if crashed:
        numbers += "; crashed: " + ", ".join(f"{r.path.name} ({r.state})" for r in crashed)
        return Criterion("No crashes", FAIL, numbers)
    if unfinished or not runs:
        return Criterion("No crashes", INCONCLUSIVE, numbers + ("; some jobs have not finished" if runs else "no jobs"))
    return Criterion("No crashes", PASS, numbers)


def loss_within_baseline(groups: list[Group], families: dict, tolerance_pct: float = SANITY_TOLERANCE_PCT
                         ) -> Criterion:
    """Equivalence by TOST: the 90% interval of Δ inside ±tolerance (PASS); FAIL when the simultaneous 95%
    interval is wholly outside."""
    judgements = []
    for g in [g for g in groups if not g.is_baseline and g.baseline is not None]:
        comp = families[id(g.baseline)].comparisons.get(g.label)
        if comp is None:
            verdict, text = INCONCLUSIVE, "fewer than 2 completed seeds a side"
        else:
            tost, sim = comp.t_bounds_pct(0.90), comp.bounds_pct()
            verdict = engine.within(tost, sim, tolerance_pct)
            text = (f"Δ {fmt_pct(comp.delta_pct)}, 90% {fmt_interval(tost)}, simultaneous 95% {fmt_interval(sim)}"
                    + why_no_interval(comp))
        judgements.append(judge(verdict, f"{g.label} vs {g.baseline.label}: {text}", g, g.baseline))
    return _criterion(f"Final val loss within {tolerance_pct:g}% of baseline (TOST)", judgements, all_must_pass,
                      "no non-baseline groups to compare")


def eff_rank_logged(groups: list[Group]) -> Criterion:
    """Every completed Muon-family run logged a finite eff_rank at some eval (a crashed run may
    have stopped after the step-0 eval, where there is no momentum to measure yet)."""
    checked = [r for g in groups if g.registered and g.registered.muon_family for r in g.completed]
    lacking = [r for r in checked if not r.evals(EFF_RANK)]
    name = "Effective rank logged"
    if not checked:
        return Criterion(name, INCONCLUSIVE, "no completed Muon-family run")
    numbers = f"{len(checked) - len(lacking)}/{len(checked)} completed Muon-family runs logged eff_rank"
    if lacking:
        return Criterion(name, FAIL, numbers + "; missing in " + ", ".join(r.path.name for r in lacking))
    return Criterion(name, PASS, numbers)


# ---- phase 3.2 -------------------------------------------------------------------------------

def beats_by(comp: engine.Comparison, margin_pct: float) -> str:
    """The 3.2 rule for one config: PASS when its simultaneous upper bound of Δ is below −margin, FAIL when its
    lower bound is at or above −margin."""
    return engine.below(comp.low_pct, comp.high_pct, -margin_pct)


def beats_baseline(groups: list[Group], families: dict, margin_pct: float = SIGNAL_MARGIN_PCT) -> Criterion:
    """A method config's simultaneous upper bound of Δ below −margin (PASS for that config); one must pass."""
    judgements, better = [], []
    for g in _method_groups(groups):
        comp = families[id(g.baseline)].comparisons.get(g.label)
        if comp is None:
            verdict, text = INCONCLUSIVE, "fewer than 2 completed seeds a side"
        else:
            verdict = beats_by(comp, margin_pct)
            text = f"Δ {fmt_pct(comp.delta_pct)} {fmt_interval(comp.bounds_pct())}{why_no_interval(comp)}"
            if comp.high_pct < 0:
                unlike = not fairness.like_against_like(g, g.baseline)
                better.append(f"{g.label} (upper bound {fmt_pct(comp.high_pct)}"
                              + ("; unlike arms, not evidence for the method)" if unlike else ")"))
        judgements.append(judge(verdict, f"{g.label}: {text}", g, g.baseline))
    note = "Better than baseline (upper bound < 0): " + (", ".join(better) if better else "none")
    return _criterion(f"An OrthoNoise config beats baseline by >{margin_pct:g}% (simultaneous 95%)", judgements,
                      one_must_pass, "no OrthoNoise groups with a baseline", note)


def eff_rank_higher(groups: list[Group], rank_families: dict) -> Criterion:
    """Per method config: last-eval effective rank vs the baseline's, simultaneous 95% interval above 0."""
    judgements = []
    for g in _method_groups(groups):
        comp = rank_families[id(g.baseline)].comparisons.get(g.label)
        if comp is None:
            verdict, text = INCONCLUSIVE, "eff_rank from fewer than 2 runs a side"
        else:
            verdict = engine.above(comp.low_pct, comp.high_pct, 0.0)
            text = f"eff. rank {fmt_pct(comp.delta_pct)} {fmt_interval(comp.bounds_pct())}{why_no_interval(comp)}"
        judgements.append(judge(verdict, f"{g.label}: {text}", g, g.baseline))
    return _criterion("Effective rank higher with OrthoNoise (a config, simultaneous 95%)", judgements,
                      one_must_pass, "no OrthoNoise group with a baseline")


def matched_method(control: Group, groups: list[Group]) -> Group | None:
    """The group of the control's method (registry: `matched_to`) at the same setting that differs from `control`
    only in the optimizer class and its distribution's own settings (registry.matches)."""
    for other in groups:
        if other.setting == control.setting and matches(control.registered, control.config, other.config):
            return other
    return None


def isotropic_underperforms(groups: list[Group], families: dict) -> Criterion:
    """Control − matched method, a contrast of the blocked model: PASS when its 95% interval is above 0
    (Bonferroni over the controls in the sweep)."""
    controls = [g for g in groups if g.has_role(Role.CONTROL) and g.registered.matched_to in REGISTRY]
    judgements = []
    for iso in controls:
        ortho = matched_method(iso, groups)
        if ortho is None or iso.baseline is None:
            judgements.append(Judgement(INCONCLUSIVE, f"{iso.label}: no OrthoNoise group at matched settings"))
            continue
        comp = families[id(iso.baseline)].contrast(iso.label, ortho.label)
        if comp is None or not math.isfinite(comp.se):
            verdict, text = INCONCLUSIVE, "fewer than 2 completed seeds a side"
        else:
            bounds = comp.t_bounds_pct(1 - (1 - engine.CONFIDENCE) / len(controls))
            verdict = engine.above(*bounds, 0.0)
            text = f"Δ {fmt_pct(comp.delta_pct)} {fmt_interval(bounds)}{why_no_interval(comp)}"
        verdict, unlike = fairness.like_for_like(verdict, ortho, iso)
        verdict, _ = health(verdict, ortho, iso)  # the method under test is OrthoNoise: its losses count against it
        seeds = seeds_text(iso, ortho) + (f"; unlike arms: {unlike}" if unlike else "")
        judgements.append(Judgement(verdict, f"{iso.label} vs {ortho.label}: {text} ({seeds})", unlike))
    return _criterion("Isotropic control underperforms OrthoNoise at matched alpha (blocked contrast, 95%)",
                      judgements, all_must_pass, "no isotropic control group in this sweep")


# ---- phase 3.3 -------------------------------------------------------------------------------

def _paired_item(g: Group, value_of, margin_pct: float, confidence: float, claim) -> tuple[str, str, object]:
    """One method group vs its baseline on a per-run value, no multiplicity: (verdict, text, comparison)."""
    base = g.baseline
    values = {s: value_of(r) for s, r in g.completed_by_seed.items()}
    base_values = {s: value_of(r) for s, r in base.completed_by_seed.items()}
    comp = engine.pair(values, base_values, g.label)
    if comp is None:
        return INCONCLUSIVE, "fewer than 2 values a side", None
    bounds = comp.t_bounds_pct(confidence)
    text = (f"Δ {fmt_pct(comp.delta_pct)}, {confidence:.0%} {fmt_interval(bounds)}, n={comp.n} vs {comp.n_base}"
            + why_no_interval(comp))
    return claim(*bounds, margin_pct), text, comp


def advantage_replicates(groups: list[Group], margin_pct: float = REPLICATION_MARGIN_PCT) -> Criterion:
    """The pre-selected config (one per setting): paired 95% upper bound of Δ final below −margin."""
    judgements = []
    for g in _method_groups(groups):
        verdict, text, _ = _paired_item(g, lambda r: r.final_val_loss, -margin_pct, engine.CONFIDENCE, engine.below)
        judgements.append(judge(verdict, f"{g.label}: {text}", g, g.baseline))
    return _criterion(f"OrthoNoise advantage >{margin_pct:g}% replicates (paired 95%)", judgements,
                      all_must_pass, "no OrthoNoise groups")


def early_training_stable(groups: list[Group], tolerance_pct: float = EARLY_TOLERANCE_PCT) -> Criterion:
    """Non-inferiority at step 100: paired 95% upper bound of Δ@100 below +tolerance."""
    judgements = []
    for g in _method_groups(groups):
        steps = {at[0] for grp in (g, g.baseline) for r in grp.completed if (at := measures.loss_at_step(r))}
        if len(steps) > 1:
            verdict, text = INCONCLUSIVE, f"read at different eval steps {sorted(steps)}"
        else:
            verdict, text, _ = _paired_item(g, lambda r: (measures.loss_at_step(r) or (None, None))[1],
                                            tolerance_pct, engine.CONFIDENCE, engine.below)
            text = f"loss at step {min(steps) if steps else '–'}: {text}"
        judgements.append(judge(verdict, f"{g.label}: {text}", g, g.baseline))
    return _criterion(f"Early training stable (loss at step {measures.EARLY_STEP} at most {tolerance_pct:g}% "
                      "worse than baseline, paired 95%)", judgements, all_must_pass, "no OrthoNoise groups")


def faster_item(g: Group) -> tuple[str, str]:
    """Steps and GPU-seconds to the target loss, paired ratios; PASS needs both upper bounds below 0%."""
    base = g.baseline
    target = measures.target_loss(base, TARGET_FRACTION)
    if target is None:
        return INCONCLUSIVE, "the baseline's mean curve has no eval near 75% of max_steps"
    verdicts, texts = [], [f"target {target:.4f}"]
    for name, value_of in (("steps", lambda r: measures.steps_to_reach(r, target)),
                           ("GPU-s", lambda r: measures.device_seconds_to_reach(r, target))):
        never = [r for grp in (g, base) for r in grp.completed if value_of(r) is None]
        verdict, text, _ = _paired_item(g, value_of, 0.0, engine.CONFIDENCE, engine.below)
        if never:
            verdict = INCONCLUSIVE if verdict != FAIL else FAIL
            text += f", {len(never)} run(s) never reached it"
        verdicts.append(verdict)
        texts.append(f"{name} ratio {text}")
    verdict = PASS if verdicts == [PASS, PASS] else FAIL if FAIL in verdicts else INCONCLUSIVE
    return verdict, "; ".join(texts)


def from_scratch_faster(groups: list[Group]) -> Criterion:
    judgements = []
    for g in [g for g in _method_groups(groups) if not g.config.get("model.pretrained")]:
        verdict, text = faster_item(g)
        judgements.append(judge(verdict, f"{g.label}: {text}", g, g.baseline))
    return _criterion("From-scratch training faster than baseline (steps and GPU-seconds to target, paired 95%)",
                      judgements, all_must_pass, "no from-scratch (model.pretrained=false) OrthoNoise groups")


# ---- phase 4 ---------------------------------------------------------------------------------

def beats_baseline_per_model(groups: list[Group]) -> list[Criterion]:
    """Per model: each method group better than its baseline, paired one-sided 95% (two-sided 90% upper bound
    below 0)."""
    by_model: dict[str, list[Judgement]] = {}
    for g in _method_groups(groups):
        verdict, text, _ = _paired_item(g, lambda r: r.final_val_loss, 0.0, 0.90, engine.below)
        by_model.setdefault(str(g.config.get("model.preset")), []).append(
            judge(verdict, f"{g.label}: {text.replace('90%', 'one-sided 95%')}", g, g.baseline))
    name = "OrthoNoise final loss better than baseline (paired, one-sided 95%)"
    if not by_model:
        return [Criterion(name, INCONCLUSIVE, "no OrthoNoise groups")]
    return [_criterion(f"{model}: {name}", judgements, all_must_pass, "")
            for model, judgements in sorted(by_model.items())]


def evaluate(phase: str | None, groups: list[Group], families: dict, rank_families: dict, now: float,
             early_tolerance_pct: float = EARLY_TOLERANCE_PCT) -> list[Criterion]:
    if phase == "3.1":
        return [no_crashes(groups, now), loss_within_baseline(groups, families), eff_rank_logged(groups)]
    if phase == "3.2":
        return [beats_baseline(groups, families), eff_rank_higher(groups, rank_families),
                isotropic_underperforms(groups, families)]
    if phase == "3.3":
        return [advantage_replicates(groups), early_training_stable(groups, early_tolerance_pct),
                from_scratch_faster(groups)]
    if phase == "4":
        return beats_baseline_per_model(groups)
    return []

