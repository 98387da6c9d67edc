"""train.py as a user runs it: through a subprocess, single runs, multiruns and bad input."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from orthonoise.run.checkpoint import checkpoint_paths
from tests.conftest import FAST, ROOT, read_metrics, wait_for_step, without_timing


def run_train(*args, cwd=ROOT, timeout=300):
    return subprocess.run([sys.executable, "train.py", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_print_job_config_of_a_gpu_preset_works_anywhere():
    out = run_train("model=granite-350m", "hardware=h100", "--cfg", "job")
    assert out.returncode == 0, out.stderr
    assert "ibm-granite/granite-4.0-h-350m-base" in out.stdout and "precision: bf16" in out.stdout


def test_multirun_writes_one_directory_per_job(tmp_path):
    out = run_train("-m", "seed=1,2", *FAST, "trainer.max_steps=3", f"hydra.sweep.dir={tmp_path}")
    assert out.returncode == 0, out.stderr
    jobs = sorted(p for p in tmp_path.iterdir() if (p / "summary.json").exists())
    assert len(jobs) == 2 and "seed=1" in jobs[0].name and "seed=2" in jobs[1].name  # dirs named by overrides
    for job in jobs:
        assert json.loads((job / "summary.json").read_text())["status"] == "completed"
        assert (job / ".hydra" / "config.yaml").exists()


def test_the_readmes_example_commands_run_verbatim(tmp_path):
    """README's two example commands (one run; a multirun over alpha and seeds), as typed, plus settings that make
    them tiny and short."""
    tiny = [*FAST, "trainer.max_steps=2"]
    one = run_train("optimizer=orthonoise", "optimizer.alpha=5e-3", *tiny, f"hydra.run.dir={tmp_path / 'one'}")
    assert one.returncode == 0, one.stderr[-3000:]
    summary = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["final_alpha"] == 5e-3
    sweep = run_train("-m", "optimizer.alpha=1e-4,1e-3,5e-3", "seed=1,2", *tiny, f"hydra.sweep.dir={tmp_path / 'm'}")
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    summaries = [json.loads(p.read_text()) for p in (tmp_path / "m").glob("*/summary.json")]
    assert sorted(s["final_alpha"] for s in summaries) == [1e-4, 1e-4, 1e-3, 1e-3, 5e-3, 5e-3]
    assert all(s["status"] == "completed" for s in summaries)


@pytest.mark.parametrize("overrides,message", [
    (["hardware=h100"], "error: hardware=h100 needs a CUDA GPU"),
    (["optimizer=orthonoise", "optimizer.alpha=-0.1"], "error: optimizer.alpha=-0.1 is out of range: must be ≥ 0"),
    (["data.path=/no/such/corpus"], "error: data.path='/no/such/corpus' does not exist"),
    (["trainer.max_stepz=3"], "Could not override 'trainer.max_stepz'"),  # Hydra's own message for a typo
])
def test_bad_input_gives_one_clear_error_and_nonzero_exit(tmp_path, overrides, message):
    if "hardware=h100" in overrides and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = run_train(*overrides, f"hydra.run.dir={tmp_path}")
    output = out.stdout + out.stderr
    assert out.returncode == 1 and message in output and "Traceback" not in output
    if message.startswith("error:"):
        assert sum("error:" in line for line in output.splitlines()) == 1
        assert json.loads((tmp_path / "summary.json").read_text())["status"] == "failed"
        assert not (tmp_path / "metrics.jsonl").exists()  # stopped before any compute


def test_a_failing_job_does_not_stop_the_sweep(tmp_path):
    # job hardware=h100 fails on this CPU box; job hardware=cpu must still run and complete
    out = run_train("-m", "hardware=h100,cpu", *FAST, "trainer.max_steps=2", f"hydra.sweep.dir={tmp_path}")
    status = {p.name.split(",")[1]: json.loads((p / "summary.json").read_text())["status"]
              for p in tmp_path.iterdir() if p.is_dir()}  # dirs: hardware.batch_size=4,hardware=<name>,...
    assert status == {"hardware=h100": "failed", "hardware=cpu": "completed"}, out.stderr


def test_sigkill_mid_interval_then_the_same_command_finishes_bit_identical(tmp_path):
    """kill -9 between checkpoints (nothing gets to clean up), then the very same command again: it finds its run
    directory (named by the overrides), resumes, and ends with the same metrics and weights as an unbroken run."""
    args = ["optimizer=orthonoise", "logger=disabled", "hardware.batch_size=2", "hardware.num_threads=1",
            "trainer.max_steps=40", "trainer.eval_every=10", "trainer.eval_batches=1", "trainer.final_eval_batches=1",
            "trainer.log_every=1",
            "trainer.checkpoint_every=10", "trainer.progress_bar=false", f"data.cache_dir={ROOT / '.cache' / 'data'}"]
    command = [sys.executable, str(ROOT / "train.py"), *args]
    straight = tmp_path / "straight"
    assert run_train(*args, f"hydra.run.dir={straight}").returncode == 0
    workdir = tmp_path / "work"
    workdir.mkdir()
    proc = subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (killed,) = wait_for_run_dir(proc, workdir / "outputs" / "runs")
    wait_for_step(proc, killed / "metrics.jsonl", 15)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    logged = read_metrics(killed)[-1]["step"]
    newest = checkpoint_paths(killed)[-1]
    assert logged < 40 and int(newest.stem.split("-")[1]) <= logged
    again = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and f"resumed from {newest}" in again.stdout + again.stderr
    assert [p.name for p in (workdir / "outputs" / "runs").iterdir()] == [killed.name]  # no second run dir
    assert without_timing(read_metrics(killed)) == without_timing(read_metrics(straight))  # no duplicated rows
    a, b = (torch.load(checkpoint_paths(d)[-1], weights_only=True) for d in (straight, killed))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(x, y) for x, y in zip(a["optimizers"][0]["state"][0].values(),
                                                 b["optimizers"][0]["state"][0].values()) if torch.is_tensor(x))


def wait_for_run_dir(proc: subprocess.Popen, parent, timeout_s: float = 120) -> list:
    deadline = time.time() + timeout_s
    while not (parent.exists() and any(parent.iterdir())):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    return list(parent.iterdir())


def test_secrets_from_the_environment_are_written_nowhere_in_the_run_dir(tmp_path):
    secrets = {"WANDB_API_KEY": "wandbsecret" + "7" * 29, "HF_TOKEN": "hf_secret" + "Q" * 25}
    out = subprocess.run([sys.executable, "train.py", *FAST, "logger=offline", "trainer.max_steps=2",
                          f"hydra.run.dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**{k: v for k, v in os.environ.items() if k != "WANDB_MODE"}, **secrets})
    assert out.returncode == 0, out.stderr[-3000:]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files) and any(p.parent.name == ".hydra" for p in files)
    for path in files:  # config snapshots, logs, metrics, summary, checkpoints, the offline wandb run
        data = path.read_bytes()
        assert not any(secret.encode() in data for secret in secrets.values()), path
    assert not any(secret in out.stdout + out.stderr for secret in secrets.values())


READ_ONLY_FROM_STEP_3 = """
import builtins, runpy, sys
from orthonoise.run import atomic
armed = []

