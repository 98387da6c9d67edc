"""Sweep launchers that account for every job, and the one line that ends every multirun.

hydra-submitit-launcher submits a sweep's jobs, then reads their results in order: the first job that ended
without one (SIGKILL, the OOM killer, a node failure) raises, and the sweep stops there while the other jobs run on
unobserved. The launchers built from these mixins (hydra_plugins/orthonoise_launcher, where Hydra looks for plugins;
conf/hydra/launcher/*.yaml name them in `_target_`) add:
- before submission: a SLURM time limit must leave the trainer time after the preemption signal, the sweep's
  top-level keys must exist, no two jobs may share a run directory, a job whose run directory a live process holds
  is not submitted (counted "running elsewhere": its result is still owed, so the sweep exits non-zero), and a job
  whose run directory says completed is not submitted (on SLURM it would cost an allocation and queue time just to
  exit, and its `.hydra/` record would be rewritten). Diverged jobs are run again and counted, unless
  `hydra.launcher.skip_diverged=true`;
- after: every job's result is gathered; a job that ended without one is recorded `failed` in its run directory
  with the scheduler's word for it; a job the scheduler requeued after it stopped (`scontrol requeue`) is waited for;
  a job SLURM ended (TIMEOUT, CANCELLED, NODE_FAIL, ...) has that state in its summary (`slurm_state`);
- each job's outcome goes to the multirun's `SweepTally`, kept by `SweepSummary`, the Hydra callback
  (conf/config.yaml) that ends every multirun, on any launcher, with one line of counts and a non-zero exit when a
  job failed or was left unfinished.

Job states come from `sacct` when the cluster keeps accounting, else from slurmctld itself (slurm_state.py).
hydra-submitit-launcher's internals are used through orthonoise/sweep/submitit_adapter.py only.
"""
from __future__ import annotations

import logging
import math
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from orthonoise.errors import ConfigError
from orthonoise.run.metrics import mark_status
from orthonoise.run.rundir import RUNNING_ELSEWHERE, SKIPPED, SLURM_STATE, Status, read_summary
from orthonoise.run.runlock import held_elsewhere
from orthonoise.sweep.submitit_adapter import LocalQueueConf, SlurmQueueConf

log = logging.getLogger(__name__)

POLL_S = 2
# SLURM states of a job that has not ended for good (a requeued job passes through them again)
WAITING_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
                  "RESIZING", "SUSPENDED", "PREEMPTED", "UNKNOWN"}
UNKNOWN_GRACE_S = 60           # a job the scheduler no longer knows about has ended


@dataclass
class SlurmConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.orthonoise_launcher.SlurmLauncher"
    skip_diverged: bool = False  # a relaunch leaves diverged runs as they are instead of re-running them


@dataclass
class LocalConf(LocalQueueConf):
    _target_: str = "hydra_plugins.orthonoise_launcher.LocalLauncher"
    skip_diverged: bool = False


def register_launchers() -> None:
    """The launcher schemas conf/hydra/launcher/*.yaml build on (registered when Hydra scans its plugins)."""
    ConfigStore.instance().store(group="hydra/launcher", name="orthonoise_slurm", node=SlurmConf, provider="orthonoise")
    ConfigStore.instance().store(group="hydra/launcher", name="orthonoise_local", node=LocalConf, provider="orthonoise")


# ---- the sweep's tally, kept by SweepSummary in the launching process from on_multirun_start to on_multirun_end ----

MAIN_OUTCOMES = (Status.COMPLETED.value, SKIPPED, Status.FAILED.value, Status.DIVERGED.value)


class SweepTally:
    """What became of each job of one multirun, and the SLURM end states of those SLURM ended itself."""

    def __init__(self) -> None:
        self.outcomes: Counter = Counter()
        self.scheduler_states: Counter = Counter()

    def record(self, outcome: str, scheduler_state: str | None = None) -> None:
        self.outcomes[outcome] += 1
        if scheduler_state:
            self.scheduler_states[scheduler_state] += 1

    def line(self, sweep_dir: str) -> str:
        counts = [f"{self.outcomes[word]} {word}" for word in MAIN_OUTCOMES]
        counts += [f"{n} {word}" for word, n in sorted(self.outcomes.items()) if word not in MAIN_OUTCOMES and n]
        states = ", ".join(f"{n} {state}" for state, n in sorted(self.scheduler_states.items()))
        return (f"sweep: {sum(self.outcomes.values())} jobs: {', '.join(counts)}"
                f"{f'; SLURM ended {states}' if states else ''} | {sweep_dir}")

    def unfinished(self) -> int:
        """Jobs that failed or were left without a result (interrupted, running elsewhere, never started)."""
        return sum(n for word, n in self.outcomes.items() if word not in (Status.COMPLETED, Status.DIVERGED, SKIPPED))


