"""orthonoise.sweep.launcher without a cluster: the summary line and exit code, skipping before submission
(local submitit launcher), jobs running elsewhere, the settings refused before anything is submitted, the pinned
hydra-submitit-launcher surface, and the SLURM pieces that need no cluster (fake jobs, fake squeue). tests/slurm/
runs the same path on SLURM."""
import importlib.metadata
import inspect
import logging
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from submitit.core.job_environment import SignalHandler

from orthonoise.run.metrics import mark_status
from orthonoise.run.rundir import HYDRA_DIR, RUNNING_ELSEWHERE, SKIPPED, Status, read_summary
from orthonoise.sweep import slurm_state, submitit_adapter
from orthonoise.sweep.launcher import (
    EARLY_SIGNAL_S,
    MIN_START_S,
    SlurmAccounting,
    SweepSummary,
    SweepTally,
    check_signal_margin,
)
from orthonoise.sweep.plan import ROOT

TINY = ["+preset=tiny", "model=tiny", "data=local", "hardware=cpu", "logger=disabled"]
QUICK = ["trainer.max_steps=2", "trainer.eval_every=2", "trainer.checkpoint_every=2", "hardware.batch_size=2",
         "hardware.num_threads=1"]


def sweep(sweep_dir: Path, *overrides: str, timeout_s: float = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "train.py", "-m", "-cd", "sweeps", "-cn", "phase31", *TINY, f"hydra.sweep.dir={sweep_dir}",
           *overrides]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if "error:" in line]


def submitted(sweep_dir: Path) -> int:
    return len(list((sweep_dir / ".submitit").glob("*/*_submitted.pkl")))


def test_the_summary_line_counts_every_outcome_and_unfinished_jobs_fail_the_sweep():
    tally = SweepTally()
    for outcome in [Status.COMPLETED.value] * 3 + [SKIPPED] * 2 + [Status.DIVERGED.value]:
        tally.record(outcome)
    assert tally.line("out/s") == "sweep: 6 jobs: 3 completed, 2 skipped, 0 failed, 1 diverged | out/s"
    assert tally.unfinished() == 0
    tally.record(Status.FAILED.value, "NODE_FAIL")
    tally.record(Status.INTERRUPTED.value, "TIMEOUT")
    tally.record(RUNNING_ELSEWHERE)
    assert tally.line("out/s").endswith("1 failed, 1 diverged, 1 interrupted, 1 running elsewhere; SLURM ended "
                                        "1 NODE_FAIL, 1 TIMEOUT | out/s")
    assert tally.unfinished() == 3


@pytest.mark.timeout(600)
def test_relaunch_skips_completed_jobs_before_submission_and_counts_diverged_reruns(tmp_path):
    """One job completes, one diverges (its loss limit is below any loss); the relaunch submits only the diverged
    one, says so, and leaves the completed run's record untouched; skip_diverged submits nothing."""
    grid = ["hydra/launcher=local_parallel", "hydra.sweeper.max_batch_size=2", "arm=baseline", "seed=1",
            "trainer.diverge_loss=1000,1e-3", *QUICK]
    result = sweep(tmp_path, *grid)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sweep: 2 jobs: 1 completed, 0 skipped, 0 failed, 1 diverged" in result.stdout
    done = next(d.parent for d in tmp_path.glob(f"*/{HYDRA_DIR}") if read_summary(d.parent)["status"] == "completed")
    record = (done / HYDRA_DIR / "config.yaml").stat().st_mtime_ns

    result = sweep(tmp_path, *grid)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "skipped 1 of 2 jobs" in result.stdout and "re-running 1 diverged jobs" in result.stdout
    assert "sweep: 2 jobs: 0 completed, 1 skipped, 0 failed, 1 diverged" in result.stdout
    assert submitted(tmp_path) == 3  # 2, then only the diverged one
    assert (done / HYDRA_DIR / "config.yaml").stat().st_mtime_ns == record

    result = sweep(tmp_path, *grid, "hydra.launcher.skip_diverged=true")
    assert "sweep: 2 jobs: 0 completed, 2 skipped" in result.stdout and submitted(tmp_path) == 3


def test_a_time_limit_shorter_than_the_signal_margin_is_refused_before_submission(tmp_path):
    result = sweep(tmp_path, "hydra/launcher=slurm_cpu", "hydra.launcher.timeout_min=1", "arm=baseline", "seed=1")
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert "hydra.launcher.timeout_min=1" in line and "signal_delay_s=60" in line
    assert submitted(tmp_path) == 0


