"""Sweep dir -> runs, groups with baselines, and one statistics row per group."""

from __future__ import annotations

from pathlib import Path

from .collect import Run, load_runs
from .groups import Group, assign_baselines, group_runs
from .table import GroupRow, summarize


def analyse(sweep_dirs: Path | list[Path], baseline: list[str] | None = None
            ) -> tuple[list[Run], list[Group], list[GroupRow]]:
    """The runs under one sweep dir, or several read as one pool; their groups, and one table row per group."""
    dirs = [sweep_dirs] if isinstance(sweep_dirs, (str, Path)) else sweep_dirs
    runs = [run for d in dirs for run in load_runs(d)]
    groups = group_runs(runs)
    assign_baselines(groups, baseline)
    return runs, groups, [summarize(g) for g in groups]
