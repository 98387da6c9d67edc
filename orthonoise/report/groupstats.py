"""Per-group statistics, one `GroupRow` per group: seed summaries of the final, best and step-100 losses and the
descriptive comparisons with the baseline (the primary analysis itself is engine.py's; table.py formats these)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import measures
from .engine import Comparison, Family
from .groups import Group
from .stats import Sample, TTest, describe, paired, relative_pct, welch


def completed_values(group: Group, value_of) -> dict:
    """seed -> value over the completed replicates (a repeated seed counts once: Group.replicates); a run
    without the value is left out."""
    return {seed: value for seed, run in group.completed_by_seed.items() if (value := value_of(run)) is not None}


def final_losses(group: Group) -> dict:
    return completed_values(group, lambda r: r.final_val_loss)


def early_losses(group: Group) -> dict:
    """seed -> val loss at (the last eval at or before) step 100."""
    return completed_values(group, lambda r: (measures.loss_at_step(r) or (None, None))[1])


def early_steps(group: Group) -> list[int]:
    """The eval steps the step-100 losses were read at (one entry per distinct step)."""
    return sorted({at[0] for r in group.completed if (at := measures.loss_at_step(r))})


@dataclass
class GroupRow:
    group: Group
    comparison: Comparison | None  # the primary analysis: Δ% and its simultaneous interval vs the baseline
    method: str  # the family's primary analysis
    final: Sample
    best: Sample
    delta_final_pct: float
    delta_best_pct: float
    welch_final: TTest
    paired_final: TTest
    early: Sample
    early_steps: list
    delta_early_pct: float
    steps_to_1pct: Sample
    eff_rank: Sample
    tokens_per_s: Sample
    gpu_hours: float


def summarize(group: Group, family: Family | None = None) -> GroupRow:
    final = describe(final_losses(group).values())
    best = describe(completed_values(group, lambda r: r.best_val_loss).values())
    early = describe(early_losses(group).values())
    base = group.baseline
    compared = base is not None and base is not group
    if compared:
        base_final = describe(final_losses(base).values())
        base_best = describe(completed_values(base, lambda r: r.best_val_loss).values())
        base_early = describe(early_losses(base).values())
        welch_final = welch(final_losses(group).values(), final_losses(base).values())
        paired_final = paired(final_losses(group), final_losses(base))
    nan_test = TTest(math.nan, math.nan, math.nan)
    return GroupRow(
        group=group,
        comparison=family.comparisons.get(group.label) if family and compared else None,
        method=family.method if family else "",
        final=final,
        best=best,
        delta_final_pct=relative_pct(final.mean, base_final.mean) if compared else math.nan,
        delta_best_pct=relative_pct(best.mean, base_best.mean) if compared else math.nan,
        welch_final=welch_final if compared else nan_test,
        paired_final=paired_final if compared else nan_test,
        early=early,
        early_steps=early_steps(group),
        delta_early_pct=relative_pct(early.mean, base_early.mean) if compared else math.nan,
        steps_to_1pct=describe(completed_values(group, measures.steps_to_within_best).values()),
        eff_rank=describe(completed_values(group, lambda r: r.last_eff_rank).values()),
        tokens_per_s=describe(completed_values(group, lambda r: r.tokens_per_s).values()),
        # Compute is spent whether or not the job finished, so every job counts.
        gpu_hours=sum(run.gpu_hours for run in group.runs),
    )