def job_outcome(run_dir: Path, return_value: Any = None) -> str:
    """What became of a job: skipped or running elsewhere when it said so, else its run directory's status; an
    Optuna trial (no summary, a number) by its value."""
    if return_value in (SKIPPED, RUNNING_ELSEWHERE):
        return return_value
    summary = read_summary(run_dir)
    if summary and Status.parse(summary.get("status")):
        return Status.parse(summary["status"]).value
    if isinstance(return_value, (int, float)) and not isinstance(return_value, bool):
        return (Status.COMPLETED if math.isfinite(return_value) else Status.FAILED).value
    return Status.MISSING.value


class SweepSummary(Callback):
    """Ends every multirun with one line (completed / skipped / failed / diverged / ...) and exits 1 when a job
    failed or is unfinished. Jobs run in this process (Hydra's basic launcher) are counted here; the launchers of
    this module count the jobs they submit into `tally` (found through Hydra's callbacks: `sweep_tally`)."""

    def __init__(self) -> None:
        self.tally: SweepTally | None = None  # None outside a multirun, and in a job's own process
        self.ran_here: dict[str, bool] = {}

    def __getstate__(self) -> dict:
        # pickled into each submitit job with the launcher's Hydra context: a job counts nothing of its own
        return {**self.__dict__, "tally": None, "ran_here": {}}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.tally, self.ran_here = SweepTally(), {}

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if self.tally is None:
            return
        run_dir = config.hydra.runtime.output_dir
        if run_dir in self.ran_here:  # Hydra's basic launcher: jobs run one by one, so this is the first chance
            print(f"error: {same_dir_message([run_dir], 'hydra.sweep.subdir')}", file=sys.stderr, flush=True)
            sys.exit(2)
        previous = read_summary(Path(run_dir)) or {}
        self.ran_here[run_dir] = previous.get("status") == Status.COMPLETED

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if self.tally is None:
            return
        run_dir = config.hydra.runtime.output_dir
        value = job_return._return_value if job_return.status == JobStatus.COMPLETED else None
        self.tally.record(SKIPPED if self.ran_here.get(run_dir) else job_outcome(Path(run_dir), value))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        tally, self.tally = self.tally or SweepTally(), None
        print(tally.line(config.hydra.sweep.dir), flush=True)
        if tally.unfinished():
            sys.exit(1)


def sweep_tally(context) -> SweepTally:
    """The running multirun's tally (SweepSummary among Hydra's callbacks); a throwaway one when the sweep has no
    SweepSummary."""
    for callback in getattr(getattr(context, "callbacks", None), "callbacks", []):
        if isinstance(callback, SweepSummary) and callback.tally is not None:
            return callback.tally
    return SweepTally()


# ---- checks before submission ----

def same_dir_message(run_dirs: list[str], key: str) -> str:
    return (f"{key} maps several jobs of this sweep to one run directory ({', '.join(run_dirs)}): each would "
            f"resume or skip the other's run; allowed: a subdir that differs per job (conf/config.yaml's default "
            f"names it by the job's overrides)")


def check_distinct(run_dirs: list[Path], job_overrides: Sequence[Sequence[str]]) -> None:
    """No two jobs of one sweep may share a run directory (e.g. `hydra.sweep.subdir=same`)."""
    jobs: dict[Path, list[str]] = {}
    for run_dir, overrides in zip(run_dirs, job_overrides):
        jobs.setdefault(run_dir.resolve(), []).append(" ".join(filter_overrides(overrides)) or "(no overrides)")
    shared = {d: o for d, o in jobs.items() if len(o) > 1}
    if shared:
        run_dir, overrides = next(iter(shared.items()))
        raise ConfigError(same_dir_message([str(run_dir)], "hydra.sweep.subdir") + f"; jobs: {'; '.join(overrides)}")


