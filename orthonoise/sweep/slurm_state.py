"""SLURM job states for submitit, from accounting (`sacct`) or, on a cluster without it, from slurmctld.

submitit learns that a job ended without a result (SIGKILL, out of memory, node failure) only from `sacct`. A
cluster without an accounting database answers `sacct` with "accounting storage is disabled", and submitit then
waits forever. `squeue -t all` asks slurmctld itself, which knows every job until MinJobAge seconds after it ended
(.ci/slurm.sh keeps them an hour), in the same `JobID|State` form, array ranges included.
"""
from __future__ import annotations

import subprocess

from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob

REFRESH_S = 30  # the longest wait between two state queries (submitit's default is 600 s)


class SchedulerWatcher(SlurmInfoWatcher):
    def __init__(self, delay_s: int = REFRESH_S) -> None:
        super().__init__(delay_s=delay_s)
        self.accounting = True  # until sacct says otherwise

    def _make_command(self) -> list[str] | None:
        command = super()._make_command()
        if command is None:
            return None
        if self.accounting:
            probe = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
            if probe.returncode == 0:
                return command
            self.accounting = False
        ids = ",".join(command[i + 1] for i, arg in enumerate(command) if arg == "-j")
        return ["squeue", "--noheader", "--states=all", f"--jobs={ids}", "--format=%i|%T"]

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