def test_an_unknown_top_level_key_is_an_error_line(tmp_path):
    """`+preset=tiny` without `-cd sweeps` adds a key nothing reads: the run would be another than asked for."""
    result = subprocess.run([sys.executable, "train.py", "+preset=tiny", f"hydra.run.dir={tmp_path}"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    (line,) = error_lines(result)
    assert "preset='tiny' is not a setting" in line and "-cd sweeps" in line
    assert not (tmp_path / "metrics.jsonl").exists()
    launched = subprocess.run([sys.executable, "train.py", "-m", "+preset=tiny", "hydra/launcher=local_parallel",
                               f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=ROOT, capture_output=True, text=True,
                              timeout=300)
    assert launched.returncode == 2 and len(error_lines(launched)) == 1
    assert submitted(tmp_path / "sweep") == 0


# ---- jobs that cannot run here: running elsewhere, one directory for several jobs ----

from tests import test_run_lifecycle  # noqa: E402

holder = test_run_lifecycle.holder  # another live process holding a run directory's lock


@pytest.mark.timeout(600)
def test_a_job_whose_directory_a_live_process_holds_is_not_submitted_and_fails_the_sweep(tmp_path, holder):
    proc = holder(tmp_path / "job2")
    result = sweep(tmp_path, "hydra/launcher=local_parallel", "hydra.sweeper.max_batch_size=2", "arm=baseline",
                   "seed=1,2", "hydra.sweep.subdir=job${seed}", *QUICK)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "sweep: 2 jobs: 1 completed, 0 skipped, 0 failed, 0 diverged, 1 running elsewhere" in result.stdout
    assert "not submitted: 1 of 2 jobs, running elsewhere" in output and submitted(tmp_path) == 1
    assert proc.poll() is None and read_summary(tmp_path / "job2") is None  # the holder's directory untouched
    assert read_summary(tmp_path / "job1")["status"] == Status.COMPLETED


def test_jobs_that_map_to_one_directory_are_refused_before_launch(tmp_path):
    result = sweep(tmp_path, "hydra/launcher=local_parallel", "arm=baseline", "seed=1,2", "hydra.sweep.subdir=same")
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert "hydra.sweep.subdir maps several jobs" in line and str(tmp_path / "same") in line and "seed=2" in line
    assert submitted(tmp_path) == 0 and not (tmp_path / "same").exists()


def test_the_basic_launcher_stops_at_a_second_job_in_the_same_directory_and_jobs_count_nothing(tmp_path, capsys):
    """Hydra's basic launcher runs jobs one by one in the launching process: the callback sees each start."""
    summary = SweepSummary()
    summary.on_multirun_start(config=None)
    job = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(tmp_path / "same")}}})
    summary.on_job_start(job)
    summary.on_job_end(job, returned(Status.COMPLETED.value))
    with pytest.raises(SystemExit) as stopped:
        summary.on_job_start(job)
    assert stopped.value.code == 2
    assert f"error: hydra.sweep.subdir maps several jobs of this sweep to one run directory ({tmp_path / 'same'})" \
        in capsys.readouterr().err
    # pickled into a submitit job with the launcher: that process keeps no tally of its own
    assert pickle.loads(pickle.dumps(summary)).tally is None and summary.tally is not None


# ---- hydra-submitit-launcher: the pinned version and the names the adapter relies on ----

def test_the_pinned_hydra_submitit_launcher_has_every_name_the_adapter_uses(tmp_path):
    installed = importlib.metadata.version(submitit_adapter.DISTRIBUTION)
    assert installed == submitit_adapter.PINNED_VERSION, (
        f"hydra-submitit-launcher {installed} is installed; orthonoise/sweep/submitit_adapter.py was written against "
        f"{submitit_adapter.PINNED_VERSION}: check every name it uses, then update PINNED_VERSION")
    base = submitit_adapter.submitit_launcher.BaseSubmititLauncher
    launcher = submitit_adapter.LocalLauncherBase(submitit_folder=str(tmp_path))
    assert [n for n in submitit_adapter.CLASS_NAMES if not hasattr(base, n)] == []
    assert [n for n in submitit_adapter.INSTANCE_NAMES if not hasattr(launcher, n)] == []
    assert tuple(inspect.signature(base.__call__).parameters)[1:] == submitit_adapter.CALL_PARAMETERS
    assert (launcher.cluster, launcher.launch_params) == ("local", {"submitit_folder": str(tmp_path)})
    # submitit's words for a job that reached its time limit too often (the launcher names it TIMEOUT)
    assert slurm_state.SUBMITIT_GAVE_UP in inspect.getsource(SignalHandler.checkpoint_and_try_requeue)