def whole_sweep(config: DictConfig, context) -> list[list[str]] | None:
    """Every job's overrides when Hydra's basic sweeper launches the sweep in batches (the launcher sees one batch
    at a time), as that sweeper expands them; None for another sweeper (Optuna's trials are not known ahead)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if not str(config.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return None
    arguments = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    arguments += list(config.hydra.overrides.task)
    parsed = OverridesParser.create(config_loader=context.config_loader).parse_overrides(arguments)
    return BasicSweeper.split_arguments(parsed, None)[0]


def run_dir_of(cfg: DictConfig) -> Path:
    saved = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(cfg)  # the sweep dir may use ${hydra:...}
    try:
        return Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
    finally:
        HydraConfig.instance().cfg = saved


# ---- the launchers ----

class Accounting:
    """What orthonoise adds to hydra-submitit-launcher's launchers (see the module docstring); the base class is a
    submitit_adapter launcher."""

    def __init__(self, skip_diverged: bool = False, **params: Any) -> None:
        super().__init__(**params)
        self.skip_diverged = skip_diverged

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from orthonoise.validate import check_top_level_keys

        tally = sweep_tally(self.context)
        try:
            check_top_level_keys(self.sweep_config)
            configs = [self.job_config(list(overrides)) for overrides in job_overrides]
            self.check_params(configs)
            run_dirs = [run_dir_of(cfg) for cfg in configs]
            everything = whole_sweep(self.sweep_config, self.context) if initial_job_idx == 0 else None
            if everything and len(everything) > len(job_overrides):  # the first of several batches
                check_distinct([run_dir_of(self.job_config(o)) for o in everything], everything)
            check_distinct(run_dirs, job_overrides)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(2)
        submit, not_submitted = self.triage(run_dirs)
        returns: list[JobReturn | None] = [None] * len(job_overrides)
        for i, outcome in not_submitted.items():
            returns[i] = JobReturn(overrides=list(job_overrides[i]), status=JobStatus.COMPLETED, _return_value=outcome)
            tally.record(outcome)
        if submit:
            jobs = [(list(job_overrides[i]), initial_job_idx + i) for i in submit]
            for overrides, idx in jobs:
                log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            submitted = self.watch(self.submit_array(jobs))
            self.await_jobs(submitted)
            for i, job in zip(submit, submitted):
                returns[i] = self.gather(job, run_dirs[i], list(job_overrides[i]), tally)
        return returns

    def check_params(self, configs: list[DictConfig]) -> None:
        """Launcher settings that cannot work (the SLURM launcher checks its time limit)."""

    def triage(self, run_dirs: list[Path]) -> tuple[list[int], dict[int, str]]:
        """(the indices of the jobs to submit, {index: outcome} of the others); says what it leaves out."""
        busy = {i for i, d in enumerate(run_dirs) if held_elsewhere(d)}
        states = [(read_summary(d) or {}).get("status") if i not in busy else None for i, d in enumerate(run_dirs)]
        done = {i for i, s in enumerate(states) if s == Status.COMPLETED}
        diverged = {i for i, s in enumerate(states) if s == Status.DIVERGED}
        if busy:
            log.warning("not submitted: %d of %d jobs, running elsewhere (a live process holds their run directories,"
                        " e.g. %s; their results come from it)", len(busy), len(run_dirs), run_dirs[min(busy)])
        if done:
            log.info("skipped %d of %d jobs: their run directories say completed (not submitted)", len(done),
                     len(run_dirs))
        if diverged and self.skip_diverged:
            log.info("skipped %d diverged jobs (hydra.launcher.skip_diverged=true)", len(diverged))
        elif diverged:
            log.info("re-running %d diverged jobs (hydra.launcher.skip_diverged=true leaves them)", len(diverged))
        skip = done | (diverged if self.skip_diverged else set())
        not_submitted = {**{i: SKIPPED for i in skip}, **{i: RUNNING_ELSEWHERE for i in busy}}
        return [i for i in range(len(run_dirs)) if i not in not_submitted], dict(sorted(not_submitted.items()))

    def watch(self, jobs: list) -> list:
        """The submitted jobs, as the objects that will be asked for their states."""
        return jobs

    def await_jobs(self, jobs: list) -> None:
        """Wait for the jobs before their results are read (SLURM says why waiting jobs wait)."""

    def gather(self, job, run_dir: Path, overrides: list[str], tally: SweepTally) -> JobReturn:
        """The job's own JobReturn; for a job that ended without one, `failed` in its run directory."""
        scheduler_state = None
        try:
            result = job.results()[0]
            result, scheduler_state = self.after_result(job, run_dir, result)
        except Exception as err:  # noqa: BLE001 - submitit raises UncompletedJobError / FailedJobError, and others
            scheduler_state = self.end_state(job, err)
            if job_outcome(run_dir) not in (Status.COMPLETED, Status.DIVERGED, Status.FAILED):
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                mark_status(run_dir, Status.FAILED, error=f"job {job.job_id} ended without a result (scheduler state "
                            f"{scheduler_state}: killed, out of memory, node failure?): {first}",
                            **self.state_field(scheduler_state))
            log.error("job %s (%s) ended without a result, state %s: recorded failed in %s", job.job_id,
                      " ".join(overrides), scheduler_state, run_dir)
            result = JobReturn(overrides=overrides, status=JobStatus.COMPLETED, _return_value=Status.FAILED.value)
        value = result._return_value if result.status == JobStatus.COMPLETED else None
        tally.record(job_outcome(run_dir, value), scheduler_state)
        return result

    def after_result(self, job, run_dir: Path, result: JobReturn) -> tuple[JobReturn, str | None]:
        """(the result that counts, the scheduler's end state when it ended the job itself)."""
        return result, None

    def end_state(self, job, err: Exception) -> str | None:
        """The scheduler's word for a job that ended without a result."""
        return getattr(job, "state", None)

    def state_field(self, scheduler_state: str | None) -> dict:
        """The summary field that names the scheduler's end state (none for the local launcher)."""
        return {}


