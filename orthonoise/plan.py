"""Preflight a sweep: every job it expands to, its run directory, and what it will cost. Launches nothing.

    python -m orthonoise.plan phase31                       # sweeps/phase31.yaml, as `make plan-phase31`
    python -m orthonoise.plan phase31 phase32_alpha seed=1,2,3 --gpu-hour-usd 2.5
    python -m orthonoise.plan phase31 +preset=tiny model=tiny data=local hardware=cpu logger=disabled

The jobs come from Hydra itself (the same config loader and basic-sweeper expansion `train.py -m` uses).
Seconds per step come from earlier runs of the same model on the same hardware (wall_time_s / steps of the
summary.json files under outputs/, median), else from the config's `hardware.step_time_s[<model preset>]`.
Cost = GPUs × hours × hardware.gpu_hour_usd (per GPU: a 4×H100 node is 4 × 2.80 = 11.20 $/h). A job whose run
directory already says completed costs nothing; an interrupted one costs its remaining steps. Every job's
settings are checked as train.py would check them (orthonoise.validate); the command exits 1 if any is invalid.
"""
from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from orthonoise.errors import ConfigError
from orthonoise.rundir import SUMMARY_FILE, Status, read_summary
from orthonoise.run_dirs import register_resolvers
from orthonoise.validate import validate_settings

ROOT = Path(__file__).resolve().parent.parent
HISTORY = Path("outputs")


@dataclass
class Job:
    overrides: list[str]      # the sweep's per-job overrides (what makes its run directory)
    run_dir: Path
    model: str
    hardware: str
    gpus: int                 # GPUs billed: world_size on CUDA, 0 on the CPU
    steps: int                # steps still to run (0 when the run directory says completed)
    state: str                # new / completed / <status of an earlier attempt>
    step_time_s: float | None
    step_time_source: str     # "N runs" measured here, or "config"
    gpu_hour_usd: float
    invalid: str | None = None  # the config error train.py would stop this job with

    @property
    def gpu_hours(self) -> float:
        return self.gpus * self.steps * (self.step_time_s or 0.0) / 3600

    @property
    def usd(self) -> float:
        return self.gpu_hours * self.gpu_hour_usd


def load_hydra(sweeps_dir: Path = ROOT / "sweeps"):
    """A Hydra instance with the search path of `python train.py -cd sweeps`."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra

    search_path = create_config_search_path(str(ROOT / "conf"))
    search_path.prepend("command-line", f"file://{sweeps_dir}")
    GlobalHydra.instance().clear()
    return Hydra.create_main_hydra2(task_name="train", config_search_path=search_path)


def expand(sweep: str, overrides: list[str], sweeps_dir: Path = ROOT / "sweeps") -> list[tuple[list[str], DictConfig]]:
    """(job overrides, job config with resolved hydra node) for every job of `train.py -m -cn <sweep>`."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.utils import setup_globals

    setup_globals()  # the ${now:...} and ${hydra:...} resolvers
    register_resolvers()  # and ours
    loader = load_hydra(sweeps_dir).config_loader
    try:
        return expand_jobs(loader, sweep, overrides)
    finally:
        GlobalHydra.instance().clear()  # leave no global Hydra behind for the next compose()


def expand_jobs(loader, sweep: str, overrides: list[str]) -> list[tuple[list[str], DictConfig]]:
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import RunMode

    master = loader.load_configuration(sweep, list(overrides), run_mode=RunMode.MULTIRUN)
    if master.hydra.sweeper._target_ != "hydra._internal.core_plugins.basic_sweeper.BasicSweeper":
        raise SystemExit(f"{sweep}: only grid sweeps (the basic sweeper) can be listed ahead of time")
    # what BasicSweeper.sweep() does: the config's params, then the command line's, as one cartesian product
    params = [f"{k}={v}" for k, v in (master.hydra.sweeper.params or {}).items()]
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(params + list(master.hydra.overrides.task))
    jobs = []
    for job_overrides in BasicSweeper.split_arguments(parsed, None)[0]:
        cfg = loader.load_sweep_config(master, job_overrides)
        HydraConfig.instance().set_config(cfg)  # lets ${hydra:...} in the sweep dir resolve
        jobs.append((job_overrides, cfg))
    return jobs


def measured_step_times(history: Path = HISTORY) -> dict[tuple[str, str], list[float]]:
    """Seconds per step of every run under `history` that got somewhere, keyed by (model preset, hardware)."""
    times: dict[tuple[str, str], list[float]] = {}
    for summary_path in history.rglob(SUMMARY_FILE):
        config_path = summary_path.parent / ".hydra" / "config.yaml"
        try:
            summary = read_summary(summary_path.parent)
            config = OmegaConf.load(config_path)
            key = (config.model.preset, config.hardware.name)
        except Exception:  # a half-written or foreign directory is no evidence
            continue
        if summary.get("steps") and summary.get("wall_time_s"):
            times.setdefault(key, []).append(summary["wall_time_s"] / summary["steps"])
    return times


