"""The SLURM path against a real cluster: `bash .ci/slurm.sh start` (CI does it in .ci/run); skipped when none answers.

Each test launches `train.py -m` with the tiny preset on conf/hydra/launcher/slurm_cpu.yaml, as
`make phase31 PRESET=tiny CLUSTER=slurm` does, and acts on its jobs the way a cluster would: USR2 before a time limit,
`scontrol requeue`, SIGKILL (what the OOM killer sends).
"""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orthonoise.run.rundir import HYDRA_DIR, METRICS_FILE, Status, read_metrics, read_summary
from orthonoise.sweep.plan import ROOT
from tests.conftest import read_metrics as metric_lines
from tests.conftest import without_timing


def cluster_answers() -> bool:
    if not shutil.which("sinfo"):
        return False
    try:
        states = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=10).stdout.split()
    except (subprocess.SubprocessError, OSError):
        return False
    return any(state in ("idle", "mix", "alloc") for state in states)


pytestmark = [pytest.mark.slurm,
              pytest.mark.skipif(not cluster_answers(), reason="no SLURM cluster answers (bash .ci/slurm.sh start)")]

TINY = ["+preset=tiny", "model=tiny", "data=local", "hardware=cpu", "logger=disabled", "hydra/launcher=slurm_cpu",
        "hydra.sweeper.max_batch_size=null"]
QUICK = ["trainer.max_steps=4", "trainer.eval_every=2", "trainer.checkpoint_every=2", "hardware.batch_size=2"]
# long enough to be interrupted mid-run; checkpoints only when stopped, so a resume starts from the signal's step
LONG = ["trainer.max_steps=24", "trainer.eval_every=10", "trainer.log_every=1", "trainer.checkpoint_every=1000",
        "hardware.batch_size=2"]


def launch(sweep_dir: Path, *overrides: str) -> subprocess.Popen:
    cmd = [sys.executable, "train.py", "-m", "-cd", "sweeps", "-cn", "phase31", *TINY, f"hydra.sweep.dir={sweep_dir}",
           *overrides]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, timeout_s: float = 240) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout_s)
    return proc.returncode, out


def run_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(p.parent for p in sweep_dir.glob(f"*/{HYDRA_DIR}"))


def job_ids(sweep_dir: Path) -> list[str]:
    """The SLURM ids of the sweep's jobs (`<array>_<task>`, or `<job>`), from submitit's folders."""
    return sorted(p.parent.name for p in (sweep_dir / ".submitit").glob("*/*_submitted.pkl"))


def wait_for(what, proc: subprocess.Popen, timeout_s: float = 180):
    """Poll `what()` until it returns something true, while the sweep still runs."""
    deadline = time.time() + timeout_s
    while not (value := what()):
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise AssertionError(f"gave up waiting; sweep output:\n{proc.communicate()[0][-4000:]}")
        time.sleep(0.5)
    return value


def logged_step(run_dir: Path) -> int:
    rows = read_metrics(run_dir)
    return rows[-1]["step"] if rows else -1


def running_job(sweep_dir: Path, proc: subprocess.Popen, at_step: int) -> tuple[str, Path]:
    """(SLURM job id, run dir) of the sweep's single job once it has logged `at_step`."""
    run_dir = wait_for(lambda: next(iter(run_dirs(sweep_dir)), None), proc)
    wait_for(lambda: logged_step(run_dir) >= at_step, proc)
    (job,) = job_ids(sweep_dir)
    return job, run_dir


def train_log(run_dir: Path) -> str:
    return (run_dir / "train.log").read_text()


def squeue_count() -> int:
    return len(subprocess.run(["squeue", "-h", "-t", "all"], capture_output=True, text=True).stdout.splitlines())


