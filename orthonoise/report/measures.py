"""Measures read off the validation curves: per run, and per group over its completed seeds (plots.py draws
the per-group ones)."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from orthonoise.run.rundir import VAL_LOSS

from .collect import Run
from .engine import pct
from .groups import Group

EARLY_STEP = 100  # phase 3.3's early-stability measure is the val loss at step 100 (docs/report.md)


def loss_at_step(run: Run, step: int = EARLY_STEP) -> tuple[int, float] | None:
    """(eval step, val loss) of the last eval at or before `step` (step 0 excluded: no training yet)."""
    before = [(s, v) for s, v in run.evals() if 0 < s <= step]
    return before[-1] if before else None


def steps_to_reach(run: Run, target: float) -> float | None:
    """The step at which the val loss first reaches `target`, interpolated linearly between the two evals
    around the crossing; None if the run never got there."""
    previous = None
    for step, value in run.evals():
        if value <= target:
            if previous is None or previous[1] == value:
                return float(step)
            s0, v0 = previous
            return s0 + (v0 - target) / (v0 - value) * (step - s0)
        previous = (step, value)
    return None


def device_seconds_to_reach(run: Run, target: float) -> float | None:
    """GPU-seconds (CPU: wall-seconds × processes) until the target: steps to reach it × seconds per step."""
    steps, per_step = steps_to_reach(run, target), run.device_seconds_per_step
    return None if steps is None or per_step is None else steps * per_step


def steps_to_within_best(run: Run, pct: float = 1.0) -> float | None:
    """First step (interpolated) within `pct` % of the run's own best val loss."""
    best = run.best_val_loss
    return None if best is None else steps_to_reach(run, best * (1 + pct / 100))


def target_loss(group: Group, fraction: float) -> float | None:
    """The group's seed-mean val loss at `fraction` of max_steps, interpolated between its evals."""
    curve = seed_mean_curve(group)
    max_steps = group.config.get("trainer.max_steps")
    if len(curve) < 2 or not max_steps:
        return None
    steps, values = zip(*curve)
    at = fraction * max_steps
    if not steps[0] <= at <= steps[-1]:
        return None
    return float(np.interp(at, steps, values))


def seed_mean_curve(group: Group) -> list[tuple[int, float]]:
    """(step, mean val loss) over the eval steps that every completed seed of the group logged."""
    curves = [dict(r.evals()) for r in group.completed]
    if not curves:
        return []
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    return [(s, float(np.mean([c[s] for c in curves]))) for s in steps]


def seed_band(group: Group, key: str) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
    """Steps, mean, min and max of `key` over the group's completed seeds at each logged step."""
    by_step: dict[int, list[float]] = {}
    for run in group.completed:
        for step, value in run.evals(key):
            by_step.setdefault(step, []).append(value)
    steps = sorted(by_step)
    values = [by_step[s] for s in steps]
    return (steps, np.array([np.mean(v) for v in values]), np.array([min(v) for v in values]),
            np.array([max(v) for v in values]))


def paired_differences(group: Group, key: str = VAL_LOSS) -> tuple[list[int], np.ndarray]:
    """Steps logged by every shared seed, and per-seed % differences group vs baseline (rows = seeds)."""
    base = group.baseline
    mine = {s: dict(r.evals(key)) for s, r in group.completed_by_seed.items()}
    theirs = {s: dict(r.evals(key)) for s, r in base.completed_by_seed.items()}
    seeds = sorted(set(mine) & set(theirs), key=str)
    if not seeds:
        return [], np.empty((0, 0))
    steps = sorted(set.intersection(*(set(mine[s]) & set(theirs[s]) for s in seeds)))
    diffs = np.array([[pct(math.log(mine[s][t] / theirs[s][t])) for t in steps] for s in seeds])
    return steps, diffs


def mean_band(rows: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray | None]:
    """Column means of `rows` (one row per seed) and the half-width of their pointwise two-sided t interval;
    None with fewer than two rows."""
    mean = rows.mean(axis=0)
    if len(rows) < 2:
        return mean, None
    return mean, stats.t.ppf(0.5 + confidence / 2, len(rows) - 1) * rows.std(axis=0, ddof=1) / math.sqrt(len(rows))
