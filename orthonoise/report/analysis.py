"""Sweep dirs -> runs (planned jobs included), groups with baselines, the statistics families, one row per group."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from . import engine
from .collect import INTERRUPTED, MISSING, RUNNING, Run, load_runs
from .design import SweepPlan, plan_of
from .groups import Group, assign_baselines, group_runs
from .groupstats import GroupRow, completed_values, summarize
from .rehearsal import Rehearsal, rehearsal_of
from .table import relative_path


@dataclass
class Analysis:
    runs: list[Run]
    groups: list[Group]
    rows: list[GroupRow]
    plans: list[SweepPlan]
    families: dict = field(default_factory=dict)  # id(baseline group) -> engine.Family of final val loss
    rank_families: dict = field(default_factory=dict)  # the same for the last-eval effective rank
    warnings: list[str] = field(default_factory=list)
    rehearsal: Rehearsal | None = None  # the runs rehearse the plan (tiny preset, shortened steps): not its result

    @property
    def interim(self) -> bool:
        """Some job is still owed a result (running, interrupted, not started): every verdict may change."""
        unfinished = any(r.state in (RUNNING, INTERRUPTED, MISSING) for g in self.groups for r in g.replicates.values())
        return unfinished or any(p.missing for p in self.plans)


def families_of(groups: list[Group], value_of) -> dict:
    """One many-to-one family per baseline: every group compared with it, simultaneous intervals."""
    families = {}
    for base in [g for g in groups if g.is_baseline]:
        members = [g for g in groups if g.baseline is base]
        values = {g.label: completed_values(g, value_of) for g in members}
        families[id(base)] = engine.many_to_one(values, base.label)
    return families


def duplicate_warnings(groups: list[Group], root: Path) -> list[str]:
    warnings = []
    for g in groups:
        for seed, runs in g.duplicates.items():
            kept = g.replicates[seed]
            paths = ", ".join(relative_path(r.path, root) for r in runs)
            warnings.append(f"{g.label}: seed {seed} ran {len(runs)} times ({paths}); counted once, as "
                            f"{relative_path(kept.path, root)} ({kept.state})")
    return warnings


def analyse(sweep_dirs: Path | list[Path], baseline: list[str] | None = None) -> Analysis:
    """The runs under one sweep dir, or several read as one pool, with each dir's never-started planned jobs."""
    dirs = [sweep_dirs] if isinstance(sweep_dirs, (str, Path)) else list(sweep_dirs)
    runs = [run for d in dirs for run in load_runs(d)]
    plans = [plan_of(d, runs) for d in dirs]
    every = runs + [r for p in plans for r in p.not_started]
    groups = group_runs(every)
    assign_baselines(groups, baseline)
    families = families_of(groups, lambda r: r.final_val_loss)
    return Analysis(runs, groups, [summarize(g, families.get(id(g.baseline))) for g in groups], plans,
                    families, families_of(groups, lambda r: r.last_eff_rank),
                    duplicate_warnings(groups, Path(os.path.commonpath([Path(d).resolve() for d in dirs]))),
                    rehearsal_of(runs))