@pytest.mark.timeout(300)
def test_a_sweep_is_one_job_array_and_a_relaunch_submits_nothing(tmp_path):
    rc, out = finish(launch(tmp_path, "arm=baseline,orthonoise", "seed=1", *QUICK))
    assert rc == 0, out[-4000:]
    assert "sweep: 2 jobs: 2 completed, 0 skipped, 0 failed, 0 diverged" in out
    ids = job_ids(tmp_path)
    assert len(ids) == 2 and len({i.split("_")[0] for i in ids}) == 1  # one array, two tasks
    dirs = run_dirs(tmp_path)
    assert sorted(",".join(kv for kv in d.name.split(",") if kv.split("=")[0] in ("arm", "seed")) for d in dirs) == [
        "arm=baseline,seed=1", "arm=orthonoise,seed=1"]
    for d in dirs:  # the run directory as README documents it
        assert read_summary(d)["status"] == Status.COMPLETED and read_summary(d)["steps"] == 4
        assert (d / METRICS_FILE).is_file() and (d / HYDRA_DIR / "config.yaml").is_file()
        assert list((d / "checkpoints").iterdir())
    records = {d: (d / HYDRA_DIR / "config.yaml").stat().st_mtime_ns for d in dirs}
    jobs_before = squeue_count()

    rc, out = finish(launch(tmp_path, "arm=baseline,orthonoise", "seed=1", *QUICK))
    assert rc == 0, out[-4000:]
    assert "skipped 2 of 2 jobs" in out and "sweep: 2 jobs: 0 completed, 2 skipped" in out
    assert squeue_count() == jobs_before and job_ids(tmp_path) == ids  # no allocation spent
    assert {d: (d / HYDRA_DIR / "config.yaml").stat().st_mtime_ns for d in dirs} == records


@pytest.mark.timeout(300)
def test_usr2_preemption_requeues_and_resumes_to_the_uninterrupted_metrics(tmp_path):
    reference = launch(tmp_path / "reference", "arm=orthonoise", "seed=1", *LONG)
    preempted = launch(tmp_path / "preempted", "arm=orthonoise", "seed=1", *LONG)
    job, run_dir = running_job(tmp_path / "preempted", preempted, at_step=4)
    subprocess.run(["scancel", "--signal=USR2", job], check=True)  # what SLURM sends signal_delay_s before the limit
    rc, out = finish(preempted)
    assert rc == 0, out[-4000:]
    assert "Requeued job" in train_log(run_dir) and "resumed from" in train_log(run_dir)
    assert read_summary(run_dir)["status"] == Status.COMPLETED
    assert finish(reference)[0] == 0
    (reference_dir,) = run_dirs(tmp_path / "reference")
    assert without_timing(metric_lines(run_dir)) == without_timing(metric_lines(reference_dir))  # every line
    assert read_summary(run_dir)["final_val_loss"] == read_summary(reference_dir)["final_val_loss"]


@pytest.mark.timeout(300)
def test_a_two_task_gloo_ddp_job_is_preempted_and_resumes(tmp_path):
    ddp = ["hardware.world_size=2", "hydra.launcher.tasks_per_node=2"]
    proc = launch(tmp_path, "arm=baseline", "seed=1", *LONG, *ddp)
    job, run_dir = running_job(tmp_path, proc, at_step=4)
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    rc, out = finish(proc)
    assert rc == 0, out[-4000:]
    summary = read_summary(run_dir)
    assert summary["status"] == Status.COMPLETED and summary["world_size"] == 2 and summary["steps"] == 24
    assert "Requeued job" in train_log(run_dir) and "resumed from" in train_log(run_dir)
    steps = [row["step"] for row in metric_lines(run_dir)]
    assert steps == sorted(set(steps)) and steps[-1] == 24  # nothing logged twice across the requeue


def kill_hard(job: str) -> None:
    """SIGKILL the job's Python process, as the OOM killer would: found by SLURM_JOB_ID in its environment."""
    raw_id = subprocess.run(["squeue", "-h", "-j", job, "-o", "%A"], capture_output=True, text=True).stdout.strip()
    assert raw_id, f"job {job} is not known to slurmctld"
    killed = 0
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            environ, cmdline = (proc / "environ").read_bytes(), (proc / "cmdline").read_bytes()
        except OSError:
            continue  # gone, or not ours to read
        if f"SLURM_JOB_ID={raw_id}\0".encode() in environ and b"submitit.core._submit" in cmdline:
            os.kill(int(proc.name), signal.SIGKILL)
            killed += 1
    assert killed, f"no process of job {job} found"


@pytest.mark.timeout(300)
def test_a_job_killed_hard_is_recorded_failed_and_the_others_complete(tmp_path):
    proc = launch(tmp_path, "arm=baseline", "seed=1,2", *LONG)
    dirs = wait_for(lambda: len(run_dirs(tmp_path)) == 2 and run_dirs(tmp_path), proc)
    victim = dirs[0]
    wait_for(lambda: logged_step(victim) >= 3, proc)
    kill_hard(next(i for i in job_ids(tmp_path) if i.endswith("_0")))
    rc, out = finish(proc)
    assert rc == 1, out[-4000:]
    assert "sweep: 2 jobs: 1 completed, 0 skipped, 1 failed, 0 diverged" in out
    failed = read_summary(victim)
    assert failed["status"] == Status.FAILED and "ended without a result" in failed["error"]
    assert read_summary(dirs[1])["status"] == Status.COMPLETED