def read_only_dir_open(path, *args, **kwargs):  # the run dir turns read-only when the step-3 checkpoint is due
    if "step-00000003.pt" in str(path):
        armed.append(True)
    if armed:
        raise PermissionError(13, "Permission denied", str(path))
    return builtins.open(path, *args, **kwargs)

atomic.open = read_only_dir_open  # every atomic write (checkpoints, summary, identity) creates a new file first
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path("train.py", run_name="__main__")
"""


def one_error_line(script: str, run_dir) -> list[str]:
    """Train through `script` (a fault injected into train.py) into run_dir: it must fail with exit 1 and exactly one
    `error:` line, no traceback; that line, as a list."""
    out = subprocess.run([sys.executable, "-c", script, *FAST, f"hydra.run.dir={run_dir}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    output = out.stdout + out.stderr
    errors = [line for line in output.splitlines() if "error:" in line]
    assert out.returncode == 1 and "Traceback" not in output and len(errors) == 1, output[-3000:]
    return errors


def test_a_write_failing_mid_run_marks_it_failed_with_one_error_line(tmp_path):
    errors = one_error_line(READ_ONLY_FROM_STEP_3, tmp_path)
    assert "Permission denied" in errors[0] and "step-00000003.pt" in errors[0]
    summary = json.loads((tmp_path / "summary.json").read_text())  # rewritten in place: the file itself is writable
    assert summary["status"] == "failed" and "Permission denied" in summary["error"]


DISK_FULL_AT_STEP_3 = """
import builtins, runpy, sys
from orthonoise.run import atomic
from tests.test_checkpoint import FullDisk

def filling_open(path, *args, **kwargs):  # the disk fills up while the step-3 checkpoint is written
    f = builtins.open(path, *args, **kwargs)
    return FullDisk(f, room=4096) if "step-00000003.pt" in str(path) else f

atomic.open = filling_open
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path("train.py", run_name="__main__")
"""


def test_a_full_disk_at_a_checkpoint_is_one_error_line_naming_file_cause_and_remedy(tmp_path):
    errors = one_error_line(DISK_FULL_AT_STEP_3, tmp_path)
    assert (f"cannot write {tmp_path / 'checkpoints' / 'step-00000003.pt'}: No space left on device; the disk is "
            f"full: free space there") in errors[0] and "launch the same command again" in errors[0]
    assert not list(tmp_path.rglob("*.tmp"))  # the half-written checkpoint is gone
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "failed"


CTRL_C_WHILE_IMPORTING = """
import runpy, sys

class CtrlC:  # Ctrl-C arrives while torch is imported, before any handler of ours is in place
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            raise KeyboardInterrupt

sys.meta_path.insert(0, CtrlC())
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path("train.py", run_name="__main__")
"""


def test_ctrl_c_during_start_up_is_one_line_and_exit_status_130(tmp_path):
    out = subprocess.run([sys.executable, "-c", CTRL_C_WHILE_IMPORTING, *FAST, f"hydra.run.dir={tmp_path}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    output = (out.stdout + out.stderr).strip()
    assert out.returncode == 130 and "Traceback" not in output, output[-3000:]
    assert output.splitlines()[-1].startswith("interrupted (Ctrl-C): stopped at once")
