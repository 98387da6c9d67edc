"""USR2 (SLURM's time-out / preemption warning), SIGTERM (kill, scancel) and Ctrl-C checkpoint and end cleanly."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from orthonoise.run.checkpoint import checkpoint_paths
from tests.conftest import ROOT, read_metrics, wait_for_step, without_timing


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
    if signum != signal.SIGUSR2:
        return  # the checkpoint is the same whichever signal wrote it: one relaunch (SLURM's) shows it resumes
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


# ------------------------------------------------ any number of interruptions -----------------------------------
# One driver process imports the training stack once and forks every launch of a run from it (it runs no torch op
# itself, so the forks are clean): the straight run, then the interrupted one, relaunched after each interruption.
# Each interruption is a real signal to the training process at a chosen step: SIGKILL (nothing gets to clean up),
# SIGTERM and USR2 (checkpoint at the step's end, status interrupted).
SHORT = ["trainer.max_steps=6", "trainer.warmup_steps=1", "trainer.eval_every=3", "trainer.eval_batches=1",
         "trainer.final_eval_batches=1", "trainer.log_every=1", "trainer.checkpoint_every=2",
         "trainer.progress_bar=false", "hardware.batch_size=2", "hardware.num_threads=1", "logger=disabled"]
INTERRUPTIONS = [("SIGKILL", 3), ("SIGTERM", 4), ("SIGUSR2", 5)]  # (signal, the step it arrives in)


def _signal_at(signum: int, step: int) -> None:
    """Make this process receive `signum` while it trains step `step` (after the step, before its row)."""
    from orthonoise import trainer

    real = trainer._advance_schedule

    def advance(schedulers):
        real(schedulers)
        if schedulers[0].last_epoch == step:
            os.kill(os.getpid(), signum)

    trainer._advance_schedule = advance


def _launch(ranks: int, body) -> list[int]:
    """Fork `ranks` processes running body(rank) (a DDP run when ranks > 1); their exit codes (-9: SIGKILLed)."""
    port = 29000 + os.getpid() % 1000
    pids = []
    for rank in range(ranks):
        pid = os.fork()
        if pid == 0:
            if ranks > 1:
                os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(ranks),
                                  MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
            code = 1
            try:
                body(rank)
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    return [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]


def drive(out_dir: str, ranks: int, interruptions: list, *overrides: str) -> None:
    """The straight run into out_dir/straight, the interrupted one into out_dir/run; prints each launch's exit."""
    from hydra import compose, initialize_config_dir

    from orthonoise.trainer import train
    from tests.conftest import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[*SHORT, *overrides])
    print("straight", _launch(ranks, lambda rank: train(cfg, Path(out_dir) / "straight")), flush=True)

    def interrupted(name: str, step: int):
        def body(rank: int) -> None:
            if rank == 0:
                _signal_at(getattr(signal, name), step)
            train(cfg, Path(out_dir) / "run")
        return body

    for name, step in interruptions:
        print(name, _launch(ranks, interrupted(name, step)), flush=True)
    print("final", _launch(ranks, lambda rank: train(cfg, Path(out_dir) / "run")), flush=True)


def _same(a, b, where: str = "") -> None:
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for key in a:
            _same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _resume_state(path) -> dict:
    """A checkpoint minus what no two runs share: wall-clock time in the record and in its rows, and the python
    and numpy generators, which a run never seeds nor draws from (each process starts them from the OS)."""
    saved = torch.load(path, weights_only=True)
    saved["record"] = {**saved["record"], "wall_time_s": None, "rows": without_timing(saved["record"]["rows"])}
    saved["rng"] = {k: v for k, v in saved["rng"].items() if k in ("torch", "cuda")}
    return saved


def assert_interrupted_run_ends_like_the_straight_one(tmp_path, ranks: int, interruptions: list, *overrides: str):
    out = subprocess.run([sys.executable, "-c", "import sys, json; from tests.test_preemption import drive; "
                          "drive(sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), *sys.argv[4:])",
                          str(tmp_path), str(ranks), json.dumps(interruptions), *overrides],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    exits = dict(line.split(" ", 1) for line in out.stdout.splitlines() if line.split(" ")[0] in
                 {"straight", "final", *(name for name, _ in interruptions)})
    killed = str([-9] + [0] * (ranks - 1))  # a SIGKILLed rank 0 (no rank runs on without it)
    assert exits == {"straight": str([0] * ranks), "final": str([0] * ranks),
                     **{name: killed if name == "SIGKILL" else str([0] * ranks) for name, _ in interruptions}}, \
        out.stdout[-2000:] + out.stderr[-5000:]
    straight, run = tmp_path / "straight", tmp_path / "run"
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    assert without_timing(read_metrics(run)) == without_timing(read_metrics(straight))  # no row lost or repeated
    # weights, optimizer states and param groups (keys included), schedules, data position, RNGs, records
    _same(_resume_state(checkpoint_paths(run)[-1]), _resume_state(checkpoint_paths(straight)[-1]))


def test_a_run_interrupted_three_times_ends_bit_identical_to_an_unbroken_one(tmp_path):
    assert_interrupted_run_ends_like_the_straight_one(tmp_path, 1, INTERRUPTIONS, "optimizer=orthonoise")


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["muon", "isotropic", "nolah", "adamw"])
def test_every_optimizer_survives_three_interruptions_bit_identically(tmp_path, optimizer):
    assert_interrupted_run_ends_like_the_straight_one(tmp_path, 1, INTERRUPTIONS, f"optimizer={optimizer}")


@pytest.mark.slow
def test_a_ddp_run_interrupted_twice_ends_bit_identical_to_an_unbroken_one(tmp_path):
    assert_interrupted_run_ends_like_the_straight_one(tmp_path, 2, [("SIGTERM", 2), ("SIGUSR2", 4)],
                                                      "optimizer=orthonoise", "hardware.world_size=2")