@pytest.mark.timeout(300)
def test_scontrol_requeue_is_waited_for(tmp_path):
    proc = launch(tmp_path, "arm=baseline", "seed=1", *LONG)
    job, run_dir = running_job(tmp_path, proc, at_step=4)
    subprocess.run(["scontrol", "requeue", job], check=True)  # SIGTERM, then SLURM runs the job again
    rc, out = finish(proc)
    assert rc == 0, out[-4000:]
    assert "waiting for its rerun" in out
    assert "resumed from" in train_log(run_dir)
    assert read_summary(run_dir)["status"] == Status.COMPLETED
    assert "sweep: 1 jobs: 1 completed" in out


def resumes(run_dir: Path) -> int:
    return train_log(run_dir).count("resumed from") if (run_dir / "train.log").exists() else 0


@pytest.mark.timeout(420)
def test_a_job_requeued_twice_resumes_twice_and_completes(tmp_path):
    proc = launch(tmp_path, "arm=baseline", "seed=1", *LONG)
    job, run_dir = running_job(tmp_path, proc, at_step=4)
    subprocess.run(["scontrol", "requeue", job], check=True)
    wait_for(lambda: resumes(run_dir) == 1, proc, timeout_s=240)
    resumed_at = logged_step(run_dir)
    wait_for(lambda: logged_step(run_dir) >= resumed_at + 3, proc)
    subprocess.run(["scontrol", "requeue", job], check=True)
    rc, out = finish(proc, timeout_s=360)
    assert rc == 0, out[-4000:]
    assert resumes(run_dir) == 2 and out.count("waiting for its rerun") == 2
    summary = read_summary(run_dir)
    assert summary["status"] == Status.COMPLETED and summary["steps"] == 24
    steps = [row["step"] for row in metric_lines(run_dir)]
    assert steps == sorted(set(steps)) and steps[-1] == 24
    assert "sweep: 1 jobs: 1 completed, 0 skipped, 0 failed, 0 diverged | " in out


@pytest.mark.timeout(300)
def test_a_job_scancelled_at_a_checkpoint_is_interrupted_and_named_cancelled(tmp_path):
    proc = launch(tmp_path, "arm=baseline", "seed=1", *LONG)
    job, run_dir = running_job(tmp_path, proc, at_step=3)
    subprocess.run(["scancel", job], check=True)  # SIGTERM: the trainer checkpoints and returns interrupted
    rc, out = finish(proc)
    assert rc == 1, out[-4000:]
    assert "0 diverged, 1 interrupted; SLURM ended 1 CANCELLED | " in out
    summary = read_summary(run_dir)
    assert summary["status"] == Status.INTERRUPTED and summary["slurm_state"] == "CANCELLED"
    assert "resumes it from its checkpoint" in summary["error"] and list((run_dir / "checkpoints").iterdir())


def node() -> str:
    return subprocess.run(["sinfo", "-h", "-o", "%n"], capture_output=True, text=True).stdout.split()[0]


@pytest.mark.timeout(300)
def test_a_job_waiting_on_a_drained_node_is_said_to_wait_and_why(tmp_path):
    subprocess.run(["scontrol", "update", f"nodename={node()}", "state=drain", "reason=orthonoise test"], check=True)
    try:
        proc = launch(tmp_path, "arm=baseline", "seed=1", *QUICK)
        seen = []
        while not any("jobs still queued" in line for line in seen):  # within REASON_EVERY_S of the submission
            line = proc.stdout.readline()
            assert line, "".join(seen)[-4000:]
            seen.append(line)
        reason = subprocess.run(["squeue", "-h", "-j", job_ids(tmp_path)[0], "-o", "%r"], capture_output=True,
                                text=True).stdout.strip()
    finally:
        subprocess.run(["scontrol", "update", f"nodename={node()}", "state=resume"], check=True)
    queued = next(line for line in seen if "jobs still queued" in line)
    assert f"1 jobs still queued: 1 waiting for {reason} ({job_ids(tmp_path)[0]})" in queued, queued
    rc, out = finish(proc)
    assert rc == 0 and "sweep: 1 jobs: 1 completed" in out, out[-4000:]