def test_only_the_adapter_imports_hydra_submitit_launcher():
    users = [p.relative_to(ROOT).as_posix() for folder in ("orthonoise", "hydra_plugins/orthonoise_launcher")
             for p in (ROOT / folder).rglob("*.py") if "hydra_submitit_launcher" in p.read_text()]
    assert users == ["orthonoise/sweep/submitit_adapter.py"]


# ---- SLURM without a cluster: the signal margin, queued jobs' reasons, a silent scheduler, end states ----

@pytest.mark.parametrize("delay", [0, 10])
def test_a_signal_delay_without_room_for_a_step_and_a_checkpoint_is_refused(delay):
    with pytest.raises(Exception, match=f"signal_delay_s={delay} is too short.*allowed: signal_delay_s ≥ 32"):
        check_signal_margin({"timeout_min": 60, "signal_delay_s": delay}, step_s=1.1)


def test_a_slow_step_needs_a_longer_signal_delay():
    check_signal_margin({"timeout_min": 60, "signal_delay_s": 40}, step_s=8.0)
    with pytest.raises(Exception, match=r"a step \(20 s, .*allowed: signal_delay_s ≥ 50"):
        check_signal_margin({"timeout_min": 60, "signal_delay_s": 40}, step_s=20.0)


def test_a_signal_that_may_come_early_must_still_come_after_start_up():
    latest = 120 - EARLY_SIGNAL_S - MIN_START_S  # a 2-minute limit: the signal arrives up to EARLY_SIGNAL_S early
    check_signal_margin({"timeout_min": 2, "signal_delay_s": latest}, step_s=None)
    with pytest.raises(Exception, match=f"timeout_min=2 is too short.*arrives up to {EARLY_SIGNAL_S} s early"):
        check_signal_margin({"timeout_min": 2, "signal_delay_s": latest + 1}, step_s=None)


def test_queued_jobs_reasons_are_said_once_a_minute():
    now, asked = [0.0], []
    reasons = {"7_0": "ReqNodeNotAvail, UnavailableNodes:node1", "7_1": "Priority"}
    reporter = slurm_state.PendingReporter(query=lambda ids: asked.append(ids) or reasons, clock=lambda: now[0])
    said = []
    for t in range(0, 181, 2):
        now[0] = t
        said += [line for line in [reporter.report(["7_0", "7_1"])] if line]
    assert len(said) == 3 and len(asked) == 3  # at 60, 120 and 180 s; squeue asked only then
    assert "2 jobs still queued: 1 waiting for ReqNodeNotAvail, UnavailableNodes:node1 (7_0); 1 waiting for " \
           "Priority (7_1)" in said[0] and "sinfo -R" in said[0]


def fake_slurm(bin_dir: Path, monkeypatch, **scripts: str) -> None:
    """Commands named like SLURM's on PATH, each a shell script."""
    bin_dir.mkdir(exist_ok=True)
    for name, body in scripts.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + textwrap.dedent(body))
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_a_scheduler_that_does_not_answer_is_warned_about_once_naming_the_command(tmp_path, monkeypatch, caplog):
    down = 'echo "slurm_load_jobs error: Unable to contact slurm controller (connect failure)" >&2; exit 1\n'
    fake_slurm(tmp_path / "bin", monkeypatch, sacct='echo "Slurm accounting storage is disabled" >&2; exit 1\n',
               squeue=down)
    watcher = slurm_state.SchedulerWatcher()
    watcher.register_job("7_0")
    with caplog.at_level(logging.INFO, logger=slurm_state.__name__):
        for _ in range(3):
            watcher.update()
        fake_slurm(tmp_path / "bin", monkeypatch, squeue='echo "7_0|RUNNING"\n')
        watcher.update()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("`squeue --noheader` does not answer (slurm_load_jobs "
                                                         "error: Unable to contact slurm controller")
    assert "sacct" not in warnings[0] and "answers again" in caplog.text
    assert watcher.get_state("7_0", mode="cache") == "RUNNING"


