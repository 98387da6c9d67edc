"""Sweep launchers that account for every job, and the one line that ends every multirun.

hydra-submitit-launcher submits a sweep's jobs, then reads their results in order: the first job that ended
without one (SIGKILL, the OOM killer, a node failure) raises, and the sweep stops there while the other jobs run on
unobserved. The launchers built from these mixins (hydra_plugins/orthonoise_launcher, where Hydra looks for plugins;
conf/hydra/launcher/*.yaml name them in `_target_`) add:
- before submission: a SLURM time limit must leave the trainer time after the preemption signal, the sweep's
  top-level keys must exist, and a job whose run directory says completed is not submitted (on SLURM it would cost
  an allocation and queue time just to exit, and its `.hydra/` record would be rewritten). Diverged jobs are run
  again and counted, unless `hydra.launcher.skip_diverged=true`;
- after: every job's result is gathered; a job that ended without one is recorded `failed` in its run directory
  with the scheduler's word for it; a job the scheduler requeued after it stopped (`scontrol requeue`) is waited for;
- each job's outcome goes to `SweepSummary`, the Hydra callback (conf/config.yaml) that ends every multirun, on any
  launcher, with one line of counts and a non-zero exit when a job failed or was left unfinished.

Job states come from `sacct` when the cluster keeps accounting, else from slurmctld itself (`squeue -t all`), which
keeps a finished job for MinJobAge seconds (.ci/slurm.sh's test cluster has no accounting database).
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
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, LocalQueueConf, SlurmQueueConf
from omegaconf import DictConfig, OmegaConf

from orthonoise.errors import ConfigError
from orthonoise.run.metrics import mark_status
from orthonoise.run.rundir import SKIPPED, Status, read_summary

log = logging.getLogger(__name__)

MIN_SIGNAL_MARGIN_S = 60       # after the preemption signal a job needs to finish its step and write a checkpoint
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


# ---- the sweep's tally, kept in the launching process from on_multirun_start to on_multirun_end ----

_tally: Counter | None = None


def job_outcome(run_dir: Path, return_value: Any = None) -> str:
    """What became of a job: skipped when it said so (its directory held by a live process), else its run
    directory's status; an Optuna trial (no summary, a number) by its value."""
    if return_value == SKIPPED:
        return SKIPPED
    summary = read_summary(run_dir)
    if summary and Status.parse(summary.get("status")):
        return Status.parse(summary["status"]).value
    if isinstance(return_value, (int, float)) and not isinstance(return_value, bool):
        return (Status.COMPLETED if math.isfinite(return_value) else Status.FAILED).value
    return Status.MISSING.value


def record(outcome: str) -> None:
    if _tally is not None:  # None inside a job's own process, where no multirun started
        _tally[outcome] += 1


def summary_line(tally: Counter, sweep_dir: str) -> str:
    main = [Status.COMPLETED.value, SKIPPED, Status.FAILED.value, Status.DIVERGED.value]
    counts = [f"{tally[word]} {word}" for word in main]
    counts += [f"{n} {word}" for word, n in sorted(tally.items()) if word not in main and n]
    return f"sweep: {sum(tally.values())} jobs: {', '.join(counts)} | {sweep_dir}"


def unfinished(tally: Counter) -> int:
    """Jobs that failed or were left without a result (interrupted, still running, never started)."""
    return sum(n for word, n in tally.items() if word not in (Status.COMPLETED, Status.DIVERGED, SKIPPED))