def plan(sweep: str, overrides: list[str], history: Path = HISTORY, gpu_hour_usd: float | None = None,
         sweeps_dir: Path = ROOT / "sweeps") -> list[Job]:
    measured = measured_step_times(history) if history.exists() else {}
    common = set(overrides)  # the command line's own overrides, the same for every job
    jobs = []
    for job_overrides, cfg in expand(sweep, overrides, sweeps_dir):
        run_dir = Path(cfg.hydra.sweep.dir) / cfg.hydra.sweep.subdir
        model, hw = cfg.model.preset, cfg.hardware
        runs = measured.get((model, hw.name))
        if runs:
            step_time, source = statistics.median(runs), f"{len(runs)} runs"
        else:
            step_time, source = OmegaConf.select(hw, "step_time_s", default={}).get(model), "config"
        previous = read_summary(run_dir)
        state = previous["status"] if previous else "new"
        done = cfg.trainer.max_steps if state == Status.COMPLETED else (previous or {}).get("steps") or 0
        try:
            validate_settings(cfg)
            invalid = None
        except ConfigError as err:
            invalid = str(err)
        jobs.append(Job(
            overrides=[o for o in job_overrides if o not in common],
            run_dir=run_dir, model=model, hardware=hw.name,
            gpus=hw.world_size if hw.device == "cuda" else 0, steps=max(0, cfg.trainer.max_steps - done),
            state=state, step_time_s=step_time, step_time_source=source,
            gpu_hour_usd=hw.gpu_hour_usd if gpu_hour_usd is None else gpu_hour_usd, invalid=invalid,
        ))
    return jobs


def format_plan(name: str, jobs: list[Job]) -> str:
    rows = [["#", "overrides", "run dir", "state", "model", "hardware", "steps", "s/step", "GPU-h", "$"]]
    for i, job in enumerate(jobs):
        rows.append([
            str(i), " ".join(job.overrides), str(job.run_dir), "INVALID" if job.invalid else job.state, job.model, job.hardware, str(job.steps),
            "?" if job.step_time_s is None else f"{job.step_time_s:.2f} ({job.step_time_source})",
            f"{job.gpu_hours:.2f}", f"{job.usd:.2f}",
        ])
    gpu_hours, usd = sum(j.gpu_hours for j in jobs), sum(j.usd for j in jobs)
    rows.append(["", f"{name}: {len(jobs)} jobs", "", "", "", "", str(sum(j.steps for j in jobs)), "",
                 f"{gpu_hours:.2f}", f"{usd:.2f}"])
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    if any(j.step_time_s is None for j in jobs):
        lines.append("? = no step time known for that model/hardware: add hardware.step_time_s.<model preset>")
    lines += [f"INVALID job {i}: {job.invalid}" for i, job in enumerate(jobs) if job.invalid]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orthonoise.plan", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("args", nargs="+", metavar="SWEEP|OVERRIDE",
                        help="sweep names (files in sweeps/), then Hydra overrides applied to each")
    parser.add_argument("--gpu-hour-usd", type=float, help="price per GPU-hour (default: hardware.gpu_hour_usd)")
    parser.add_argument("--history", type=Path, default=HISTORY, help="where earlier runs' step times are read")
    parser.add_argument("--from", dest="noise_from", type=Path, metavar="SWEEP_DIR",
                        help="an earlier sweep whose seed variance sizes the power lines (default: documented values)")
    args = parser.parse_args(argv)
    sweeps = [a for a in args.args if "=" not in a]
    overrides = [a for a in args.args if "=" in a]
    total_jobs, total_h, total_usd, invalid = 0, 0.0, 0.0, 0
    for sweep in sweeps:
        jobs = plan(sweep, overrides, args.history, args.gpu_hour_usd)
        print(format_plan(sweep, jobs) + "\n")
        invalid += sum(bool(j.invalid) for j in jobs)
        total_jobs += len(jobs)
        total_h += sum(j.gpu_hours for j in jobs)
        total_usd += sum(j.usd for j in jobs)
    if len(sweeps) > 1:
        print(f"total: {total_jobs} jobs, {total_h:.2f} GPU-hours, ${total_usd:.2f}")
    # what these seeds can detect (orthonoise/report/power.py; docs/report.md)
    from orthonoise.report.power import preflight_lines
    print("\n".join(preflight_lines(sweeps, overrides, args.noise_from)))
    if invalid:
        print(f"error: {invalid} job(s) have invalid settings (listed above); fix them before launching")
    return 1 if invalid else 0


if __name__ == "__main__":
    raise SystemExit(main())
