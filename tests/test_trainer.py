"""Real (short) training runs through the trainer: the loss falls, records are written, resume is exact."""
import json
import math

import pytest
import torch

from orthonoise.errors import ConfigError
from orthonoise.trainer import lr_multiplier, train
from tests.conftest import FAST


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_short_muon_run_learns_and_leaves_its_records(compose_cfg, tmp_path):
    cfg = compose_cfg(*FAST, "trainer.max_steps=30", "trainer.eval_every=15", "trainer.eval_batches=2",
                      "trainer.checkpoint_every=15", "hardware.batch_size=8")
    summary = train(cfg, tmp_path)
    rows = read_metrics(tmp_path)
    evals = [r for r in rows if "val_loss" in r]
    assert evals[0]["step"] == 0 and abs(evals[0]["val_loss"] - math.log(8192)) < 0.5  # starts at ~ln(vocab)
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 1.5  # and falls clearly
    assert {"step", "train_loss", "lr", "tokens", "step_time_s"} <= rows[-1].keys()
    assert rows[-1]["tokens"] == 30 * 8 * 128
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == summary and summary["status"] == "completed" and summary["steps"] == 30
    assert summary["best_val_loss"] <= summary["final_val_loss"] and summary["n_params"] > 1e6
    assert (tmp_path / "checkpoint.pt").exists()


def test_completed_run_is_skipped_on_relaunch(compose_cfg, tmp_path):
    cfg = compose_cfg(*FAST)
    first = train(cfg, tmp_path)
    lines = (tmp_path / "metrics.jsonl").read_text()
    assert train(cfg, tmp_path) == first
    assert (tmp_path / "metrics.jsonl").read_text() == lines


def test_interrupted_run_resumes_exactly(compose_cfg, tmp_path, monkeypatch):
    """6 steps straight == crash right after the step-3 checkpoint, then relaunch: same weights, same losses."""
    from orthonoise import trainer

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    straight.mkdir(), resumed.mkdir()
    train(compose_cfg(*FAST), straight)

    def save_then_crash(run_dir, state):
        trainer_save(run_dir, state)
        raise RuntimeError("simulated crash after the step-3 checkpoint")

    trainer_save = trainer.save_checkpoint
    monkeypatch.setattr(trainer, "save_checkpoint", save_then_crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(compose_cfg(*FAST), resumed)
    monkeypatch.setattr(trainer, "save_checkpoint", trainer_save)
    assert train(compose_cfg(*FAST), resumed)["steps"] == 6
    a = torch.load(straight / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(resumed / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    straight_losses = {r["step"]: r.get("train_loss") for r in read_metrics(straight)}
    resumed_losses = {r["step"]: r.get("train_loss") for r in read_metrics(resumed)}  # last occurrence wins
    assert resumed_losses == straight_losses


def test_adamw_baseline_trains_every_parameter_with_adamw(compose_cfg, tmp_path):
    summary = train(compose_cfg(*FAST, "optimizer=adamw"), tmp_path)
    assert summary["status"] == "completed"


def test_divergence_is_recorded_not_hidden(compose_cfg, tmp_path):
    summary = train(compose_cfg(*FAST, "trainer.diverge_loss=1.0"), tmp_path)
    assert summary["status"] == "diverged" and summary["steps"] == 1


def test_gpu_preset_on_a_cpu_box_is_refused_before_compute(compose_cfg, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        train(compose_cfg("hardware=h100"), tmp_path)
    assert not (tmp_path / "metrics.jsonl").exists()


@pytest.mark.parametrize("decay,end", [("constant", 1.0), ("linear", 0.1), ("cosine", 0.1)])
def test_lr_schedule_warms_up_then_decays_to_the_floor(compose_cfg, decay, end):
    trainer = compose_cfg("trainer.max_steps=100", "trainer.warmup_steps=10", f"trainer.lr_decay={decay}").trainer
    f = lr_multiplier(trainer)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(100) == pytest.approx(end)
