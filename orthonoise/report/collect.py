"""Read run directories (the trainer's contract) into `Run` records.

A run directory holds `.hydra/config.yaml`, `.hydra/hydra.yaml`, `.hydra/overrides.yaml`,
`metrics.jsonl` and `summary.json`; any of them may be missing when a job crashed early. An Optuna trial
(sweeps/optuna.yaml, orthonoise/sweep/objective.py) is a Hydra job directory whose config has `objective.seeds`; it
trains one run per seed into `<trial dir>/seed=<s>` (metrics and summary, no `.hydra/`): each is read as a run
with the trial's config and that seed, and a seed not started yet reads as missing.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from orthonoise.run.rundir import (
    BEST_VAL_LOSS,
    CONFIG_CHANGES,
    EFF_RANK,
    FINAL_ALPHA,
    FINAL_VAL_LOSS,
    GPU_HOURS,
    HYDRA_DIR,
    MAX_STEPS,
    METRICS_FILE,
    PROVENANCE,
    STATUS,
    STEP,
    STEPS,
    SUMMARY_FILE,
    TOKENS_PER_S,
    VAL_LOSS,
    WALL_TIME_S,
    WHY_DIVERGED,
    WHY_FAILED,
    WORLD_SIZE,
    Status,
    inspect_summary,
    is_run_dir,
    metrics_problem,
    read_hydra_record,
    read_metrics,
)

# The trainer's status words, the one vocabulary (orthonoise/run/rundir.py); MISSING = a job that wrote neither
# summary.json nor metrics.jsonl.
COMPLETED, DIVERGED, FAILED, RUNNING, INTERRUPTED, MISSING = (
    Status.COMPLETED, Status.DIVERGED, Status.FAILED, Status.RUNNING, Status.INTERRUPTED, Status.MISSING)
# A running (or outputless) job whose files have not changed for this long has probably died.
STALE_AFTER_S = 30 * 60


@dataclass(eq=False)  # a run is itself: compared by identity, never field by field
class Run:
    path: Path
    config: dict
    choices: dict  # hydra.runtime.choices: config group -> chosen option
    overrides: list
    summary: dict | None
    last_activity: float  # epoch seconds: mtime of metrics.jsonl, else summary.json, else .hydra/
    unreadable: str | None = None  # why this run directory's files cannot be used (then state is UNREADABLE)
    never_started: bool = False  # a planned job with no directory at all (orthonoise.report.design)
    # metrics.jsonl's rows; None until something needs them: the summary answers most questions, and over
    # thousands of runs reading every metrics file first is most of the time `status` and the report take
    metrics_rows: list | None = None
    flat_config: dict = field(init=False)

    def __post_init__(self):
        self.flat_config = flatten(self.config)

    @property
    def metrics(self) -> list:
        """One dict per step, sorted by step, last occurrence of a repeated step kept (read on first use)."""
        if self.metrics_rows is None:
            self.metrics_rows = read_metrics(self.path)
        return self.metrics_rows

    @property
    def seed(self):
        return self.config.get("seed")

    @property
    def phase(self) -> str | None:
        phase = self.config.get("phase")
        return None if phase is None else str(phase)

    @property
    def optimizer_target(self) -> str:
        return str(self.flat_config.get("optimizer._target_", ""))

    @property
    def optimizer_name(self) -> str:
        return self.optimizer_target.rsplit(".", 1)[-1]

    @property
    def state(self) -> Status:
        """The summary's status; a word this code does not know reads as FAILED (never as a finished run)."""
        if self.unreadable:
            return Status.UNREADABLE
        if self.summary and self.summary.get(STATUS):
            return Status.parse(self.summary[STATUS]) or FAILED
        return RUNNING if self.metrics else MISSING

    def is_stale(self, now: float, stale_after_s: float = STALE_AFTER_S) -> bool:
        return (self.state in (RUNNING, MISSING) and not self.never_started
                and now - self.last_activity > stale_after_s)

    @property
    def state_text(self) -> str:
        return f"{self.state} (never started)" if self.never_started else str(self.state)

    @property
    def steps(self) -> int | None:
        if self.summary and self.summary.get(STEPS) is not None:
            return int(self.summary[STEPS])
        return self.metrics[-1][STEP] if self.metrics else None

    @property
    def max_steps(self) -> int | None:
        if self.summary and self.summary.get(MAX_STEPS) is not None:
            return int(self.summary[MAX_STEPS])
        return self.flat_config.get("trainer.max_steps")

    def evals(self, key: str = VAL_LOSS) -> list[tuple[int, float]]:
        """(step, value) for every logged step carrying a finite `key`."""
        return [(m[STEP], float(m[key])) for m in self.metrics if _is_finite(m.get(key))]

    @property
    def final_val_loss(self) -> float | None:
        value = (self.summary or {}).get(FINAL_VAL_LOSS)
        if _is_finite(value):
            return float(value)
        evals = self.evals()
        return evals[-1][1] if evals else None

    @property
    def best_val_loss(self) -> float | None:
        value = (self.summary or {}).get(BEST_VAL_LOSS)
        if _is_finite(value):
            return float(value)
        evals = self.evals()
        return min(v for _, v in evals) if evals else None

    @property
    def final_alpha(self) -> float | None:
        """The noise scale the run ended at (noise variants: an annealed run ends below optimizer.alpha)."""
        value = (self.summary or {}).get(FINAL_ALPHA)
        return float(value) if _is_finite(value) else None

    @property
    def last_eff_rank(self) -> float | None:
        evals = self.evals(EFF_RANK)
        return evals[-1][1] if evals else None

    @property
    def tokens_per_s(self) -> float | None:
        value = (self.summary or {}).get(TOKENS_PER_S)
        if _is_finite(value):
            return float(value)
        evals = self.evals(TOKENS_PER_S)
        return evals[-1][1] if evals else None

    @property
    def gpu_hours(self) -> float:
        value = (self.summary or {}).get(GPU_HOURS)
        return float(value) if _is_finite(value) else 0.0

    @property
    def device_seconds_per_step(self) -> float | None:
        """GPU-seconds per step (gpu_hours / steps; on the CPU, wall time × processes / steps)."""
        summary = self.summary or {}
        steps = summary.get(STEPS)
        if not steps:
            return None
        if _is_finite(summary.get(GPU_HOURS)) and summary[GPU_HOURS] > 0:
            return summary[GPU_HOURS] * 3600 / steps
        wall = summary.get(WALL_TIME_S)
        return wall * (summary.get(WORLD_SIZE) or 1) / steps if _is_finite(wall) else None

    @property
    def provenance(self) -> dict | None:
        """The code and machine that produced the run (summary.json); None for a run from before it was recorded."""
        value = (self.summary or {}).get(PROVENANCE)
        return value if isinstance(value, dict) else None

    @property
    def config_changes(self) -> list[dict]:
        """Settings changed while the run went on (trainer.allow_config_change): [{step, at, keys: {key: [old,
        new]}}]; empty for a run that kept the settings it started with."""
        value = (self.summary or {}).get(CONFIG_CHANGES)
        return [c for c in value if isinstance(c, dict)] if isinstance(value, list) else []

    @property
    def error(self) -> str | None:
        """Why the run did not complete: the crash, or what made it diverge."""
        summary = self.summary or {}
        return self.unreadable or summary.get(WHY_FAILED) or summary.get(WHY_DIVERGED)