# ---- SLURM ----

MIN_START_S = 60       # from a job's start to the earliest signal: imports, building the model, resuming
EARLY_SIGNAL_S = 16    # USR2 came up to this much earlier than signal_delay_s on .ci/slurm.sh's cluster
CHECKPOINT_S = 30      # after the signal's step, writing the checkpoint (a 1B model's optimizer state, shared disk)


def check_signal_margin(params: dict, step_s: float | None) -> None:
    """SLURM sends USR2 signal_delay_s (give or take EARLY_SIGNAL_S) before the time limit. After it the trainer
    finishes its step and writes a checkpoint before the kill, so the delay must cover both (0 sends no signal); and
    the signal must not come before the trainer is up, or the job is requeued without having made progress."""
    timeout_min, delay = params.get("timeout_min"), params.get("signal_delay_s")
    if delay is None:
        return
    needed = math.ceil((step_s or 0.0) + CHECKPOINT_S)
    if delay < needed:
        step = f"a step ({step_s:g} s, bench/results/step_times.yaml)" if step_s else "a step"
        raise ConfigError(
            f"hydra.launcher.signal_delay_s={delay} is too short: after the signal the trainer finishes {step} and "
            f"writes a checkpoint (up to {CHECKPOINT_S} s) before SLURM kills the job, and 0 sends no signal at all; "
            f"allowed: signal_delay_s ≥ {needed}")
    if timeout_min is None:
        return
    margin = timeout_min * 60 - delay - EARLY_SIGNAL_S
    if margin < MIN_START_S:
        raise ConfigError(
            f"hydra.launcher.timeout_min={timeout_min} is too short for hydra.launcher.signal_delay_s={delay}: the "
            f"preemption signal could come {margin} s after the job starts (it arrives up to {EARLY_SIGNAL_S} s "
            f"early); allowed: timeout_min·60 − signal_delay_s − {EARLY_SIGNAL_S} ≥ {MIN_START_S} s (raise "
            f"timeout_min or lower signal_delay_s)")


