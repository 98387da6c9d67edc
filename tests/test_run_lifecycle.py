"""A run directory's life: one process at a time, resumed only by the settings and code that made it, its record
never rewritten by a later launch, its history never lost silently
(orthonoise/run/runlock.py, identity.py, metrics.py)."""
import fcntl
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from orthonoise.errors import RunRefused
from orthonoise.run import identity, runlock
from orthonoise.run.metrics import mark_status
from orthonoise.run.rundir import HYDRA_DIR, IDENTITY_FILE, LOCK_FILE, METRICS_FILE, SUMMARY_FILE, Status, read_summary
from orthonoise.trainer import train
from tests.conftest import FAST, ROOT, read_metrics, without_timing

HOLD = textwrap.dedent("""
    import sys, time
    from orthonoise.run import runlock
    with runlock.hold(sys.argv[1]):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
""")


@pytest.fixture
def holder(tmp_path):
    """holder(run_dir): another live process that holds run_dir's lock, as a training run does."""
    procs = []

    def hold(run_dir, seconds=120):
        run_dir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir), str(seconds)], cwd=ROOT,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "held"
        procs.append(proc)
        return proc

    yield hold
    for proc in procs:
        proc.kill()
        proc.wait()


def run_train(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_a_held_run_dir_refuses_a_second_holder_naming_the_first(tmp_path, holder):
    proc = holder(tmp_path)
    with pytest.raises(runlock.RunDirBusy, match=f"in use by pid {proc.pid} on .* \\(since 20"):
        with runlock.hold(tmp_path):
            pass
    assert runlock.held_elsewhere(tmp_path)


def test_a_lock_left_by_a_killed_process_blocks_nobody(tmp_path, holder):
    proc = holder(tmp_path)
    proc.kill()  # SIGKILL: no clean-up ran, the lock file stays
    proc.wait()
    assert (tmp_path / LOCK_FILE).exists() and not runlock.held_elsewhere(tmp_path)
    with runlock.hold(tmp_path):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_a_failure_elsewhere_never_overwrites_the_summary_of_a_held_run(tmp_path, holder):
    (tmp_path / SUMMARY_FILE).write_text(json.dumps({"status": "running", "steps": 40}))
    holder(tmp_path)
    mark_status(tmp_path, Status.FAILED, error="a second launch's mistake")
    assert read_summary(tmp_path) == {"status": "running", "steps": 40}


def test_the_run_holds_its_directory_while_it_trains(compose_cfg, tmp_path, monkeypatch):
    from orthonoise import trainer

    seen, real = [], trainer.gradient_norm

    def probe(*args):  # flock locks belong to an open file: a second open of run.lock conflicts, even in-process
        with open(tmp_path / LOCK_FILE, "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                seen.append("free")
            except BlockingIOError:
                seen.append("held")
        return real(*args)

    monkeypatch.setattr(trainer, "gradient_norm", probe)
    train(compose_cfg(*FAST, "trainer.max_steps=2"), tmp_path)
    assert seen == ["held", "held"] and not runlock.held_elsewhere(tmp_path)


def test_a_second_launch_into_a_held_run_dir_says_who_holds_it_and_exits_nonzero(tmp_path, holder):
    run_dir = tmp_path / "run"
    proc = holder(run_dir)
    (run_dir / SUMMARY_FILE).write_text(json.dumps({"status": "running", "steps": 7}))
    out = run_train(*FAST, f"hydra.run.dir={run_dir}")
    output = out.stdout + out.stderr
    assert out.returncode == 1 and "Traceback" not in output
    errors = [line for line in output.splitlines() if "error:" in line]
    assert len(errors) == 1 and f"in use by pid {proc.pid}" in errors[0]
    assert read_summary(run_dir) == {"status": "running", "steps": 7} and not (run_dir / METRICS_FILE).exists()


def test_a_multirun_leaves_a_job_whose_directory_is_held_counts_it_running_elsewhere_and_fails(tmp_path, holder):
    proc = holder(tmp_path / "job5")
    out = run_train("-m", "seed=5", *FAST, f"hydra.sweep.dir={tmp_path}", "hydra.sweep.subdir=job${seed}")
    output = out.stdout + out.stderr
    assert out.returncode == 1 and f"running elsewhere: {tmp_path / 'job5'} is in use by pid {proc.pid}" in output
    assert "sweep: 1 jobs: 0 completed, 0 skipped, 0 failed, 0 diverged, 1 running elsewhere" in out.stdout
    assert not (tmp_path / "job5" / SUMMARY_FILE).exists() and not (tmp_path / "job5" / METRICS_FILE).exists()


@pytest.fixture(scope="module")
def crashed_run(tmp_path_factory):
    """An OrthoNoise run (alpha 1e-3) killed right after its step-3 checkpoint, as a crash leaves it."""
    from hydra import compose, initialize_config_dir

    from orthonoise import trainer
    from tests.conftest import CONF

    run_dir = tmp_path_factory.mktemp("crashed") / "run"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[*FAST, "optimizer=orthonoise"])
    real = trainer.save_checkpoint

    def save_then_crash(*args, **kwargs):
        real(*args, **kwargs)
        raise RuntimeError("simulated crash after the step-3 checkpoint")

    with pytest.MonkeyPatch.context() as patch, pytest.raises(RuntimeError, match="simulated crash"):
        patch.setattr(trainer, "save_checkpoint", save_then_crash)
        train(cfg, run_dir)
    return run_dir


@pytest.fixture
def crashed(crashed_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(crashed_run, run_dir)
    return run_dir


def snapshot(run_dir) -> dict:
    return {name: (run_dir / name).read_bytes() for name in (SUMMARY_FILE, METRICS_FILE, IDENTITY_FILE)}


def test_a_run_records_its_code_and_machine_in_its_summary(crashed):
    summary, record = read_summary(crashed), json.loads((crashed / IDENTITY_FILE).read_text())
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    provenance = summary["provenance"]
    assert provenance["git_commit"] == head and isinstance(provenance["git_dirty"], bool)
    assert provenance["torch"] == torch.__version__ and provenance["transformers"] and "mamba_ssm" in provenance
    assert provenance["device_name"] and provenance["python"]
    assert summary["config_fingerprint"] == record["fingerprint"] and summary["config_changes"] == []
    assert record["settings"]["optimizer.alpha"] == 1e-3 and "logger.mode" not in record["settings"]


def test_resuming_with_other_settings_is_refused_naming_the_keys_and_leaves_the_run_as_it_was(compose_cfg, crashed):
    before = snapshot(crashed)
    with pytest.raises(RunRefused, match=r"optimizer\.alpha 0\.001 → 0\.05.*trainer\.allow_config_change=true"):
        train(compose_cfg(*FAST, "optimizer=orthonoise", "optimizer.alpha=0.05"), crashed)
    assert snapshot(crashed) == before


def test_what_does_not_change_the_computation_resumes_freely(compose_cfg, crashed):
    cfg = compose_cfg(*FAST, "optimizer=orthonoise", "trainer.log_every=2", "logger=offline",
                      "trainer.progress_bar=true", "trainer.checkpoint_every=2", "hardware.num_threads=1")
    assert identity.Identity.of(cfg).differences(json.loads((crashed / IDENTITY_FILE).read_text())) == {}


def test_resuming_under_other_code_is_refused_like_other_settings(compose_cfg, crashed, monkeypatch):
    before = snapshot(crashed)
    other = {**identity.code_version(), "git_commit": "0" * 40, "torch": "9.9.9"}
    monkeypatch.setattr(identity, "code_version", lambda: other)
    with pytest.raises(RunRefused, match=r"code\.git_commit .* → \"0000.*code\.torch"):
        train(compose_cfg(*FAST, "optimizer=orthonoise"), crashed)
    assert snapshot(crashed) == before


@pytest.mark.parametrize("change", [["model.config.num_hidden_layers=3"], ["optimizer=muon"]])
def test_an_incompatible_checkpoint_is_refused_in_one_line_even_when_changes_are_allowed(compose_cfg, crashed, change):
    before = snapshot(crashed)
    overrides = [*FAST, "optimizer=orthonoise", *change, "trainer.allow_config_change=true"]
    with pytest.raises(RunRefused, match="does not fit this run's model or optimizers") as refused:
        train(compose_cfg(*overrides), crashed)
    assert "\n" not in str(refused.value)
    assert snapshot(crashed) == before


def test_an_allowed_change_takes_effect_and_is_recorded_in_the_run(compose_cfg, crashed):
    summary = train(compose_cfg(*FAST, "optimizer=orthonoise", "optimizer.alpha=0.05",
                                "trainer.allow_config_change=true"), crashed)
    assert summary["status"] == "completed" and summary["steps"] == 6
    (change,) = summary["config_changes"]
    assert change["step"] == 3 and change["keys"] == {"optimizer.alpha": [0.001, 0.05]}
    alphas = {row["step"]: row["alpha"] for row in read_metrics(crashed) if "alpha" in row}
    assert alphas == {3: 0.001, 6: 0.05}  # the optimizer ran with the new alpha, not the checkpoint's
    record = json.loads((crashed / IDENTITY_FILE).read_text())
    assert record["settings"]["optimizer.alpha"] == 0.05 and record["changes"] == [change]


def test_metrics_deleted_while_a_run_was_stopped_come_back_from_its_checkpoint(compose_cfg, crashed, tmp_path):
    logged = read_metrics(crashed)
    (crashed / METRICS_FILE).unlink()
    summary = train(compose_cfg(*FAST, "optimizer=orthonoise"), crashed)
    rows = read_metrics(crashed)
    assert rows[: len(logged)] == logged and [r["step"] for r in rows] == list(range(7))
    assert len(summary["metrics_restored"]) == 1 and "at resume from step 3" in summary["metrics_restored"][0]


def test_a_completed_run_is_skipped_in_one_line_naming_changed_keys_and_keeps_its_record(tmp_path):
    args = [*FAST, "trainer.max_steps=2", "optimizer=orthonoise"]
    assert run_train(*args, cwd=tmp_path).returncode == 0
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    hydra_before = {p.name: p.read_bytes() for p in (run_dir / HYDRA_DIR).iterdir()}
    before = snapshot(run_dir)
    # the same overrides, but conf/ edited: here, an explicit hydra.run.dir with a changed alpha
    out = run_train(*args, "optimizer.alpha=0.02", f"hydra.run.dir='{run_dir}'", cwd=tmp_path)
    lines = [line for line in (out.stdout + out.stderr).splitlines() if "skipped:" in line]
    assert out.returncode == 0 and len(lines) == 1 and "optimizer.alpha 0.001 → 0.02" in lines[0]
    assert {p.name: p.read_bytes() for p in (run_dir / HYDRA_DIR).iterdir()} == hydra_before
    assert snapshot(run_dir) == before
    # the override that continues a changed run is not part of the directory name: the same run is found
    out = run_train(*args, "trainer.allow_config_change=true", cwd=tmp_path)
    assert out.returncode == 0 and f"skipped: {run_dir.resolve()} already completed" in out.stdout.replace(
        str(run_dir), str(run_dir.resolve()))
    assert [p.name for p in (tmp_path / "outputs" / "runs").iterdir()] == [run_dir.name]


def test_a_refused_relaunch_gives_one_error_line_and_restores_the_hydra_record(tmp_path):
    run_dir = tmp_path / "run"
    args = [*FAST, "trainer.max_steps=2", f"hydra.run.dir={run_dir}"]
    assert run_train(*args).returncode == 0
    summary = read_summary(run_dir)
    (run_dir / SUMMARY_FILE).write_text(json.dumps({**summary, "status": "interrupted"}))  # as SIGTERM leaves it
    before, config = snapshot(run_dir), (run_dir / HYDRA_DIR / "config.yaml").read_bytes()
    out = run_train(*args, "model.config.num_hidden_layers=3")
    output = out.stdout + out.stderr
    errors = [line for line in output.splitlines() if "error:" in line]
    assert out.returncode == 1 and "Traceback" not in output and len(errors) == 1
    assert "model.config.num_hidden_layers 4 → 3" in errors[0] and "trainer.allow_config_change=true" in errors[0]
    assert snapshot(run_dir) == before and (run_dir / HYDRA_DIR / "config.yaml").read_bytes() == config
    assert without_timing(read_metrics(run_dir))[-1]["step"] == 2


def refused_rank(rank: int, port: int, run_dir: str, out_dir: str) -> None:
    """One DDP rank launched into a held run directory: it must end with the refusal, not wait for rank 0."""
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[*FAST, "hardware.world_size=2", "hardware.batch_size=2"])
    try:
        train(cfg, run_dir)
    except RunRefused as err:
        (Path(out_dir) / f"rank{rank}.txt").write_text(f"{type(err).__name__}: {err}")


@pytest.mark.timeout(300)
def test_under_ddp_a_refusal_of_rank_0_ends_every_rank(tmp_path, holder):
    import torch.multiprocessing as mp

    from tests.test_distributed import free_port

    proc = holder(tmp_path / "run")
    mp.spawn(refused_rank, args=(free_port(), str(tmp_path / "run"), str(tmp_path)), nprocs=2, join=True)
    assert f"RunDirBusy: {tmp_path / 'run'} is in use by pid {proc.pid}" in (tmp_path / "rank0.txt").read_text()
    assert "rank 0 could not take" in (tmp_path / "rank1.txt").read_text()


# ------------------------------------------------ a run's record is checked, never rewritten silently -------------

def test_deleting_run_lock_mid_run_stops_the_run_in_one_line(compose_cfg, tmp_path, monkeypatch):
    from orthonoise import trainer

    real, calls = trainer.gradient_norm, []

    def delete_lock_at_step_2(*args):
        calls.append(1)
        if len(calls) == 2:
            (tmp_path / LOCK_FILE).unlink()  # a clean-up script; a second launch could now lock a new file
        return real(*args)

    monkeypatch.setattr(trainer, "gradient_norm", delete_lock_at_step_2)
    with pytest.raises(runlock.LockLost, match=f"{tmp_path / LOCK_FILE} was deleted while this process held it"
                                               ) as stopped:
        train(compose_cfg(*FAST), tmp_path)
    assert "\n" not in str(stopped.value) and read_metrics(tmp_path)[-1]["step"] == 1  # nothing after the check
    assert not (tmp_path / "checkpoints").exists()


def test_a_run_without_identity_json_is_rebuilt_from_its_hydra_config_before_any_comparison(tmp_path):
    run_dir = tmp_path / "run"
    args = [*FAST, "trainer.max_steps=2", "optimizer=orthonoise", f"hydra.run.dir={run_dir}"]
    assert run_train(*args).returncode == 0
    summary = read_summary(run_dir)
    (run_dir / SUMMARY_FILE).write_text(json.dumps({**summary, "status": "interrupted"}))  # as SIGTERM leaves it
    (run_dir / IDENTITY_FILE).unlink()
    config = (run_dir / HYDRA_DIR / "config.yaml").read_bytes()
    out = run_train(*args, "optimizer.alpha=0.05")
    errors = [line for line in (out.stdout + out.stderr).splitlines() if "error:" in line]
    assert out.returncode == 1 and len(errors) == 1 and "optimizer.alpha 0.001 → 0.05" in errors[0], out.stderr
    assert (run_dir / HYDRA_DIR / "config.yaml").read_bytes() == config  # its record, not this launch's
    out = run_train(*args, "optimizer.alpha=0.05", "trainer.max_steps=3", "trainer.allow_config_change=true")
    assert out.returncode == 0, out.stderr[-3000:]
    (change,) = read_summary(run_dir)["config_changes"]
    assert change["step"] == 2 and change["keys"]["optimizer.alpha"] == [0.001, 0.05]


def test_a_run_without_any_record_of_its_settings_is_adopted_as_a_recorded_change(compose_cfg, crashed):
    (crashed / IDENTITY_FILE).unlink()  # and no .hydra/ seen before this launch (the trainer called directly)
    summary = train(compose_cfg(*FAST, "optimizer=orthonoise", "optimizer.alpha=0.05"), crashed)
    assert summary["status"] == "completed"
    assert [c["keys"] for c in summary["config_changes"]] == [{IDENTITY_FILE: ["missing", "this launch's settings"]}]


def test_max_steps_below_the_runs_step_is_one_error_line(compose_cfg, crashed):
    before = snapshot(crashed)
    with pytest.raises(RunRefused, match=r"^trainer.max_steps=2 is below step 3, where .*step-00000003.pt left this "
                                         r"run: a run cannot be shortened; set trainer.max_steps ≥ 3") as refused:
        train(compose_cfg(*FAST, "optimizer=orthonoise", "trainer.max_steps=2", "trainer.allow_config_change=true"),
              crashed)
    assert "\n" not in str(refused.value) and snapshot(crashed) == before


@pytest.mark.parametrize("edit", [{"final_val_loss": float("nan")}, {"steps": 1}, {"final_val_loss": None}],
                         ids=["nan_loss", "short", "no_loss"])
def test_a_completed_record_that_is_no_completed_seed_is_resumed_not_skipped(compose_cfg, tmp_path, edit):
    cfg = compose_cfg(*FAST, "trainer.max_steps=2")
    done = train(cfg, tmp_path)
    (tmp_path / SUMMARY_FILE).write_text(json.dumps({**done, **edit}))
    again = train(cfg, tmp_path)  # resumes from its step-2 checkpoint, trains nothing, writes a true summary
    assert again["status"] == "completed" and again["steps"] == 2
    assert again["final_val_loss"] == done["final_val_loss"] and read_summary(tmp_path) is not None


def test_a_completed_runs_deleted_metrics_come_back_from_its_checkpoint_at_relaunch(compose_cfg, tmp_path, capsys):
    cfg = compose_cfg(*FAST, "trainer.max_steps=2")
    train(cfg, tmp_path)
    logged = read_metrics(tmp_path)
    (tmp_path / METRICS_FILE).unlink()
    train(cfg, tmp_path)
    assert read_metrics(tmp_path) == logged
    assert f"its metrics.jsonl was missing: restored from {tmp_path / 'checkpoints' / 'step-00000002.pt'} (3 rows)" \
        in capsys.readouterr().out


def test_a_checkpoint_written_with_torchs_extra_group_key_still_loads(compose_cfg, crashed):
    """Checkpoints written by resumed runs before the fix carry `differentiable` in the Muon family's groups."""
    import hashlib

    from orthonoise.run.checkpoint import checkpoint_paths

    path = checkpoint_paths(crashed)[-1]
    saved = torch.load(path, weights_only=True)
    for group in saved["optimizers"][0]["param_groups"]:
        group["differentiable"] = False
    torch.save(saved, path)
    path.with_suffix(".sha256").write_text(hashlib.sha256(path.read_bytes()).hexdigest())
    summary = train(compose_cfg(*FAST, "optimizer=orthonoise"), crashed)
    assert summary["status"] == "completed" and summary["steps"] == 6
    final = torch.load(checkpoint_paths(crashed)[-1], weights_only=True)
    assert not any("differentiable" in group for group in final["optimizers"][0]["param_groups"])