def age_text(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{max(seconds, 0):.0f}s"


def relative_path(path: Path, root: Path) -> str:
    """A run's path as the tables show it: relative to the report's root, or whole if outside it."""
    try:
        return str(Path(path).relative_to(root)) or "."
    except ValueError:
        return str(path)


def _is_finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    flat = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def find_run_dirs(root: Path) -> list[Path]:
    """Every run directory under `root` (or `root` itself), not descending into a run directory. A link to a run
    directory is followed: the preflight links a sweep's job to the identical run another sweep already made."""
    root = Path(root)
    found = []
    for dirpath, dirnames, _ in os.walk(root, followlinks=True):
        here = Path(dirpath)
        if is_run_dir(here):
            found.append(here)
            dirnames.clear()
            continue
        # Hidden dirs (.submitit logs, .cache) never hold runs.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    return sorted(found)


def _last_activity(path: Path) -> float:
    for candidate in (path / METRICS_FILE, path / SUMMARY_FILE, path / HYDRA_DIR, path):
        if candidate.exists():
            return candidate.stat().st_mtime
    return 0.0


def load_run(path: Path) -> Run:
    """A run directory as a Run; a malformed file makes it UNREADABLE (with why) instead of failing the caller."""
    path = Path(path)
    summary, problem = inspect_summary(path)
    hydra = read_hydra_record(path)
    problems = [p for p in (problem, metrics_problem(path)) if p] + hydra.problems
    return Run(
        path=path,
        config=hydra.config,
        choices=hydra.choices,
        overrides=hydra.overrides,
        summary=summary,
        last_activity=_last_activity(path),
        unreadable="; ".join(problems) or None,
    )


def trial_seed_runs(trial: Run) -> list[Run]:
    """The seed runs of an Optuna trial, one per seed in `objective.seeds`, started or not."""
    runs = []
    for seed in (trial.config.get("objective") or {}).get("seeds") or []:
        path = trial.path / f"seed={seed}"
        summary, problem = inspect_summary(path)
        problems = [p for p in (problem, metrics_problem(path)) if p]
        runs.append(Run(path=path, config={**trial.config, "seed": seed}, choices=trial.choices,
                        overrides=[*trial.overrides, f"seed={seed}"], summary=summary,
                        unreadable="; ".join(problems) or None,
                        last_activity=_last_activity(path) if path.exists() else trial.last_activity))
    return runs


def load_runs(root: Path) -> list[Run]:
    runs = []
    for path in find_run_dirs(root):
        run = load_run(path)
        runs.extend(trial_seed_runs(run) if (run.config.get("objective") or {}).get("seeds") else [run])
    return runs
