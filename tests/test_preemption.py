"""USR2 (SLURM's time-out / preemption warning), SIGTERM (kill, scancel) and Ctrl-C checkpoint and end cleanly."""
import json
import signal
import subprocess
import sys

import pytest

from orthonoise.run.checkpoint import checkpoint_paths
from tests.conftest import ROOT, wait_for_step


@pytest.mark.parametrize("signum", [signal.SIGUSR2, signal.SIGTERM, signal.SIGINT], ids=["USR2", "TERM", "INT"])
def test_signal_checkpoints_at_the_step_end_and_relaunch_resumes(tmp_path, signum):
    out_dir = tmp_path / "run"
    cmd = [sys.executable, "train.py", "model=tiny", "logger=disabled", "hardware.batch_size=2",
           "hardware.num_threads=1", "trainer.max_steps=400", "trainer.warmup_steps=1", "trainer.eval_every=1000",
           "trainer.log_every=1",
           "trainer.checkpoint_every=1000", "trainer.progress_bar=false", f"hydra.run.dir={out_dir}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for_step(proc, out_dir / "metrics.jsonl", 2)
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-3000:]  # a clean exit, not a kill
    summary = json.loads((out_dir / "summary.json").read_text())
    stopped_at = summary["steps"]
    assert summary["status"] == "interrupted" and 2 <= stopped_at < 400
    assert [p.name for p in checkpoint_paths(out_dir)] == [f"step-{stopped_at:08d}.pt"]  # not a multiple of 1000
    # two more steps, not 400: another max_steps is another run unless the change is allowed (and recorded)
    resumed = subprocess.run([*cmd, f"trainer.max_steps={stopped_at + 2}", "trainer.allow_config_change=true"],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert f"resumed from {checkpoint_paths(out_dir)[0]} at step {stopped_at}" in resumed.stdout + resumed.stderr
    assert json.loads((out_dir / "summary.json").read_text())["status"] == "completed"


def test_a_stopped_multirun_starts_no_further_job_and_a_relaunch_finishes_all(tmp_path):
    """The basic launcher runs jobs one after another in one process: SIGTERM in job 1 must not start job 2."""
    cmd = [sys.executable, "train.py", "-m", "seed=1,2", "logger=disabled", "hardware.batch_size=2",
           "hardware.num_threads=1", "trainer.max_steps=60", "trainer.eval_every=1000", "trainer.log_every=1",
           "trainer.checkpoint_every=1000", "trainer.progress_bar=false", f"hydra.sweep.dir={tmp_path}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    name = "hardware.batch_size=2,hardware.num_threads=1,logger=disabled,seed={},trainer.checkpoint_every=1000," \
           "trainer.eval_every=1000,trainer.log_every=1,trainer.max_steps=60,trainer.progress_bar=False"
    first, second = tmp_path / name.format(1), tmp_path / name.format(2)  # run dirs are named by the overrides
    wait_for_step(proc, first / "metrics.jsonl", 2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out[-3000:]  # a sweep left unfinished says so
    assert "sweep: 2 jobs: 0 completed, 0 skipped, 0 failed, 0 diverged, 2 interrupted" in out
    assert json.loads((first / "summary.json").read_text())["status"] == "interrupted"
    assert json.loads((second / "summary.json").read_text()) == {**json.loads((second / "summary.json").read_text()),
                                                                  "status": "interrupted", "steps": 0}
    assert not (second / "metrics.jsonl").exists()  # never started
    stopped_at = json.loads((first / "summary.json").read_text())["steps"]
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)  # the very same command
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resumed from {checkpoint_paths(first)[0]} at step {stopped_at}" in again.stdout + again.stderr
    assert [json.loads((d / "summary.json").read_text())["status"] for d in (first, second)] == ["completed"] * 2


def test_the_usual_signal_handlers_are_back_after_a_run_even_after_a_crash(compose_cfg, tmp_path, monkeypatch):
    """Otherwise the next run of a multirun process would inherit a dead run's handlers, and SIGTERM would be lost."""
    from orthonoise import trainer
    from tests.conftest import FAST

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)}
    trainer.train(compose_cfg(*FAST, "trainer.max_steps=2"), tmp_path / "ok")
    assert {sig: signal.getsignal(sig) for sig in before} == before

    def crash(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(trainer, "build_model", crash)
    with pytest.raises(RuntimeError, match="out of memory"):
        trainer.train(compose_cfg(*FAST), tmp_path / "crashed")
    assert {sig: signal.getsignal(sig) for sig in before} == before
