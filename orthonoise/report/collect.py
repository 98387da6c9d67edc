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

import yaml

from orthonoise.run.rundir import (
    HYDRA_DIR,
    MAX_CONFIG_BYTES,
    METRICS_FILE,
    SUMMARY_FILE,
    Status,
    inspect_metrics,
    inspect_summary,
    is_run_dir,
    read_regular,
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
    metrics: list  # one dict per step, sorted by step, last occurrence of a repeated step kept
    summary: dict | None
    last_activity: float  # epoch seconds: mtime of metrics.jsonl, else summary.json, else .hydra/
    unreadable: str | None = None  # why this run directory's files cannot be used (then state is UNREADABLE)
    never_started: bool = False  # a planned job with no directory at all (orthonoise.report.design)
    flat_config: dict = field(init=False)

    def __post_init__(self):
        self.flat_config = flatten(self.config)

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
        if self.summary and self.summary.get("status"):
            return Status.parse(self.summary["status"]) or FAILED
        return RUNNING if self.metrics else MISSING

    def is_stale(self, now: float, stale_after_s: float = STALE_AFTER_S) -> bool:
        return (self.state in (RUNNING, MISSING) and not self.never_started
                and now - self.last_activity > stale_after_s)

    @property
    def state_text(self) -> str:
        return f"{self.state} (never started)" if self.never_started else str(self.state)

    @property
    def steps(self) -> int | None:
        if self.summary and self.summary.get("steps") is not None:
            return int(self.summary["steps"])
        return self.metrics[-1]["step"] if self.metrics else None

    @property
    def max_steps(self) -> int | None:
        if self.summary and self.summary.get("max_steps") is not None:
            return int(self.summary["max_steps"])
        return self.flat_config.get("trainer.max_steps")

    def evals(self, key: str = "val_loss") -> list[tuple[int, float]]:
        """(step, value) for every logged step carrying a finite `key`."""
        return [(m["step"], float(m[key])) for m in self.metrics if _is_finite(m.get(key))]

    @property
    def final_val_loss(self) -> float | None:
        value = (self.summary or {}).get("final_val_loss")
        if _is_finite(value):
            return float(value)
        evals = self.evals()
        return evals[-1][1] if evals else None

    @property
    def best_val_loss(self) -> float | None:
        value = (self.summary or {}).get("best_val_loss")
        if _is_finite(value):
            return float(value)
        evals = self.evals()
        return min(v for _, v in evals) if evals else None

    @property
    def final_alpha(self) -> float | None:
        """The noise scale the run ended at (noise variants: an annealed run ends below optimizer.alpha)."""
        value = (self.summary or {}).get("final_alpha")
        return float(value) if _is_finite(value) else None

    @property
    def last_eff_rank(self) -> float | None:
        evals = self.evals("eff_rank")
        return evals[-1][1] if evals else None

    @property
    def tokens_per_s(self) -> float | None:
        value = (self.summary or {}).get("tokens_per_s")
        if _is_finite(value):
            return float(value)
        evals = self.evals("tokens_per_s")
        return evals[-1][1] if evals else None

    @property
    def gpu_hours(self) -> float:
        value = (self.summary or {}).get("gpu_hours")
        return float(value) if _is_finite(value) else 0.0

    @property
    def device_seconds_per_step(self) -> float | None:
        """GPU-seconds per step (gpu_hours / steps; on the CPU, wall time × processes / steps)."""
        summary = self.summary or {}
        steps = summary.get("steps")
        if not steps:
            return None
        if _is_finite(summary.get("gpu_hours")) and summary["gpu_hours"] > 0:
            return summary["gpu_hours"] * 3600 / steps
        wall = summary.get("wall_time_s")
        return wall * (summary.get("world_size") or 1) / steps if _is_finite(wall) else None

    @property
    def provenance(self) -> dict | None:
        """The code and machine that produced the run (summary.json); None for a run from before it was recorded."""
        value = (self.summary or {}).get("provenance")
        return value if isinstance(value, dict) else None

    @property
    def config_changes(self) -> list[dict]:
        """Settings changed while the run went on (trainer.allow_config_change): [{step, at, keys: {key: [old,
        new]}}]; empty for a run that kept the settings it started with."""
        value = (self.summary or {}).get("config_changes")
        return [c for c in value if isinstance(c, dict)] if isinstance(value, list) else []

    @property
    def error(self) -> str | None:
        """Why the run did not complete: the crash, or what made it diverge."""
        summary = self.summary or {}
        return self.unreadable or summary.get("error") or summary.get("diverged")


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
    """Every run directory under `root` (or `root` itself), not descending into a run directory."""
    root = Path(root)
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        here = Path(dirpath)
        if is_run_dir(here):
            found.append(here)
            dirnames.clear()
            continue
        # Hidden dirs (.submitit logs, .cache) never hold runs.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    return sorted(found)


def _read_yaml(path: Path, kind: type) -> tuple:
    """(the file's value, None), (kind(), why it is unusable), or (kind(), None) when there is no such file."""
    try:
        data = read_regular(path, MAX_CONFIG_BYTES)  # a FIFO or a device: unreadable, never a hang
        if data is None:
            return kind(), None
        value = yaml.safe_load(data.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as err:
        return kind(), f"{HYDRA_DIR}/{path.name} cannot be read: {type(err).__name__}: {str(err).splitlines()[0][:80]}"
    if value is not None and not isinstance(value, kind):
        return kind(), f"{HYDRA_DIR}/{path.name} holds a {type(value).__name__}, not a {kind.__name__}"
    return value or kind(), None


def _last_activity(path: Path) -> float:
    for candidate in (path / METRICS_FILE, path / SUMMARY_FILE, path / HYDRA_DIR, path):
        if candidate.exists():
            return candidate.stat().st_mtime
    return 0.0


def load_run(path: Path) -> Run:
    """A run directory as a Run; a malformed file makes it UNREADABLE (with why) instead of failing the caller."""
    path = Path(path)
    hydra_dir = path / HYDRA_DIR
    summary, problem = inspect_summary(path)
    metrics, metrics_problem = inspect_metrics(path)
    problems = [p for p in (problem, metrics_problem) if p]
    parts = {}
    for name, kind in (("config.yaml", dict), ("hydra.yaml", dict), ("overrides.yaml", list)):
        parts[name], problem = _read_yaml(hydra_dir / name, kind)
        problems += [problem] if problem else []
    choices = parts["hydra.yaml"]
    for key in ("hydra", "runtime", "choices"):
        choices = choices.get(key) if isinstance(choices, dict) else None
    return Run(
        path=path,
        config=parts["config.yaml"],
        choices={str(k): v for k, v in choices.items()} if isinstance(choices, dict) else {},
        overrides=parts["overrides.yaml"],
        metrics=metrics,
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
        metrics, metrics_problem = inspect_metrics(path)
        runs.append(Run(path=path, config={**trial.config, "seed": seed}, choices=trial.choices,
                        overrides=[*trial.overrides, f"seed={seed}"], metrics=metrics,
                        summary=summary, unreadable="; ".join(p for p in (problem, metrics_problem) if p) or None,
                        last_activity=_last_activity(path) if path.exists() else trial.last_activity))
    return runs


def load_runs(root: Path) -> list[Run]:
    runs = []
    for path in find_run_dirs(root):
        run = load_run(path)
        runs.extend(trial_seed_runs(run) if (run.config.get("objective") or {}).get("seeds") else [run])
    return runs