def test_pending_reasons_come_from_squeue(tmp_path, monkeypatch):
    fake_slurm(tmp_path / "bin", monkeypatch, squeue='echo "$@" > "$(dirname "$0")/args"; '
                                                     'echo "7_0|ReqNodeNotAvail, UnavailableNodes:node1"\n')
    assert slurm_state.pending_reasons(["7_0", "7_1"]) == {"7_0": "ReqNodeNotAvail, UnavailableNodes:node1"}
    args = (tmp_path / "bin" / "args").read_text()
    assert "--states=PENDING" in args and "--jobs=7_0,7_1" in args and "%r" in args


class FakeSlurmJob:
    """What the launcher asks of a finished SLURM job: its result (or the error reading it) and its state."""

    def __init__(self, tmp_path: Path, state: str, result=None, error: Exception | None = None):
        self.job_id, self.state, self.result, self.error = "7_0", state, result, error
        self.paths = type("Paths", (), {"result_pickle": tmp_path / "7_0_result.pkl"})()
        self.paths.result_pickle.write_bytes(b"")
        self.watcher = type("Watcher", (), {"refresh": lambda _, job_id: state})()

    def results(self):
        if self.error:
            raise self.error
        return [self.result]


class Launcher(SlurmAccounting):
    launch_params = {"max_num_timeout": 3}

    def __init__(self):
        self.skip_diverged = False


def gathered(tmp_path: Path, job: FakeSlurmJob) -> tuple[dict, str]:
    tally = SweepTally()
    Launcher().gather(job, tmp_path / "run", ["seed=1"], tally)
    return read_summary(tmp_path / "run"), tally.line("out")


def returned(value: str) -> JobReturn:
    return JobReturn(overrides=["seed=1"], status=JobStatus.COMPLETED, _return_value=value)


def test_a_job_scancelled_at_a_checkpoint_is_interrupted_and_named_cancelled(tmp_path):
    mark_status(tmp_path / "run", Status.INTERRUPTED, steps=5)
    summary, line = gathered(tmp_path, FakeSlurmJob(tmp_path, "CANCELLED", returned(Status.INTERRUPTED.value)))
    assert summary["status"] == Status.INTERRUPTED and summary["slurm_state"] == "CANCELLED"
    assert "cancelled" in summary["error"] and "resumes it from its checkpoint" in summary["error"]
    assert "1 interrupted; SLURM ended 1 CANCELLED | out" in line


def test_an_interrupted_job_whose_process_ended_by_itself_keeps_its_record(tmp_path):
    mark_status(tmp_path / "run", Status.INTERRUPTED, steps=5, error="its own words")
    summary, line = gathered(tmp_path, FakeSlurmJob(tmp_path, "COMPLETED", returned(Status.FAILED.value)))
    assert summary["error"] == "its own words" and "slurm_state" not in summary
    assert line == "sweep: 1 jobs: 0 completed, 0 skipped, 0 failed, 0 diverged, 1 interrupted | out"


def test_after_max_num_timeout_the_run_is_interrupted_by_timeout_not_failed(tmp_path):
    """submitit's handler raises when the limit was reached too often; train.py records that as a crash."""
    mark_status(tmp_path / "run", Status.FAILED, steps=5, error="UncompletedJobError: Job not requeued because: "
                                                                 "timed-out too many times.")
    summary, line = gathered(tmp_path, FakeSlurmJob(tmp_path, "COMPLETED", returned(Status.FAILED.value)))
    assert summary["status"] == Status.INTERRUPTED and summary["slurm_state"] == "TIMEOUT"
    assert "more than hydra.launcher.max_num_timeout=3 times" in summary["error"]
    assert "0 failed, 0 diverged, 1 interrupted; SLURM ended 1 TIMEOUT | out" in line


def test_a_job_that_ended_without_a_result_is_failed_with_slurms_state(tmp_path):
    mark_status(tmp_path / "run", Status.RUNNING, steps=5)
    summary, line = gathered(tmp_path, FakeSlurmJob(tmp_path, "NODE_FAIL", error=RuntimeError("no result")))
    assert summary["status"] == Status.FAILED and summary["slurm_state"] == "NODE_FAIL"
    assert "scheduler state NODE_FAIL" in summary["error"]
    assert "1 failed, 0 diverged; SLURM ended 1 NODE_FAIL | out" in line
