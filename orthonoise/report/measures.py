"""Per-run measures read off the validation curve."""

from __future__ import annotations

from .collect import Run

EARLY_STEP = 100  # the user's early-instability measure: val loss at step 100


def loss_at_step(run: Run, step: int = EARLY_STEP) -> tuple[int, float] | None:
    """(eval step, val loss) of the last eval at or before `step` (step 0 excluded: no training yet)."""
    before = [(s, v) for s, v in run.evals() if 0 < s <= step]
    return before[-1] if before else None


def steps_to_reach(run: Run, target: float) -> int | None:
    """First eval step whose val loss is <= target; None if the run never got there."""
    return next((s for s, v in run.evals() if v <= target), None)


def steps_to_within_best(run: Run, pct: float = 1.0) -> int | None:
    """First eval step within `pct` % of the run's own best val loss."""
    best = run.best_val_loss
    return None if best is None else steps_to_reach(run, best * (1 + pct / 100))
