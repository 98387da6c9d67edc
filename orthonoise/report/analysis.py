"""Sweep dir -> runs, groups with baselines, and one statistics row per group."""

from __future__ import annotations

from pathlib import Path

from .collect import Run, load_runs
from .groups import Group, assign_baselines, group_runs
from .table import GroupRow, summarize


def analyse(sweep_dir: Path, baseline: list[str] | None = None) -> tuple[list[Run], list[Group], list[GroupRow]]:
    runs = load_runs(sweep_dir)
    groups = group_runs(runs)
    assign_baselines(groups, baseline)
    return runs, groups, [summarize(g) for g in groups]
