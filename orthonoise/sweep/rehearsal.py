"""The whole experiment plan rehearsed on this CPU, in the plan's order, the way a researcher chains it:

  3.1 and its report → 3.2 (its four sweep files) and its report, which writes the winners → the confirmation on
  fresh seeds with those winners, and its report → 3.3 and 4 with the confirmed winners, and their reports → the
  positive control and the A/A control (sweeps/control_*.yaml), and their reports.

Every plan sweep runs on the tiny preset (the Makefile's PRESET=tiny overrides and launcher) into
<out>/sweeps/<sweep>-tiny (<out> is an outputs root: outputs/ by default, where `make phase* PRESET=tiny` writes),
with fewer seeds and grid points than the plan (CUTS): what is rehearsed is the chain — every launch, every report,
every hand-over between phases — not the science. The controls run as their files say (they are tiny already).
One job, the A/A control's arm A seed 1 (OrthoNoise: model, optimizer, noise and data-order state must all survive),
is preempted twice with USR2 as SLURM does and relaunched each time; it must end completed and bit-identical (final
val loss, every parameter) to the same job run without interruption into <out>/rehearsal/preemption-reference.

    python -m orthonoise.sweep.rehearsal [--out DIR]        # make rehearsal [REHEARSAL_OUT=DIR]

Writes <out>/rehearsal/rehearsal.json (per step: minutes, jobs, verdicts; the controls' calls; the preemption check) and
prints it as a table. Exit 1 when a launch or a report failed, a check did not hold, or a control called wrong.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import resource
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from orthonoise import REPO_ROOT
from orthonoise.run.checkpoint import checkpoint_paths
from orthonoise.sweep.winners import CONFIRMATION, FILE, SCREENING

DEFAULT_OUT = Path("outputs")
LABEL = "-tiny"  # the tiny preset's sweep-dir suffix (sweeps/preset/tiny.yaml)
TINY = ("+preset=tiny", "model=tiny", "data=local", "hardware=cpu", "logger=disabled")  # the Makefile's TINY
LAUNCHER = ("hydra/launcher=local_parallel", "hydra.sweeper.max_batch_size=2")  # its TINY_LAUNCHER
SEEDS = "seed=1,2"  # two seeds: the fewest that give a comparison an interval
# The plan's grids, cut so that the chain runs in minutes; every sweep file still runs.
CUTS = {
    "phase31": (SEEDS,),
    "phase32_baseline": (SEEDS,),
    "phase32_alpha": ("optimizer.alpha=1e-3,1e-2", SEEDS),
    "phase32_schedule": (SEEDS,),
    "phase32_adaptive": (SEEDS,),
    "phase32_confirm": ("seed=101,102",),  # fresh seeds, as in the file (101-105): none of them ran in 3.2
    "phase33_finetune": (SEEDS,),
    "phase33_scratch": (SEEDS,),
    "phase4_350m": (SEEDS,),
    "phase4_1b": (SEEDS,),
}
PREEMPT_AT = (5, 15)  # logged steps after which USR2 arrives (the controls run 30 steps, a checkpoint every 20)
STEP_TIMEOUT_S = 3600


@dataclass
class Phase:
    """A step of the plan: its sweep files in launch order, and the report over them (the first dir holds it)."""
    title: str
    phase: str  # whose pass criteria the report evaluates
    sweeps: tuple[str, ...]
    report_order: tuple[str, ...] = ()  # the report's sweep dirs when not the launch order (its first is its home)

    @property
    def report_sweeps(self) -> tuple[str, ...]:
        return self.report_order or self.sweeps


PLAN = (
    Phase("3.1", "3.1", ("phase31",)),
    # the 3.2 report lives beside phase32_alpha, where it writes the winners (orthonoise/sweep/winners.py)
    Phase("3.2", "3.2", ("phase32_baseline", "phase32_alpha", "phase32_schedule", "phase32_adaptive"),
          ("phase32_alpha", "phase32_baseline", "phase32_schedule", "phase32_adaptive")),
    Phase("3.2 confirmation", "3.2", ("phase32_confirm",)),
    Phase("3.3", "3.3", ("phase33_finetune", "phase33_scratch")),
    Phase("4", "4", ("phase4_350m", "phase4_1b")),
)


# The winners a later step composes, as `make phase32-confirm` / `phase33` / `phase4` hand them on: the stage of the
# winners file, the step whose report wrote it, and the generated arm dir (<out>/arms-tiny/<name>, hydra.searchpath).
HANDOVER = {"3.2 confirmation": (SCREENING, "3.2", "confirmation"),
            "3.3": (CONFIRMATION, "3.2 confirmation", "carried"),
            "4": (CONFIRMATION, "3.2 confirmation", "carried")}


@dataclass
class Control:
    """A control sweep: its launches (extra overrides each), the report's baseline, and the call it must get."""
    sweep: str
    launches: tuple[tuple[str, ...], ...]
    baseline: str
    expected: str  # a call of call_of(): "better" for the positive control, "not different" for the A/A


