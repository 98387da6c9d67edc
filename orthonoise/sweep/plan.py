"""Preflight a sweep: every job it expands to, its run directory, what it will cost (GPU-hours, $, disk) and what
its comparisons can detect. Launches nothing.

    python -m orthonoise.sweep.plan phase31                       # sweeps/phase31.yaml, as `make plan-phase31`
    python -m orthonoise.sweep.plan phase31 phase32_alpha seed=1,2,3 --gpu-hour-usd 2.5
    python -m orthonoise.sweep.plan phase31 +preset=tiny model=tiny data=local hardware=cpu logger=disabled
    python -m orthonoise.sweep.plan --summary --budget-usd 168 phase31   # what `make phase31` runs before launching
    python -m orthonoise.sweep.plan phase32_alpha --from outputs/sweeps/phase31     # power sized by 3.1's seed noise

The jobs come from Hydra itself (the same config loader and basic-sweeper expansion `train.py -m` uses).
Seconds per step, most specific first: the median wall_time_s / steps of earlier runs under outputs/ with the
same model preset, optimizer and hardware; else the measured table bench/results/step_times.yaml (which names
where each figure was measured). The original scripts' figures in that file are only a comparison row.
Cost = GPUs × hours × hardware.gpu_hour_usd (per GPU: a 4×H100 node is 4 × 2.80 = 11.20 $/h). Disk = checkpoint
size × trainer.keep_checkpoints per job. A job whose run directory already says completed costs nothing; an
interrupted one costs its remaining steps. Every job's settings are checked as train.py would check them
(orthonoise.validate); the command exits 1 if any is invalid, or, with --budget-usd, if the bill exceeds it.
"""
from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from orthonoise import REPO_ROOT
from orthonoise.errors import ConfigError
from orthonoise.run.rundir import HYDRA_DIR, SUMMARY_FILE, Status, read_summary, register_resolvers
from orthonoise.sweep import design as sweep_design
from orthonoise.validate import validate_settings

ROOT = REPO_ROOT
HISTORY = Path("outputs")
STEP_TIMES = ROOT / "bench" / "results" / "step_times.yaml"


@dataclass
class Job:
    sweep: str
    overrides: list[str]      # the sweep's per-job overrides (what makes its run directory)
    run_dir: Path
    phase: str | None
    model: str
    optimizer: str            # the conf/optimizer choice (muon, orthonoise, ...)
    hardware: str
    seed: int
    arm: str                  # digest of the job's config without its seed: same arm + same seed = the same run
    setting: tuple            # (model, pretrained, max_steps): jobs compared with each other share it
    gpus: int                 # GPUs billed: world_size on CUDA, 0 on the CPU
    steps: int                # steps still to run (0 when the run directory says completed)
    state: str                # new / completed / <status of an earlier attempt>
    step_time_s: float | None
    step_time_source: str     # "N runs" measured here, or the bench file the table names
    gpu_hour_usd: float
    disk_gb: float | None     # checkpoints this job keeps on disk
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


