"""Preflight a sweep: every job it expands to, its run directory, what it will cost (GPU-hours, $, wall time, disk)
and what its comparisons can detect. Launches nothing.

    python -m orthonoise.sweep.plan phase31                       # sweeps/phase31.yaml, as `make plan-phase31`
    python -m orthonoise.sweep.plan phase31 phase32_alpha seed=1,2,3 --gpu-hour-usd 2.5
    python -m orthonoise.sweep.plan phase31 +preset=tiny model=tiny data=local hardware=cpu logger=disabled
    python -m orthonoise.sweep.plan --summary --budget-usd 168 phase31   # what `make phase31` runs before launching
    python -m orthonoise.sweep.plan phase32_alpha --from outputs/sweeps/phase31     # power sized by 3.1's seed noise

The jobs come from Hydra itself (the same config loader and basic-sweeper expansion `train.py -m` uses). Seconds
per job come from measurements only (orthonoise/sweep/cost.py): a job whose step time nobody measured is unpriced,
never $0, and the launch preflight refuses it. Cost = GPUs × hours × hardware.gpu_hour_usd (per GPU: a 4×H100 node
is 4 × 2.80 = 11.20 $/h); a CPU job costs nothing and gets a wall-time estimate. Disk = checkpoint size ×
trainer.keep_checkpoints per job. A job whose run directory already says completed costs nothing; an interrupted
one costs its remaining steps; a job whose composed config and seed already completed in another sweep's run
directory under the history (phase 3.1's arms repeated in 3.2) is "reused": not priced, and with --link-reused its
run directory becomes a link to that run, so the launcher skips it and the report reads it once.
The launch preflight (--summary, what every `make phase*` runs) exits 1 with one `error:` line, before anything is
submitted, when a job's settings are invalid (orthonoise.validate), when a job cannot be priced, when a local
launcher's jobs need a device this machine lacks, or when what the runs under the history already cost plus this
launch is more than --budget-usd (the budget of the whole plan).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from orthonoise import REPO_ROOT
from orthonoise.errors import ConfigError
from orthonoise.run.rundir import SUMMARY_FILE, Status, read_hydra_record, read_summary, register_resolvers
from orthonoise.sweep import cost
from orthonoise.sweep import design as sweep_design
from orthonoise.sweep.cost import STEP_TIMES, step_time_table
from orthonoise.validate import validate_settings

ROOT = REPO_ROOT
HISTORY = Path("outputs")
REUSED = "reused"


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
    seconds: float | None = None  # wall seconds still to run (cost.job_estimate); None: unpriced
    unmeasured: list[str] = field(default_factory=list)  # parts of the estimate nobody measured
    device: str = "cpu"       # what the job needs: cpu / cuda
    local: bool = True        # its launcher runs it on this machine
    reused_from: Path | None = None  # the identical completed run it is (state REUSED)
    invalid: str | None = None  # the config error train.py would stop this job with
    parallel: int = 1         # jobs its launcher runs at once

    @property
    def priced(self) -> bool:
        return self.seconds is not None

    @property
    def gpu_hours(self) -> float:
        """GPU-hours still to pay; 0 for an unpriced job, which the totals count apart and the launch refuses."""
        return self.gpus * (self.seconds or 0.0) / 3600

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


# ---- step times: measured runs here, then the committed bench table (orthonoise/sweep/cost.py) ----

def comparison_usd(jobs: list[Job], table: dict) -> float | None:
    """What the jobs would cost at the original scripts' step times (the table's comparison rows), if known for all."""
    old = {row["model"]: row["step_s"] for row in table["comparison"]}
    if not jobs or any(j.model not in old for j in jobs):
        return None
    return sum(j.gpus * j.steps * old[j.model] / 3600 * j.gpu_hour_usd for j in jobs if not j.reused_from)


# ---- the plan ----

def plan(sweep: str, overrides: list[str], history: Path = HISTORY, gpu_hour_usd: float | None = None,
         sweeps_dir: Path = ROOT / "sweeps", table: dict | None = None) -> list[Job]:
    measured = cost.measured_step_times(history)
    table = table or step_time_table()
    done = completed_runs(history)
    common = set(overrides)  # the command line's own overrides, the same for every job
    return [make_job(sweep, [o for o in job_overrides if o not in common], cfg, measured, table, gpu_hour_usd, done)
            for job_overrides, cfg in expand(sweep, overrides, sweeps_dir)]


def completed_runs(history: Path) -> dict[tuple[str, int], Path]:
    """(arm digest, seed) -> a completed run directory under `history` (links left out: they point at one)."""
    runs = {}
    for summary_path in sorted(Path(history).rglob(SUMMARY_FILE)) if Path(history).exists() else []:
        run_dir = summary_path.parent
        if run_dir.is_symlink() or (read_summary(run_dir) or {}).get("status") != Status.COMPLETED:
            continue
        config = read_hydra_record(run_dir).composed()
        if config is None:
            continue
        try:
            runs.setdefault((sweep_design.arm_digest(config), int(config.seed)), run_dir)
        except Exception:  # a foreign or half-written directory is no evidence
            continue
    return runs


def job_state(run_dir: Path, arm: str, seed: int, max_steps: int, done: dict) -> tuple[str, int, Path | None]:
    """(state, steps already run, the identical completed run it reuses)."""
    previous = read_summary(run_dir)
    if previous:
        steps = max_steps if previous["status"] == Status.COMPLETED else previous.get("steps") or 0
        return previous["status"], steps, None
    elsewhere = done.get((arm, seed))
    if elsewhere is not None and elsewhere.resolve() != run_dir.resolve():
        return REUSED, max_steps, elsewhere
    return "new", 0, None


def make_job(sweep: str, overrides: list[str], cfg: DictConfig, measured: dict, table: dict,
             gpu_hour_usd: float | None, done: dict) -> Job:
    run_dir = Path(cfg.hydra.sweep.dir) / cfg.hydra.sweep.subdir
    model, hw, optimizer = cfg.model.preset, cfg.hardware, cfg.hydra.runtime.choices.optimizer
    step_s, source = cost.step_time((model, optimizer, hw.name), measured, table)
    arm = sweep_design.arm_digest(cfg)
    state, done_steps, reused_from = job_state(run_dir, arm, cfg.seed, cfg.trainer.max_steps, done)
    steps = max(0, cfg.trainer.max_steps - done_steps)
    estimate = cost.job_estimate(cfg, steps, step_s, source.endswith(" runs"), table)
    checkpoint_gb = table.get("checkpoint_gb", {}).get(model)
    try:
        validate_settings(cfg)
        invalid = None
    except ConfigError as err:
        invalid = str(err)
    return Job(
        sweep=sweep, overrides=overrides, run_dir=run_dir, phase=None if cfg.phase is None else str(cfg.phase),
        model=model, optimizer=optimizer, hardware=hw.name, seed=cfg.seed, arm=arm,
        setting=sweep_design.setting_of(cfg),
        gpus=hw.world_size if hw.device == "cuda" else 0, steps=steps,
        state=state, step_time_s=step_s, step_time_source=source,
        gpu_hour_usd=hw.gpu_hour_usd if gpu_hour_usd is None else gpu_hour_usd,
        disk_gb=None if checkpoint_gb is None or reused_from else checkpoint_gb * cfg.trainer.keep_checkpoints,
        seconds=estimate.seconds, unmeasured=estimate.unmeasured, device=hw.device,
        local="Slurm" not in str(OmegaConf.select(cfg, "hydra.launcher._target_", default="")),
        reused_from=reused_from, invalid=invalid,
        parallel=OmegaConf.select(cfg, "hydra.sweeper.max_batch_size", default=None)
        or OmegaConf.select(cfg, "hydra.launcher.array_parallelism", default=None) or 1,
    )


def disk_text(jobs: list[Job]) -> str:
    known = [j.disk_gb for j in jobs if j.disk_gb is not None]
    unknown = sum(j.disk_gb is None and not j.reused_from for j in jobs)
    return f"{sum(known):.0f} GB" + (f" (+{unknown} jobs of unknown size)" if unknown else "")


def wall_text(jobs: list[Job]) -> str:
    """How long the jobs still take on their launcher (its jobs at a time), from the priced ones."""
    parallel = max(1, min(max((j.parallel for j in jobs), default=1), sum(bool(j.seconds) for j in jobs)))
    hours = sum(j.seconds or 0.0 for j in jobs) / 3600 / parallel
    return f"wall ≈ {hours:.2f} h at {parallel} job(s) at a time"


def totals_line(name: str, jobs: list[Job], table: dict) -> str:
    gpu_hours, usd = sum(j.gpu_hours for j in jobs), sum(j.usd for j in jobs)
    old = comparison_usd(jobs, table)
    line = f"{name}: {len(jobs)} jobs, {gpu_hours:.2f} GPU-hours, ${usd:.2f}, checkpoints {disk_text(jobs)}"
    line += f", {wall_text(jobs)}"
    reused = sum(bool(j.reused_from) for j in jobs)
    line += f"; {reused} already run in another sweep (reused, not priced)" if reused else ""
    unpriced = sum(not j.priced for j in jobs)
    line += f"; {unpriced} jobs UNPRICED (no measured step time)" if unpriced else ""
    unmeasured = sorted({part for j in jobs if j.priced and j.steps for part in j.unmeasured})
    if unmeasured:
        line += f"; unmeasured, not in the estimate: {', '.join(unmeasured)}"
    return line + (f" (at the original scripts' step times: ${old:.2f})" if old is not None else "")


def format_plan(name: str, jobs: list[Job], table: dict | None = None) -> str:
    table = table or step_time_table()
    rows = [["#", "overrides", "run dir", "state", "model", "hardware", "steps", "s/step (source)", "GPU-h", "$"]]
    for i, job in enumerate(jobs):
        rows.append([
            str(i), " ".join(job.overrides), str(job.run_dir), "INVALID" if job.invalid else job.state, job.model,
            job.hardware, str(job.steps),
            "?" if job.step_time_s is None else f"{job.step_time_s:.3f} ({job.step_time_source})",
            f"{job.gpu_hours:.2f}" if job.priced else "?", f"{job.usd:.2f}" if job.priced else "?",
        ])
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines += ["-" * len(lines[0]), totals_line(name, jobs, table)]
    if any(not j.priced for j in jobs):
        lines.append(f"? = no step time known for that model/optimizer/hardware: add it to "
                     f"{STEP_TIMES.relative_to(ROOT)}")
    lines += [f"reused job {i}: {job.run_dir} is {job.reused_from}" for i, job in enumerate(jobs) if job.reused_from]
    lines += [f"INVALID job {i}: {job.invalid}" for i, job in enumerate(jobs) if job.invalid]
    return "\n".join(lines)


# ---- the launch preflight's refusals, each one `error:` line ----

def unpriced_error(jobs: list[Job]) -> str | None:
    missing = [j for j in jobs if not j.priced and j.gpus]
    if not missing:
        return None
    keys = sorted({f"({j.model}, {j.optimizer}, {j.hardware})" for j in missing})
    return (f"cannot price {len(missing)} jobs: no measured step time for {', '.join(keys)}; add it to "
            f"{STEP_TIMES.relative_to(ROOT)}")


def device_error(jobs: list[Job]) -> str | None:
    """A local launcher runs its jobs on this machine: they need its CUDA GPUs (a cluster's launcher decides there)."""
    needs = max((j.gpus for j in jobs if j.local and j.device == "cuda" and j.steps and not j.reused_from), default=0)
    if not needs:
        return None
    import torch

    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if have >= needs:
        return None
    hardware = sorted({j.hardware for j in jobs if j.local and j.device == "cuda"})
    return (f"hardware={','.join(hardware)} needs {needs} CUDA GPU(s) per job but this machine has {have}, and the "
            f"launcher runs the jobs here: launch on a GPU machine, on a cluster (CLUSTER=slurm), or rehearse here "
            f"with PRESET=tiny")


def budget_error(jobs: list[Job], budget_usd: float | None, history: Path, sweeps: list[str]) -> str | None:
    if budget_usd is None:
        return None
    _, spent_usd, spent_runs = cost.spent(history)
    usd = sum(j.usd for j in jobs)
    if spent_usd + usd <= budget_usd:
        return None
    return (f"budget_usd={budget_usd:g} would be crossed: the plan's {spent_runs} runs under {history} already cost "
            f"${spent_usd:.2f} and this launch ({', '.join(sweeps)}) costs ${usd:.2f}: raise BUDGET_USD, or trim the "
            f"sweep")


def link_reused(jobs: list[Job]) -> int:
    """Make each reused job's run directory a link to the identical run: the launcher skips it as completed."""
    for job in jobs:
        if job.reused_from and not job.run_dir.exists():
            job.run_dir.parent.mkdir(parents=True, exist_ok=True)
            job.run_dir.symlink_to(job.reused_from.resolve(), target_is_directory=True)
    return sum(bool(j.reused_from) for j in jobs)


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
                        help="the whole plan's budget: refuse (exit 1, one error: line) when what the runs under "
                             "--history already cost plus these sweeps is more")
    parser.add_argument("--summary", action="store_true",
                        help="the launch preflight: one line per sweep, and refuse unpriced jobs and local jobs "
                             "this machine has no device for")
    parser.add_argument("--link-reused", action="store_true",
                        help="after the checks pass, link each reused job's run directory to its identical run")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    sweeps = [a for a in args.args if "=" not in a]
    overrides = [a for a in args.args if "=" in a]
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
    errors = [f"{invalid} job(s) have invalid settings (listed above); fix them before launching" if invalid else None,
              unpriced_error(everything) if args.summary or args.budget_usd is not None else None,
              device_error(everything) if args.summary else None,
              budget_error(everything, args.budget_usd, args.history, sweeps)]
    error = next((e for e in errors if e), None)
    if error:
        print(f"error: {error}; nothing was launched")
        return 1
    if args.link_reused and link_reused(everything):
        print(f"linked {sum(bool(j.reused_from) for j in everything)} reused run(s) into their sweep directories")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
