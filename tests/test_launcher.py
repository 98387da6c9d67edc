"""orthonoise.sweep.launcher without a cluster: the summary line and exit code, skipping before submission
(local submitit launcher), and the settings refused before anything is submitted. tests/slurm/ runs the same path
on SLURM."""
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from orthonoise.run.rundir import HYDRA_DIR, Status, read_summary
from orthonoise.sweep.launcher import SKIPPED, summary_line, unfinished
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


def test_summary_line_counts_every_outcome_and_unfinished_jobs_fail_the_sweep():
    tally = Counter({Status.COMPLETED.value: 3, SKIPPED: 2, Status.DIVERGED.value: 1})
    assert summary_line(tally, "out/s") == "sweep: 6 jobs: 3 completed, 2 skipped, 0 failed, 1 diverged | out/s"
    assert unfinished(tally) == 0
    tally[Status.FAILED.value] += 1
    tally[Status.INTERRUPTED.value] += 1
    assert summary_line(tally, "out/s").endswith("1 failed, 1 diverged, 1 interrupted | out/s")
    assert unfinished(tally) == 2


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
