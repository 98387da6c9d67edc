"""A sweep rehearsed end to end through `train.py -m` in a subprocess: relaunch skips completed jobs, a failing
job stops no other and is retried, and a preempted job is requeued by submitit and resumes."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orthonoise.sweep import rehearsal
from orthonoise.sweep.plan import ROOT

TINY = list(rehearsal.TINY)  # the tiny preset's overrides, as `make ... PRESET=tiny` passes them
QUICK = ["trainer.max_steps=2", "trainer.eval_every=2", "trainer.checkpoint_every=2", "hardware.batch_size=2",
         "seed=1,2"]  # the sweep file's seeds 1,2,3, cut to two: four jobs show everything tested here


def sweep(sweep_dir: Path, *overrides: str, sweep_name: str = "phase32_adaptive") -> subprocess.CompletedProcess:
    cmd = [sys.executable, "train.py", "-m", "-cd", "sweeps", "-cn", sweep_name, *TINY, *QUICK,
           f"hydra.sweep.dir={sweep_dir}", *overrides]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def states(sweep_dir: Path) -> dict[str, str]:
    """Status by run dir, named by its sweep overrides only (the QUICK ones are in every name)."""
    return {",".join(kv for kv in p.parent.name.split(",") if kv.split("=")[0] in ("optimizer.rank_threshold", "seed")):
            json.loads(p.read_text())["status"] for p in sweep_dir.glob("*/summary.json")}


def run_dir(sweep_dir: Path, name: str) -> Path:
    return next(p.parent for p in sweep_dir.glob("*/summary.json") if name in p.parent.name)


def test_rehearsal_relaunch_and_failure_isolation(tmp_path):
    # rank_threshold=7 is rejected by the optimizer: that job fails, the other three must still complete
    thresholds = "optimizer.rank_threshold=0.3,7"
    result = sweep(tmp_path, thresholds)
    assert result.returncode == 1, result.stderr[-3000:]  # the sweep says that jobs failed
    assert "sweep: 4 jobs: 2 completed, 0 skipped, 2 failed, 0 diverged" in result.stdout
    assert states(tmp_path) == {"optimizer.rank_threshold=0.3,seed=1": "completed",
                                "optimizer.rank_threshold=0.3,seed=2": "completed",
                                "optimizer.rank_threshold=7,seed=1": "failed",
                                "optimizer.rank_threshold=7,seed=2": "failed"}
    done = run_dir(tmp_path, "optimizer.rank_threshold=0.3,seed=1")
    metrics_before = (done / "metrics.jsonl").read_text()
    result = sweep(tmp_path, thresholds)  # relaunch: completed jobs skipped, failed ones retried
    assert "already completed" in result.stdout + result.stderr
    assert "sweep: 4 jobs: 0 completed, 2 skipped, 2 failed, 0 diverged" in result.stdout
    assert (done / "metrics.jsonl").read_text() == metrics_before
    failed = json.loads((run_dir(tmp_path, "optimizer.rank_threshold=7,seed=1") / "summary.json").read_text())
    assert failed["status"] == "failed" and "rank_threshold" in failed["error"]


@pytest.mark.slow
def test_rehearsal_with_the_parallel_submitit_launcher(tmp_path):
    """make phase31 PRESET=tiny's launcher: 2 jobs at a time in subprocesses, one failing job isolated."""
    result = sweep(tmp_path, "hydra/launcher=local_parallel", "hydra.sweeper.max_batch_size=2",
                   "optimizer.rank_threshold=0.3,7", "hardware.num_threads=1")
    assert result.returncode == 1, result.stderr[-3000:]
    assert "sweep: 4 jobs: 2 completed, 0 skipped, 2 failed, 0 diverged" in result.stdout
    assert sorted(states(tmp_path).values()) == ["completed", "completed", "failed", "failed"]


@pytest.mark.slow
def test_submitit_requeues_a_preempted_job_which_resumes(tmp_path):
    """The SLURM path, on submitit's local executor: USR2 → checkpoint → launcher.checkpoint() → requeue → resume."""
    proc = subprocess.Popen(
        [sys.executable, "train.py", "-m", "-cd", "sweeps", "-cn", "phase31", *TINY, "hydra/launcher=local_parallel",
         "arm=baseline", "seed=1", "trainer.max_steps=40", "trainer.checkpoint_every=1000", "trainer.eval_every=1000",
         "trainer.log_every=1", f"hydra.sweep.dir={tmp_path}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while not any(len(p.read_text().splitlines()) >= 3 for p in tmp_path.glob("*/metrics.jsonl")):
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
        time.sleep(0.5)
    task = subprocess.run(["pgrep", "-f", f"submitit.core._submit {tmp_path}"], capture_output=True, text=True)
    os.kill(int(task.stdout.split()[0]), signal.SIGUSR2)
    proc.communicate(timeout=300)
    (job_dir,) = [p.parent for p in tmp_path.glob("*/summary.json")]
    log = (job_dir / "train.log").read_text()
    assert "Requeued job" in log and "resumed from" in log
    assert json.loads((job_dir / "summary.json").read_text())["status"] == "completed"
