"""SLURM job states for submitit, from accounting (`sacct`) or, on a cluster without it, from slurmctld; why queued
jobs wait; the words for how SLURM ended a job.

submitit learns that a job ended without a result (SIGKILL, out of memory, node failure) only from `sacct`. A
cluster without an accounting database answers `sacct` with "accounting storage is disabled", and submitit then
waits forever. `squeue -t all` asks slurmctld itself, which knows every job until MinJobAge seconds after it ended
(.ci/slurm.sh keeps them an hour), in the same `JobID|State` form, array ranges included.
"""
from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable

from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob

log = logging.getLogger(__name__)

REFRESH_S = 30        # the longest wait between two state queries (submitit's default is 600 s)
REASON_EVERY_S = 60   # how often the launcher says why queued jobs still wait
QUERY_TIMEOUT_S = 60
# what submitit's USR2 handler says when a job reached its time limit more than max_num_timeout times
# (submitit.core.job_environment.SignalHandler.checkpoint_and_try_requeue; tests/test_launcher.py checks the wording)
SUBMITIT_GAVE_UP = "timed-out too many times"
END_STATE_TEXT = {
    "TIMEOUT": "SLURM stopped the job at its time limit (TIMEOUT)",
    "CANCELLED": "the job was cancelled (CANCELLED: scancel, or an administrator)",
    "NODE_FAIL": "the job's node failed (NODE_FAIL)",
    "PREEMPTED": "SLURM preempted the job and did not requeue it (PREEMPTED)",
    "OUT_OF_MEMORY": "the job ran out of memory (OUT_OF_MEMORY)",
}


def gave_up_after_timeouts(text: str) -> bool:
    return SUBMITIT_GAVE_UP in text


def end_state_text(state: str, max_num_timeout: int | None = None) -> str:
    if state == "TIMEOUT" and max_num_timeout is not None:
        return (f"SLURM stopped the job at its time limit (TIMEOUT) more than hydra.launcher.max_num_timeout="
                f"{max_num_timeout} times, so it was not requeued again")
    return END_STATE_TEXT.get(state, f"SLURM ended the job ({state})")


class SchedulerWatcher(SlurmInfoWatcher):
    def __init__(self, delay_s: int = REFRESH_S) -> None:
        super().__init__(delay_s=delay_s)
        self.accounting = True  # until sacct says otherwise
        self.failing = False    # the last query had no answer (said once, until it answers again)

    def _make_command(self) -> list[str] | None:
        command = super()._make_command()
        if command is None:
            return None
        if self.accounting:
            try:
                probe = subprocess.run(command, capture_output=True, text=True, timeout=QUERY_TIMEOUT_S, check=False)
            except subprocess.TimeoutExpired:
                return command
            if probe.returncode == 0:
                return command
            self.accounting = False
        ids = ",".join(command[i + 1] for i, arg in enumerate(command) if arg == "-j")
        return ["squeue", "--noheader", "--states=all", f"--jobs={ids}", "--format=%i|%T"]

    def update(self) -> None:
        """submitit's update, with a warning that names the command that did not answer, once per outage."""
        command = self._make_command()
        if command is None:
            return
        self._num_calls += 1
        try:
            self._output = subprocess.run(command, capture_output=True, timeout=QUERY_TIMEOUT_S, check=True).stdout
        except (subprocess.SubprocessError, OSError) as err:
            if not self.failing:
                why = (getattr(err, "stderr", None) or b"").decode(errors="replace").strip().splitlines()
                log.warning("`%s` does not answer (%s): job states are unknown until it does; asking again every "
                            "%d s", " ".join(command[:2]), why[0] if why else type(err).__name__, self._delay_s)
            self.failing = True
        else:
            if self.failing:
                log.info("`%s` answers again", command[0])
            self.failing = False
            self._info_dict.update(self.read_info(self._output))
        self._last_status_check = time.time()
        for job_id in self._registered - self._finished:
            if self.is_done(job_id, mode="cache"):
                self._finished.add(job_id)

    def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
        text = string.decode() if isinstance(string, bytes) else string
        if not self.accounting:
            text = "JobID|State\n" + text
        return super().read_info(text)

    def refresh(self, job_id: str) -> str:
        """The job's state now, even when an earlier query had seen it end (a requeued job starts again)."""
        self._finished.discard(job_id)
        self.update()
        return self.get_state(job_id, mode="cache")


class WatchedSlurmJob(SlurmJob):
    watcher = SchedulerWatcher()


def pending_reasons(job_ids: list[str]) -> dict[str, str]:
    """{job id: SLURM's reason} for the jobs still queued (squeue's %r: Resources, Priority, ReqNodeNotAvail for a
    drained or down node, QOSMaxJobsPerUserLimit, ...); empty when squeue does not answer."""
    command = ["squeue", "--noheader", "--array", "--states=PENDING", f"--jobs={','.join(job_ids)}",
               "--format=%i|%r"]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=QUERY_TIMEOUT_S, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return {}
    return dict(line.split("|", 1) for line in out.splitlines() if "|" in line)


def pending_line(reasons: dict[str, str]) -> str:
    by_reason: dict[str, list[str]] = {}
    for job_id, reason in sorted(reasons.items()):
        by_reason.setdefault(reason, []).append(job_id)
    parts = [f"{len(ids)} waiting for {reason} ({', '.join(ids[:4])}{', ...' if len(ids) > 4 else ''})"
             for reason, ids in by_reason.items()]
    return f"{len(reasons)} jobs still queued: {'; '.join(parts)} (sinfo -R lists drained nodes and why)"


class PendingReporter:
    """Says why queued jobs wait, at most once every REASON_EVERY_S seconds (the first time after that long)."""

    def __init__(self, query: Callable[[list[str]], dict[str, str]] = pending_reasons,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.query, self.clock = query, clock
        self.last = clock()

    def report(self, job_ids: list[str]) -> str | None:
        if self.clock() - self.last < REASON_EVERY_S:
            return None
        self.last = self.clock()
        reasons = self.query(job_ids)
        return pending_line(reasons) if reasons else None