class SweepSummary(Callback):
    """Ends every multirun with one line (completed / skipped / failed / diverged) and exits 1 when a job failed or
    is unfinished. Jobs run in this process (Hydra's basic launcher) are counted here; the launchers of this module
    count the jobs they submit."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _tally
        _tally = Counter()
        self.ran_here: dict[str, bool] = {}

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if _tally is not None:
            previous = read_summary(Path(config.hydra.runtime.output_dir)) or {}
            self.ran_here[config.hydra.runtime.output_dir] = previous.get("status") == Status.COMPLETED

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if _tally is None:
            return
        run_dir = config.hydra.runtime.output_dir
        value = job_return._return_value if job_return.status == JobStatus.COMPLETED else None
        record(SKIPPED if self.ran_here.pop(run_dir, False) else job_outcome(Path(run_dir), value))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global _tally
        tally, _tally = _tally or Counter(), None
        print(summary_line(tally, config.hydra.sweep.dir), flush=True)
        if unfinished(tally):
            sys.exit(1)


# ---- the launchers ----

def check_signal_margin(params: dict) -> None:
    """SLURM signals USR2 signal_delay_s before the time limit: a limit shorter than that plus a step and a
    checkpoint delivers it before the trainer's handler exists, and the job dies instead of being requeued."""
    timeout_min, delay = params.get("timeout_min"), params.get("signal_delay_s")
    if timeout_min is None or delay is None:
        return
    margin = timeout_min * 60 - delay
    if margin < MIN_SIGNAL_MARGIN_S:
        raise ConfigError(
            f"hydra.launcher.timeout_min={timeout_min} is too short for hydra.launcher.signal_delay_s={delay}: the "
            f"preemption signal would come {margin} s after the job starts; allowed: timeout_min·60 − signal_delay_s "
            f"≥ {MIN_SIGNAL_MARGIN_S} s (raise timeout_min or lower signal_delay_s)")