CONTROLS = (
    Control("control_positive", ((),), "optimizer=adamw", "better"),
    Control("control_aa", ((), ("control_arm=A_prime", "seed=4,5,6")), "control_arm=A", "not different"),
)
PREEMPTED = ("control_aa", ("seed=1",))  # the sweep and the overrides that pick the job preempted twice


@dataclass
class StepRecord:
    name: str
    jobs: int
    ok: bool
    verdicts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    minutes: float = 0.0  # wall time
    cpu_minutes: float = 0.0  # CPU time of every process it started: wall time on a machine of its own ≈ this / cores


# ---- launching and reading back ------------------------------------------------------------------------------

def sweep_dir(out: Path, sweep: str, tiny: bool = True) -> Path:
    return out / "sweeps" / (sweep + LABEL if tiny else sweep)


def sweep_overrides(out: Path, sweep: str, *overrides: str, tiny: bool = True, launcher=LAUNCHER) -> list[str]:
    """One sweep file's overrides as the Makefile gives them under PRESET=tiny, into this rehearsal's out dir."""
    common = TINY if tiny else ("logger=disabled",)
    return [*common, *launcher, *overrides, f"hydra.sweep.dir={sweep_dir(out, sweep, tiny)}"]


def train_command(out: Path, sweep: str, *overrides: str, tiny: bool = True, launcher=LAUNCHER) -> list[str]:
    return [sys.executable, "train.py", "-m", "-cd", "sweeps", "-cn", sweep,
            *sweep_overrides(out, sweep, *overrides, tiny=tiny, launcher=launcher)]


def preflight_command(out: Path, sweep: str, *overrides: str) -> list[str]:
    """The preflight `make phase*` runs before each launch: the jobs priced, and a job whose config and seed already
    completed in another sweep under <out> (3.1's arms in 3.2) linked to that run instead of run twice."""
    return [sys.executable, "-m", "orthonoise.sweep.plan", "--summary", "--link-reused", "--history", str(out), sweep,
            *sweep_overrides(out, sweep, *overrides)]


def run_logged(cmd: list[str], log_path: Path, timeout: float = STEP_TIMEOUT_S) -> int:
    """Run a command from the checkout root, its output appended to `log_path`; returns its exit code (raises
    subprocess.TimeoutExpired past `timeout` seconds)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        return subprocess.run(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                              timeout=timeout).returncode


def report_command(out: Path, sweeps: tuple[str, ...], *args: str, tiny: bool = True) -> list[str]:
    return [sys.executable, "-m", "orthonoise.report", *(str(sweep_dir(out, s, tiny)) for s in sweeps), *args]


def winners_file(out: Path, title: str) -> Path:
    """Where a step's report writes its winners: beside its report.md (orthonoise/sweep/winners.py)."""
    return sweep_dir(out, step_named(title).report_sweeps[0]) / FILE


def run_dirs(directory: Path) -> list[Path]:
    """The jobs of a sweep dir: every directory holding a Hydra record."""
    return sorted(p.parent for p in directory.glob("*/.hydra"))


def verdicts(report_dir: Path) -> list[str]:
    """'criterion: VERDICT' for each row of the report's criteria.csv."""
    path = report_dir / "criteria.csv"
    if not path.exists():
        return []
    with open(path) as f:
        return [f"{row['criterion']}: {row['verdict']}" for row in csv.DictReader(f)]


def call_of(low_pct: float, high_pct: float) -> str:
    """What a report says of a config against its baseline, from its simultaneous 95% interval of Δ: "better" (upper
    bound below 0, the report's "is better"), "worse", "not different" (the interval includes 0), or "no interval"
    (zero or unmeasurable spread)."""
    if not (math.isfinite(low_pct) and math.isfinite(high_pct)):
        return "no interval"
    return "better" if high_pct < 0 else "worse" if low_pct > 0 else "not different"


def compared_groups(report_dir: Path) -> dict[str, tuple[float, float, float]]:
    """group label -> (Δ%, simultaneous 95% low, high) for each group compared with a baseline (groups.csv)."""
    with open(report_dir / "groups.csv") as f:
        return {row["group"]: (float(row["delta_final_pct_model"]), float(row["sim95_low_pct"]),
                               float(row["sim95_high_pct"]))
                for row in csv.DictReader(f) if row["baseline"] not in ("", "(baseline)")}


