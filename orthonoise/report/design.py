"""What a sweep planned against what ran: the planned job list from the sweep's own record of its grid.

`train.py -m` writes `<sweep dir>/multirun.yaml`: the sweeper's `params` and the command line's task overrides.
Expanded the way Hydra's basic sweeper expands them (the config's params, then the command line's, one
cartesian product), they are every job's overrides, which each job also records in `.hydra/overrides.yaml`. A
planned job with no run directory never started: it is added as a `missing (never started)` run of its group
(the group of the jobs that differ from it only in the seed), so every criterion counts it. An Optuna sweep plans
`n_trials` trials, each training every seed in `objective.seeds`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml
from hydra.errors import HydraException
from omegaconf import OmegaConf

from orthonoise.run.rundir import register_resolvers, run_name

from .collect import Run

SWEEP_RECORD = "multirun.yaml"
SEED_KEY = "seed"


@dataclass
class SweepPlan:
    sweep_dir: Path
    planned: int | None = None  # jobs (grid) or trials (Optuna) the sweep asked for; None: unknown
    unit: str = "jobs"
    unknown_because: str = f"no {SWEEP_RECORD}"
    not_started: list[Run] = field(default_factory=list)
    trials_not_started: int = 0

    @property
    def missing(self) -> int:
        return len(self.not_started) + self.trials_not_started


def _record(sweep_dir: Path) -> dict | None:
    try:
        return yaml.safe_load((Path(sweep_dir) / SWEEP_RECORD).read_text()) or None
    except (OSError, yaml.YAMLError):
        return None


def _grid(record: dict) -> dict:
    """The recorded grid, an interpolation in it (`${multiples:${optimizer.lr},0.5,1,2}`, a grid written as
    multiples of a config value) resolved against the record, as the sweeper resolved it."""
    params = ((record.get("hydra") or {}).get("sweeper") or {}).get("params") or {}
    register_resolvers()
    try:
        return OmegaConf.to_container(OmegaConf.create(record).hydra.sweeper.params, resolve=True)
    except Exception:  # an interpolation only Hydra's running process could resolve: the grid as written
        return params


def planned_jobs(record: dict) -> list[list[str]]:
    """Every job's overrides, as Hydra's basic sweeper expands the recorded params and task overrides."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    hydra = record.get("hydra") or {}
    params = [f"{k}={v}" for k, v in _grid(record).items()]
    task = list((hydra.get("overrides") or {}).get("task") or [])
    parsed = OverridesParser.create().parse_overrides(params + task)
    return BasicSweeper.split_arguments(parsed, None)[0]


def _seed_of(overrides: list[str]):
    for item in overrides:
        key, _, value = item.partition("=")
        if key.lstrip("+") == SEED_KEY:
            return yaml.safe_load(value)
    return None


def _without_seed(overrides) -> frozenset:
    return frozenset(o for o in overrides if o.partition("=")[0].lstrip("+") != SEED_KEY)


def _dir_name(overrides: list[str], record: dict) -> str:
    """The job's run-directory name: Hydra's override_dirname (sorted, excluded keys left out), as run_name."""
    job_cfg = ((record.get("hydra") or {}).get("job") or {}).get("config", {}).get("override_dirname", {})
    exclude = set(job_cfg.get("exclude_keys") or [])
    kv, sep = job_cfg.get("kv_sep", "="), job_cfg.get("item_sep", ",")
    kept = sorted(o for o in overrides if o.partition("=")[0].lstrip("+~") not in exclude)
    return run_name(sep.join(o.replace("=", kv, 1) for o in kept))


def plan_of(sweep_dir: Path, runs: list[Run]) -> SweepPlan:
    """The planned jobs of one sweep dir and the planned ones that have no run among `runs`."""
    sweep_dir = Path(sweep_dir)
    record = _record(sweep_dir)
    plan = SweepPlan(sweep_dir)
    if record is None:
        return plan
    sweeper = (record.get("hydra") or {}).get("sweeper") or {}
    mine = [r for r in runs if _is_under(r.path, sweep_dir)]
    if "optuna" in str(sweeper.get("_target_", "")).lower():
        plan.planned, plan.unit = int(sweeper.get("n_trials") or 0), "trials"
        trials = {r.path.parent for r in mine}
        plan.trials_not_started = max(0, plan.planned - len(trials))
        return plan
    try:
        jobs = planned_jobs(record)
    except (HydraException, ValueError, TypeError) as err:  # a grid Hydra cannot parse: unknown, not guessed
        plan.unknown_because = f"{SWEEP_RECORD} not readable as a grid ({type(err).__name__}: {err})"
        return plan
    plan.planned = len(jobs)
    ran = {frozenset(r.overrides) for r in mine}
    ran_dirs = {r.path.name for r in mine}  # a reused run is linked in under the job's own directory name
    for job in jobs:
        if frozenset(job) not in ran and _dir_name(job, record) not in ran_dirs:
            plan.not_started.append(_placeholder(job, record, sweep_dir, mine))
    return plan


def _placeholder(job: list[str], record: dict, sweep_dir: Path, runs: list[Run]) -> Run:
    """A never-started job as a run of its group: the config of a job that differs from it only in the seed."""
    seed = _seed_of(job)
    sibling = next((r for r in runs if _without_seed(r.overrides) == _without_seed(job)), None)
    config = {**sibling.config, SEED_KEY: seed} if sibling else {SEED_KEY: seed}
    return Run(path=sweep_dir / _dir_name(job, record), config=config, choices=sibling.choices if sibling else {},
               overrides=list(job), metrics_rows=[], summary=None,
               last_activity=(sweep_dir / SWEEP_RECORD).stat().st_mtime, never_started=True)


def _is_under(path: Path, root: Path) -> bool:
    try:
        Path(path).relative_to(root)
        return True
    except ValueError:
        return False