class Accounting:
    """What orthonoise adds to hydra-submitit-launcher's BaseSubmititLauncher (see the module docstring)."""

    def __init__(self, skip_diverged: bool = False, **params: Any) -> None:
        super().__init__(**params)
        self.skip_diverged = skip_diverged

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from orthonoise.validate import check_top_level_keys

        try:
            check_top_level_keys(self.config)
            self.check_params()
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(2)
        run_dirs = [self.run_dir(overrides) for overrides in job_overrides]
        submit = self.triage(run_dirs)
        returns: list[JobReturn | None] = [None] * len(job_overrides)
        for i in set(range(len(job_overrides))) - set(submit):
            returns[i] = JobReturn(overrides=list(job_overrides[i]), status=JobStatus.COMPLETED, _return_value=SKIPPED)
            record(SKIPPED)
        if submit:
            jobs = self.submit([(list(job_overrides[i]), initial_job_idx + i) for i in submit])
            for i, job in zip(submit, jobs):
                returns[i] = self.gather(job, run_dirs[i], list(job_overrides[i]))
        return returns

    def check_params(self) -> None:
        """Launcher settings that cannot work (the SLURM launcher checks its time limit)."""

    def run_dir(self, overrides: Sequence[str]) -> Path:
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        saved = HydraConfig.instance().cfg
        HydraConfig.instance().set_config(cfg)  # the sweep dir may use ${hydra:...}
        try:
            return Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
        finally:
            HydraConfig.instance().cfg = saved

    def triage(self, run_dirs: list[Path]) -> list[int]:
        """The indices of the jobs to submit; says how many are skipped and how many diverged ones re-run."""
        states = [(read_summary(d) or {}).get("status") for d in run_dirs]
        done = [i for i, s in enumerate(states) if s == Status.COMPLETED]
        diverged = [i for i, s in enumerate(states) if s == Status.DIVERGED]
        if done:
            log.info("skipped %d of %d jobs: their run directories say completed (not submitted)", len(done),
                     len(run_dirs))
        if diverged and self.skip_diverged:
            log.info("skipped %d diverged jobs (hydra.launcher.skip_diverged=true)", len(diverged))
        elif diverged:
            log.info("re-running %d diverged jobs (hydra.launcher.skip_diverged=true leaves them)", len(diverged))
        skip = set(done) | (set(diverged) if self.skip_diverged else set())
        return [i for i in range(len(run_dirs)) if i not in skip]

    def submit(self, jobs: list[tuple[list[str], int]]) -> list:
        """hydra-submitit-launcher's launch() up to the submission, with our job class for SLURM."""
        import submitit
        from hydra.core.singleton import Singleton

        init = {"folder": self.params["submitit_folder"]}
        if "max_num_timeout" in self.params:
            init[f"{self._EXECUTOR}_max_num_timeout"] = self.params["max_num_timeout"]
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"{self._EXECUTOR}_{k}": v for k, v in self.params.items()
                                      if k not in ("submitit_folder", "max_num_timeout")})
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        for overrides, idx in jobs:
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
        args = [(overrides, "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state())
                for overrides, idx in jobs]
        return self.watch(executor.map_array(self, *zip(*args)))

    def watch(self, jobs: list) -> list:
        """The submitted jobs, as the objects that will be asked for their states."""
        return jobs

    def gather(self, job, run_dir: Path, overrides: list[str]) -> JobReturn:
        """The job's own JobReturn; for a job that ended without one, `failed` in its run directory."""
        try:
            result = job.results()[0]
            result = self.after_result(job, run_dir, result)
        except Exception as err:  # noqa: BLE001 - submitit raises UncompletedJobError / FailedJobError, and others
            state = getattr(job, "state", "UNKNOWN")
            if job_outcome(run_dir) not in (Status.COMPLETED, Status.DIVERGED, Status.FAILED):
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                mark_status(run_dir, Status.FAILED, error=f"job {job.job_id} ended without a result (scheduler state "
                            f"{state}: killed, out of memory, node failure?): {first}")
            log.error("job %s (%s) ended without a result, state %s: recorded failed in %s", job.job_id,
                      " ".join(overrides), state, run_dir)
            result = JobReturn(overrides=overrides, status=JobStatus.COMPLETED, _return_value=Status.FAILED.value)
        value = result._return_value if result.status == JobStatus.COMPLETED else None
        record(job_outcome(run_dir, value))
        return result

    def after_result(self, job, run_dir: Path, result: JobReturn) -> JobReturn:
        return result


class SlurmAccounting(Accounting):
    """For SLURM: the time limit checked, job states without accounting, requeued jobs waited for."""

    def check_params(self) -> None:
        check_signal_margin(self.params)

    def watch(self, jobs: list) -> list:
        """submitit's SlurmJob reads states from sacct only; ours falls back to slurmctld (slurm_state)."""
        from orthonoise.sweep.slurm_state import WatchedSlurmJob

        return [WatchedSlurmJob(folder=job.paths.folder, job_id=job.job_id, tasks=list(range(job.num_tasks)))
                for job in jobs]

    def after_result(self, job, run_dir: Path, result: JobReturn) -> JobReturn:
        """A job that stopped `interrupted` and that SLURM requeued (`scontrol requeue`: SIGTERM, then a rerun)
        is waited for: its rerun resumes from the checkpoint and writes the result that counts."""
        if job_outcome(run_dir) != Status.INTERRUPTED:
            return result
        pickle = job.paths.result_pickle
        first, announced, unknown_since = pickle.stat().st_mtime, False, None
        while pickle.stat().st_mtime <= first:
            state = job.watcher.refresh(job.job_id)
            unknown_since = (unknown_since or time.time()) if state == "UNKNOWN" else None
            if state not in WAITING_STATES or unknown_since and time.time() - unknown_since > UNKNOWN_GRACE_S:
                if pickle.stat().st_mtime > first:
                    break
                return result  # stopped and not requeued (scancel, or no answer): interrupted, a relaunch resumes it
            if not announced and state not in ("RUNNING", "COMPLETING", "UNKNOWN"):
                log.info("job %s stopped at a checkpoint and SLURM requeued it (%s): waiting for its rerun",
                         job.job_id, state)
                announced = True
            time.sleep(POLL_S)
        return job.results()[0]