def sweep_hardware(sweep: str, sweeps_dir: Path = ROOT / "sweeps") -> str:
    """The hardware preset a sweep file's jobs run on (its regime or its own `override hardware:`)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    register_resolvers()
    try:
        cfg = load_hydra(sweeps_dir).config_loader.load_configuration(sweep, [], run_mode=RunMode.MULTIRUN)
        return cfg.hydra.runtime.choices.hardware
    finally:
        GlobalHydra.instance().clear()


# ---- step times: measured runs here, then the committed bench table ----

def step_time_table(path: Path = STEP_TIMES) -> dict:
    return OmegaConf.to_container(OmegaConf.load(path))


def measured_step_times(history: Path = HISTORY) -> dict[tuple[str, str, str], list[float]]:
    """Seconds per step of every run under `history` that got somewhere, keyed by (model, optimizer, hardware)."""
    times: dict[tuple[str, str, str], list[float]] = {}
    for summary_path in history.rglob(SUMMARY_FILE):
        hydra_dir = summary_path.parent / HYDRA_DIR
        try:
            summary = read_summary(summary_path.parent)
            config = OmegaConf.load(hydra_dir / "config.yaml")
            choices = OmegaConf.load(hydra_dir / "hydra.yaml").hydra.runtime.choices
            key = (config.model.preset, choices.optimizer, config.hardware.name)
        except Exception:  # a half-written or foreign directory is no evidence
            continue
        if summary and summary.get("steps") and summary.get("wall_time_s"):
            times.setdefault(key, []).append(summary["wall_time_s"] / summary["steps"])
    return times


def step_time(key: tuple[str, str, str], measured: dict, table: dict) -> tuple[float | None, str]:
    """(seconds per step, where the figure comes from) for (model, optimizer, hardware): runs here win."""
    if measured.get(key):
        return statistics.median(measured[key]), f"{len(measured[key])} runs"
    model, optimizer, hardware = key
    for row in table["measured"]:
        if (row["model"], row["optimizer"], row["hardware"]) == key:
            return row["step_s"], row["source"]
    return None, "unknown"


def comparison_usd(jobs: list[Job], table: dict) -> float | None:
    """What the jobs would cost at the original scripts' step times (the table's comparison rows), if known for all."""
    old = {row["model"]: row["step_s"] for row in table["comparison"]}
    if not jobs or any(j.model not in old for j in jobs):
        return None
    return sum(j.gpus * j.steps * old[j.model] / 3600 * j.gpu_hour_usd for j in jobs)


# ---- the plan ----

def plan(sweep: str, overrides: list[str], history: Path = HISTORY, gpu_hour_usd: float | None = None,
         sweeps_dir: Path = ROOT / "sweeps", table: dict | None = None) -> list[Job]:
    measured = measured_step_times(history) if history.exists() else {}
    table = table or step_time_table()
    common = set(overrides)  # the command line's own overrides, the same for every job
    return [make_job(sweep, [o for o in job_overrides if o not in common], cfg, measured, table, gpu_hour_usd)
            for job_overrides, cfg in expand(sweep, overrides, sweeps_dir)]


def make_job(sweep: str, overrides: list[str], cfg: DictConfig, measured: dict, table: dict,
             gpu_hour_usd: float | None) -> Job:
    run_dir = Path(cfg.hydra.sweep.dir) / cfg.hydra.sweep.subdir
    model, hw, optimizer = cfg.model.preset, cfg.hardware, cfg.hydra.runtime.choices.optimizer
    seconds, source = step_time((model, optimizer, hw.name), measured, table)
    previous = read_summary(run_dir)
    state = previous["status"] if previous else "new"
    done = cfg.trainer.max_steps if state == Status.COMPLETED else (previous or {}).get("steps") or 0
    checkpoint_gb = table.get("checkpoint_gb", {}).get(model)
    try:
        validate_settings(cfg)
        invalid = None
    except ConfigError as err:
        invalid = str(err)
    return Job(
        sweep=sweep, overrides=overrides, run_dir=run_dir, phase=None if cfg.phase is None else str(cfg.phase),
        model=model, optimizer=optimizer, hardware=hw.name, seed=cfg.seed, arm=sweep_design.arm_digest(cfg),
        setting=sweep_design.setting_of(cfg),
        gpus=hw.world_size if hw.device == "cuda" else 0, steps=max(0, cfg.trainer.max_steps - done),
        state=state, step_time_s=seconds, step_time_source=source,
        gpu_hour_usd=hw.gpu_hour_usd if gpu_hour_usd is None else gpu_hour_usd,
        disk_gb=None if checkpoint_gb is None else checkpoint_gb * cfg.trainer.keep_checkpoints, invalid=invalid,
    )


def disk_text(jobs: list[Job]) -> str:
    known = [j.disk_gb for j in jobs if j.disk_gb is not None]
    unknown = len(jobs) - len(known)
    return f"{sum(known):.0f} GB" + (f" (+{unknown} jobs of unknown size)" if unknown else "")


def totals_line(name: str, jobs: list[Job], table: dict) -> str:
    gpu_hours, usd = sum(j.gpu_hours for j in jobs), sum(j.usd for j in jobs)
    old = comparison_usd(jobs, table)
    line = f"{name}: {len(jobs)} jobs, {gpu_hours:.2f} GPU-hours, ${usd:.2f}, checkpoints {disk_text(jobs)}"
    return line + (f" (at the original scripts' step times: ${old:.2f})" if old is not None else "")


def format_plan(name: str, jobs: list[Job], table: dict | None = None) -> str:
    table = table or step_time_table()
    rows = [["#", "overrides", "run dir", "state", "model", "hardware", "steps", "s/step (source)", "GPU-h", "$"]]
    for i, job in enumerate(jobs):
        rows.append([
            str(i), " ".join(job.overrides), str(job.run_dir), "INVALID" if job.invalid else job.state, job.model,
            job.hardware, str(job.steps),
            "?" if job.step_time_s is None else f"{job.step_time_s:.3f} ({job.step_time_source})",
            f"{job.gpu_hours:.2f}", f"{job.usd:.2f}",
        ])
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines += ["-" * len(lines[0]), totals_line(name, jobs, table)]
    if any(j.step_time_s is None for j in jobs):
        lines.append("? = no step time known for that model/optimizer/hardware: add it to "
                     f"{STEP_TIMES.relative_to(ROOT)}")
    lines += [f"INVALID job {i}: {job.invalid}" for i, job in enumerate(jobs) if job.invalid]
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m orthonoise.sweep.plan", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("args", nargs="+", metavar="SWEEP|OVERRIDE",
                        help="sweep names (files in sweeps/), then Hydra overrides applied to each")
    parser.add_argument("--gpu-hour-usd", type=float, help="price per GPU-hour (default: hardware.gpu_hour_usd)")
    parser.add_argument("--history", type=Path, default=HISTORY,
                        help="where earlier runs' step times and seed spread are read")
    parser.add_argument("--from", dest="noise_from", type=Path, metavar="SWEEP_DIR",
                        help="an earlier sweep whose seed std and seed-block share (measured by the report engine) "
                             "size the power lines (default: runs under --history, else the documented values)")
    parser.add_argument("--budget-usd", type=float,
                        help="refuse (exit 1, one error: line) when the sweeps together cost more than this")
    parser.add_argument("--summary", action="store_true", help="one line per sweep instead of every job")
    parser.add_argument("--hardware", action="store_true",
                        help="print the hardware preset of the one sweep named (the Makefile picks its launcher)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    sweeps = [a for a in args.args if "=" not in a]
    overrides = [a for a in args.args if "=" in a]
    if args.hardware:
        print(sweep_hardware(sweeps[0]))
        return 0
    table = step_time_table()
    by_sweep = {sweep: plan(sweep, overrides, args.history, args.gpu_hour_usd, table=table) for sweep in sweeps}
    for sweep, jobs in by_sweep.items():
        print(totals_line(sweep, jobs, table) if args.summary else format_plan(sweep, jobs, table) + "\n")
        for job in jobs if args.summary else []:
            if job.invalid:
                print(f"INVALID {sweep} {' '.join(job.overrides)}: {job.invalid}")
    everything = [job for jobs in by_sweep.values() for job in jobs]
    if len(sweeps) > 1:
        print(totals_line("total", everything, table))
    print(sweep_design.design_lines(by_sweep, args.history, args.noise_from))
    invalid = sum(bool(j.invalid) for j in everything)
    if invalid:
        print(f"error: {invalid} job(s) have invalid settings (listed above); fix them before launching")
        return 1
    usd = sum(j.usd for j in everything)
    if args.budget_usd is not None and usd > args.budget_usd:
        print(f"error: budget_usd={args.budget_usd:g} is below this launch's preflight cost ${usd:.2f} "
              f"({', '.join(sweeps)}): raise BUDGET_USD, or trim the sweep; nothing was launched")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