def slowest_step_s(configs: list[DictConfig]) -> float | None:
    """The longest measured step time among the jobs (model preset, optimizer, hardware); None when none is known."""
    from omegaconf import OmegaConf

    from orthonoise.sweep.cost import step_time, step_time_table

    table = step_time_table()
    keys = {(OmegaConf.select(c, "model.preset"), OmegaConf.select(c, "hydra.runtime.choices.optimizer"),
             OmegaConf.select(c, "hardware.name")) for c in configs}
    times = [s for s in (step_time(key, {}, table)[0] for key in keys) if s is not None]
    return max(times, default=None)


class SlurmAccounting(Accounting):
    """For SLURM: the time limit checked, job states without accounting, why jobs wait, requeued jobs waited
    for, and the end state of a job SLURM ended named."""

    def check_params(self, configs: list[DictConfig]) -> None:
        check_signal_margin(self.launch_params, slowest_step_s(configs))

    def watch(self, jobs: list) -> list:
        """submitit's SlurmJob reads states from sacct only; ours falls back to slurmctld (slurm_state)."""
        from orthonoise.sweep.slurm_state import WatchedSlurmJob

        return [WatchedSlurmJob(folder=job.paths.folder, job_id=job.job_id, tasks=list(range(job.num_tasks)))
                for job in jobs]

    def await_jobs(self, jobs: list) -> None:
        """Wait for every job, saying once a minute why those still queued wait (a drained node, a limit)."""
        from orthonoise.sweep.slurm_state import PendingReporter

        reporter = PendingReporter()
        while waiting := [job.job_id for job in jobs if not job.done()]:
            line = reporter.report(waiting)
            if line:
                log.info("%s", line)
            time.sleep(POLL_S)

    def end_state(self, job, err: Exception) -> str | None:
        from orthonoise.sweep.slurm_state import gave_up_after_timeouts

        return "TIMEOUT" if gave_up_after_timeouts(str(err)) else job.watcher.refresh(job.job_id)

    def state_field(self, scheduler_state: str | None) -> dict:
        return {SLURM_STATE: scheduler_state} if scheduler_state else {}

    def after_result(self, job, run_dir: Path, result: JobReturn) -> tuple[JobReturn, str | None]:
        """A job that stopped `interrupted` and that SLURM requeued (`scontrol requeue`: SIGTERM, then a rerun)
        is waited for: its rerun resumes from the checkpoint and writes the result that counts. One that SLURM
        did not run again has SLURM's word for why in its summary."""
        from orthonoise.sweep.slurm_state import gave_up_after_timeouts

        summary = read_summary(run_dir) or {}
        if summary.get("status") == Status.FAILED and gave_up_after_timeouts(summary.get("error") or ""):
            return result, self.record_end(run_dir, "TIMEOUT")
        if summary.get("status") != Status.INTERRUPTED:
            return result, None
        pickle = job.paths.result_pickle
        first, announced, unknown_since = pickle.stat().st_mtime, False, None
        while pickle.stat().st_mtime <= first:
            state = job.watcher.refresh(job.job_id)
            unknown_since = (unknown_since or time.time()) if state == "UNKNOWN" else None
            if state not in WAITING_STATES or unknown_since and time.time() - unknown_since > UNKNOWN_GRACE_S:
                if pickle.stat().st_mtime > first:
                    break
                return result, self.record_end(run_dir, state)  # stopped and not requeued (scancel, time limit)
            if not announced and state not in ("RUNNING", "COMPLETING", "UNKNOWN"):
                log.info("job %s stopped at a checkpoint and SLURM requeued it (%s): waiting for its rerun",
                         job.job_id, state)
                announced = True
            time.sleep(POLL_S)
        return self.after_result(job, run_dir, job.results()[0])

    def record_end(self, run_dir: Path, state: str) -> str | None:
        """An interrupted run that SLURM did not run again: `interrupted` (it has its checkpoint; a relaunch
        resumes it), with SLURM's end state and what to do. A job whose process ended by itself (COMPLETED: e.g.
        its rerun refused the run directory) or that SLURM no longer knows keeps what its run recorded."""
        from orthonoise.sweep.slurm_state import end_state_text

        if state in ("COMPLETED", "UNKNOWN"):
            return None
        mark_status(run_dir, Status.INTERRUPTED, slurm_state=state,
                    error=f"{end_state_text(state, self.launch_params.get('max_num_timeout'))}; launching the sweep "
                          f"again resumes it from its checkpoint")
        return state