# ---- the twice-preempted job -----------------------------------------------------------------------------------

def last_step(run_dir: Path) -> int:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines() if (run_dir / "metrics.jsonl").exists() else []
    return json.loads(lines[-1])["step"] if lines and lines[-1].endswith("}") else -1


def preempt_once(cmd: list[str], job_dir, step: int, log_path: Path) -> int:
    """Start the job, wait until it has logged `step`, send USR2 (SLURM's preemption signal) and wait for its clean
    exit; returns the step it stopped at (its summary)."""
    with open(log_path, "a") as log:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + STEP_TIMEOUT_S
        while (path := job_dir()) is None or last_step(path) < step:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the job to preempt ended (exit {proc.returncode}) before step {step}: {log_path}")
            time.sleep(0.05)
        proc.send_signal(signal.SIGUSR2)
        proc.wait(timeout=600)
    return json.loads((job_dir() / "summary.json").read_text())["steps"]


def only_job(directory: Path):
    """A callable giving the one run dir of `directory` once it exists (None before)."""
    return lambda: next(iter(run_dirs(directory)), None)


def final_params(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint_paths(run_dir)[-1], weights_only=True)["model"]


def bit_identical(run_a: Path, run_b: Path) -> list[str]:
    """How two completed runs differ (final val loss, steps, a parameter of the last checkpoint); [] if identical."""
    a, b = (json.loads((r / "summary.json").read_text()) for r in (run_a, run_b))
    diffs = [f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in ("status", "steps", "final_val_loss")
             if a.get(k) != b.get(k)]
    params_a, params_b = final_params(run_a), final_params(run_b)
    if params_a.keys() != params_b.keys():
        return [*diffs, "the checkpoints hold different parameters"]
    return diffs + [f"parameter {k} differs" for k in params_a if not torch.equal(params_a[k], params_b[k])]


def preemption_check(out: Path, logs: Path) -> StepRecord:
    """The job PREEMPTED preempted twice (relaunched after each, as a requeue does), then run again without
    interruption into <out>/rehearsal/preemption-reference: both must be completed and bit-identical."""
    sweep, picks = PREEMPTED
    basic = ("hydra/launcher=basic",)  # the job in this process's child, whose pid the signal goes to
    cmd = train_command(out, sweep, *picks, tiny=False, launcher=basic)
    job = only_job(sweep_dir(out, sweep, tiny=False))
    stops = [preempt_once(cmd, job, step, logs / "preempted.log") for step in PREEMPT_AT]
    run_logged(cmd, logs / "preempted.log")  # the relaunch after the second preemption finishes it
    reference = out / "rehearsal" / "preemption-reference"
    run_logged([*cmd[:-1], f"hydra.sweep.dir={reference}"], logs / "preemption-reference.log")
    resumes = (job() / "train.log").read_text().count("resumed from")
    diffs = bit_identical(job(), only_job(reference)()) if only_job(reference)() else ["no reference run"]
    notes = [f"stopped at steps {stops}, resumed {resumes} times", *diffs]
    return StepRecord(f"preempted twice: {sweep} {' '.join(picks)}", 2,
                      ok=resumes == 2 and not diffs, verdicts=["bit-identical" if not diffs else "DIFFERENT"],
                      notes=notes)


# ---- the steps -------------------------------------------------------------------------------------------------

def step_named(title: str) -> Phase:
    return next(p for p in PLAN if p.title == title)


def arms_dir(out: Path, phase: Phase) -> Path | None:
    """The generated arm configs a step composes (None: the sweep files' own arms)."""
    return out / f"arms{LABEL}" / HANDOVER[phase.title][2] if phase.title in HANDOVER else None


def hand_over(out: Path, logs: Path, phase: Phase) -> int:
    """Generate the step's arms from the winners an earlier step's report wrote (orthonoise/sweep/winners.py)."""
    stage, source, _ = HANDOVER[phase.title]
    cmd = [sys.executable, "-m", "orthonoise.sweep.winners", "arms", "--stage", stage, "--out",
           str(arms_dir(out, phase)), "--made-by", "python -m orthonoise.sweep.rehearsal",
           *(str(sweep_dir(out, s)) for s in step_named(source).sweeps)]
    return run_logged(cmd, logs / f"arms-{phase.title.replace(' ', '_')}.log")


def run_phase(out: Path, logs: Path, phase: Phase) -> StepRecord:
    """Launch the phase's sweep files one after another (with the winners handed on), then its report; a failed
    launch does not stop the rest."""
    arms = arms_dir(out, phase)
    codes = {"winners → arms": hand_over(out, logs, phase)} if arms else {}
    extra = (f"hydra.searchpath=[file://{arms}]",) if arms else ()
    for s in phase.sweeps:
        codes[f"{s} preflight"] = run_logged(preflight_command(out, s, *CUTS[s], *extra), logs / f"{s}.log")
        codes[s] = run_logged(train_command(out, s, *CUTS[s], *extra), logs / f"{s}.log")
    home = sweep_dir(out, phase.report_sweeps[0])
    report_code = run_logged(report_command(out, phase.report_sweeps, "--phase", phase.phase),
                             logs / f"report-{home.name}.log")
    notes = [f"{s}: exit {code} (logs in {logs})" for s, code in codes.items() if code]
    notes += [f"report: exit {report_code}"] if report_code else []
    return StepRecord(phase.title, sum(len(run_dirs(sweep_dir(out, s))) for s in phase.sweeps),
                      ok=not notes and (home / "report.md").exists(), verdicts=verdicts(home), notes=notes)


def run_control(out: Path, logs: Path, control: Control) -> StepRecord:
    """Launch the control's sweep (each launch in turn), report it against its baseline, and read the call."""
    log = logs / f"{control.sweep}.log"
    codes = [run_logged(train_command(out, control.sweep, *launch, tiny=False), log) for launch in control.launches]
    home = sweep_dir(out, control.sweep, tiny=False)
    report_code = run_logged(report_command(out, (control.sweep,), "--baseline", control.baseline, tiny=False),
                             logs / f"report-{control.sweep}.log")
    compared = compared_groups(home) if (home / "groups.csv").exists() else {}
    calls = {label: call_of(low, high) for label, (_, low, high) in compared.items()}
    texts = [f"{label} vs {control.baseline}: Δ {d:+.2f}% [{low:+.2f}, {high:+.2f}] → {calls[label]}"
             for label, (d, low, high) in compared.items()]
    notes = [f"launch {i + 1}: exit {code} ({log})" for i, code in enumerate(codes) if code]
    notes += [f"report: exit {report_code}"] if report_code else []
    right = bool(calls) and all(call == control.expected for call in calls.values())
    notes += [] if right else [f"expected every config called {control.expected!r}"]
    return StepRecord(f"control: {control.sweep}", len(run_dirs(home)),
                      ok=right and not any(codes) and not report_code, verdicts=texts, notes=notes)


def record_lines(r: StepRecord) -> list[str]:
    return [f"{r.name:<40} {r.minutes:7.1f} {r.cpu_minutes:7.1f} {r.jobs:5d}  {'yes' if r.ok else 'NO '} "
            + ("; ".join(r.verdicts) or "–"), *(f"{'':<66}note: {n}" for n in r.notes)]


def summary_lines(records: list[StepRecord]) -> list[str]:
    lines = [f"{'step':<40} {'minutes':>7} {'CPU min':>7} {'jobs':>5}  ok  verdicts"]
    for r in records:
        lines += record_lines(r)
    lines.append(f"{'total':<40} {sum(r.minutes for r in records):7.1f} {sum(r.cpu_minutes for r in records):7.1f} "
                 f"{sum(r.jobs for r in records):5d}")
    return lines


def timed(step, *args) -> StepRecord:
    """Run one step, time it (wall and CPU of the processes it started), print its line as soon as it ends."""
    start, cpu_start = time.time(), children_cpu_s()
    record = step(*args)
    record.minutes, record.cpu_minutes = (time.time() - start) / 60, (children_cpu_s() - cpu_start) / 60
    print("\n".join(record_lines(record)), flush=True)
    return record


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # every finished descendant that was waited for
    return usage.ru_utime + usage.ru_stime


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m orthonoise.sweep.rehearsal", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="the outputs root: sweeps go to <out>/sweeps/<sweep>-tiny (default: outputs, as with "
                             "PRESET=tiny)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    out = parse_args(argv).out.resolve()
    logs = out / "rehearsal" / "logs"
    records = [timed(run_phase, out, logs, phase) for phase in PLAN]
    records.append(timed(preemption_check, out, logs))  # before the A/A launches, which then skip the job it completed
    records += [timed(run_control, out, logs, control) for control in CONTROLS]
    (out / "rehearsal" / "rehearsal.json").write_text(json.dumps([asdict(r) for r in records], indent=2) + "\n")
    print("\n".join(["REHEARSAL of the whole plan (tiny preset, cut grids; orthonoise/sweep/rehearsal.py):",
                     *summary_lines(records), f"logs: {logs}; summary: {out / 'rehearsal' / 'rehearsal.json'}"]))
    return 0 if all(r.ok for r in records) else 1


if __name__ == "__main__":
    raise SystemExit(main())
