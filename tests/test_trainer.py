"""Real (short) training runs through the trainer: the loss falls, records are written, resume is exact."""
import json
import math
import re
import shutil

import pytest
import torch

from orthonoise.errors import ConfigError
from orthonoise.run.checkpoint import checkpoint_paths
from orthonoise.run.rundir import EVAL_S, RANK_S
from orthonoise.trainer import lr_multiplier, train
from tests.conftest import FAST, SHARED_RUN, compose_config, read_metrics, without_timing


@pytest.fixture(scope="module")
def muon_run(tmp_path_factory) -> tuple:
    """30 steps of plain Muon at batch 8, long enough to learn clearly: (its directory, what train returned)."""
    run_dir = tmp_path_factory.mktemp("muon") / "run"
    cfg = compose_config(*FAST, "optimizer=muon", "trainer.max_steps=30", "trainer.eval_every=15",
                         "trainer.eval_batches=2", "trainer.checkpoint_every=15", "hardware.batch_size=8")
    return run_dir, train(cfg, run_dir)


def test_short_muon_run_learns_and_leaves_its_records(muon_run):
    run_dir, summary = muon_run
    rows = read_metrics(run_dir)
    evals = [r for r in rows if "val_loss" in r]
    assert evals[0]["step"] == 0 and abs(evals[0]["val_loss"] - math.log(8192)) < 0.5  # starts at ~ln(vocab)
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 1.5  # and falls clearly
    assert {"step", "train_loss", "lr", "tokens", "step_time_s"} <= rows[-1].keys()
    assert rows[-1]["tokens"] == 30 * 8 * 128
    # every eval times its validation pass; Muon's evals also the effective-rank pass (the preflight's overheads)
    assert all(r[EVAL_S] > 0 for r in evals) and all(r[RANK_S] > 0 for r in evals if r["step"] > 0)
    assert not any(EVAL_S in r or RANK_S in r for r in rows if "val_loss" not in r)
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk == summary and summary["status"] == "completed" and summary["steps"] == 30
    assert summary["best_val_loss"] <= summary["final_val_loss"] and summary["n_params"] > 1e6
    assert [p.name for p in checkpoint_paths(run_dir)] == ["step-00000015.pt", "step-00000030.pt"]


def test_completed_run_is_skipped_on_relaunch(trained_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    first = json.loads((run_dir / "summary.json").read_text())
    lines = (run_dir / "metrics.jsonl").read_text()
    assert first["status"] == "completed"
    assert train(compose_config(*SHARED_RUN), run_dir) == first
    assert (run_dir / "metrics.jsonl").read_text() == lines


def test_interrupted_run_resumes_exactly(trained_run, tmp_path, monkeypatch):
    """6 steps straight (the shared run) == crash right after the step-3 checkpoint, then relaunch: same weights,
    same metrics."""
    from orthonoise import trainer

    straight, resumed = trained_run, tmp_path / "resumed"
    resumed.mkdir()

    def save_then_crash(*args, **kwargs):
        trainer_save(*args, **kwargs)
        raise RuntimeError("simulated crash after the step-3 checkpoint")

    trainer_save = trainer.save_checkpoint
    monkeypatch.setattr(trainer, "save_checkpoint", save_then_crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(compose_config(*SHARED_RUN), resumed)
    monkeypatch.setattr(trainer, "save_checkpoint", trainer_save)
    assert train(compose_config(*SHARED_RUN), resumed)["steps"] == 6
    a = torch.load(checkpoint_paths(straight)[-1], weights_only=True)
    b = torch.load(checkpoint_paths(resumed)[-1], weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"]) and a["rng"]["python"] == b["rng"]["python"]
    assert without_timing(read_metrics(resumed)) == without_timing(read_metrics(straight))


def poison_loss_at(monkeypatch, calls: set[int]):
    """Make the training loss NaN on the given forward calls (1-based; evaluation calls are not counted)."""
    from orthonoise import trainer

    count = {"n": 0}
    real = trainer.causal_lm_loss

    def loss(model, batch):
        value = real(model, batch)
        if torch.is_grad_enabled():
            count["n"] += 1
            if count["n"] in calls:
                return value * float("nan")
        return value

    monkeypatch.setattr(trainer, "causal_lm_loss", loss)


def test_the_noise_is_drawn_ahead_of_each_step(compose_cfg, tmp_path, monkeypatch):
    """The trainer has the noise variants draw before forward+backward, so step() itself draws none."""
    import sys

    from orthonoise.optim.perturbation import Perturbation

    callers, unit_noise = [], Perturbation.unit

    def spy(self, *args):
        callers.append(sys._getframe(1).f_code.co_name)
        return unit_noise(self, *args)

    monkeypatch.setattr(Perturbation, "unit", spy)
    assert train(compose_cfg(*FAST, "optimizer=orthonoise"), tmp_path)["status"] == "completed"
    assert len(callers) >= 6 and set(callers) == {"prepare"}


@pytest.mark.parametrize("overrides,final_alpha", [
    (["optimizer.alpha=1e-2", "noise=linear"], 1e-3),  # the schedule spans the run: the plan's 1e-2 → 1e-3
    (["optimizer.alpha=1e-2", "noise=linear", "noise.steps=1000"], 1e-2 * (1 - 0.9 * 6 / 1000)),  # its literal 1000
    (["optimizer=isotropic", "optimizer.alpha=1e-2", "noise=exponential"], 1e-3),
])
def test_the_summary_records_the_alpha_the_run_ended_at(compose_cfg, tmp_path, overrides, final_alpha):
    summary = train(compose_cfg(*FAST, *overrides), tmp_path)
    assert summary["steps"] == 6 and summary["final_alpha"] == pytest.approx(final_alpha)
    assert read_metrics(tmp_path)[-1]["alpha"] == pytest.approx(final_alpha)


def test_a_constant_alpha_is_the_alpha_the_run_ended_at(trained_run):
    cfg = compose_config(*SHARED_RUN)
    assert cfg.noise.schedule == "constant"
    summary = json.loads((trained_run / "summary.json").read_text())
    assert summary["steps"] == cfg.trainer.max_steps and summary["final_alpha"] == cfg.optimizer.alpha
    assert read_metrics(trained_run)[-1]["alpha"] == cfg.optimizer.alpha


def test_a_run_without_noise_has_no_final_alpha(muon_run):
    run_dir, summary = muon_run
    assert "final_alpha" not in summary and "alpha" not in read_metrics(run_dir)[-1]


def test_the_final_eval_covers_the_whole_validation_split(compose_cfg, tmp_path):
    """Evals during training read eval_batches (1 here); the last one, final_val_loss, the whole split."""
    from orthonoise.lm.data import load_corpus

    cfg = compose_cfg(*FAST, "trainer.max_steps=2", "trainer.final_eval_batches=0")  # 0: the default
    n_val = len(load_corpus(cfg.data).val)
    summary = train(cfg, tmp_path / "whole")
    assert n_val > 10 * cfg.hardware.batch_size and summary["final_eval_tokens"] == n_val * cfg.data.seq_len
    small = train(compose_cfg(*FAST, "trainer.max_steps=2", "trainer.final_eval_batches=1"), tmp_path / "small")
    assert small["final_eval_tokens"] == cfg.hardware.batch_size * cfg.data.seq_len
    assert small["final_val_loss"] != summary["final_val_loss"]  # same weights (same seed), another sample


def test_nan_loss_ends_the_run_as_diverged_with_its_step(compose_cfg, tmp_path, monkeypatch):
    poison_loss_at(monkeypatch, {3})
    summary = train(compose_cfg(*FAST), tmp_path)
    assert summary["status"] == "diverged" and summary["steps"] == 3
    assert summary["diverged"] == "non-finite loss at step 3"
    last = read_metrics(tmp_path)[-1]
    assert last == {**last, "step": 3, "train_loss": None, "skipped": True}
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "diverged"


def test_nan_gradient_is_caught_even_when_the_loss_is_finite(compose_cfg, tmp_path, monkeypatch):
    from orthonoise import trainer

    real_build = trainer.build_model

    def build_model(*args, **kwargs):  # NaN into one gradient only: the loss itself stays finite
        model = real_build(*args, **kwargs)
        model.get_input_embeddings().weight.register_hook(lambda g: torch.full_like(g, float("nan")))
        return model

    monkeypatch.setattr(trainer, "build_model", build_model)
    summary = train(compose_cfg(*FAST), tmp_path)
    assert summary["status"] == "diverged" and summary["diverged"] == "non-finite gradient norm at step 1"
    assert math.isfinite(read_metrics(tmp_path)[-1]["train_loss"])


def test_nonfinite_steps_can_be_skipped_up_to_a_limit(compose_cfg, tmp_path, monkeypatch):
    poison_loss_at(monkeypatch, {2, 4})
    summary = train(compose_cfg(*FAST, "trainer.skip_nonfinite=2"), tmp_path)
    assert summary["status"] == "completed" and summary["steps"] == 6 and summary["skipped_steps"] == 2
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows if r.get("skipped")] == [2, 4]
    assert all(math.isfinite(r["val_loss"]) for r in rows if "val_loss" in r)  # the weights were never poisoned
    model = torch.load(checkpoint_paths(tmp_path)[-1], weights_only=True)["model"]
    assert all(torch.isfinite(t).all() for t in model.values())


def test_one_skip_too_many_ends_the_run(compose_cfg, tmp_path, monkeypatch):
    poison_loss_at(monkeypatch, {2, 4})
    summary = train(compose_cfg(*FAST, "trainer.skip_nonfinite=1"), tmp_path)
    assert summary["status"] == "diverged" and summary["steps"] == 4 and summary["skipped_steps"] == 2


def test_adamw_baseline_trains_every_parameter_with_adamw(compose_cfg, tmp_path):
    summary = train(compose_cfg(*FAST, "optimizer=adamw"), tmp_path)
    assert summary["status"] == "completed"


def test_a_loss_above_the_limit_is_divergence(compose_cfg, tmp_path):
    summary = train(compose_cfg(*FAST, "trainer.diverge_loss=1.0"), tmp_path)
    assert summary["status"] == "diverged" and summary["steps"] == 1
    assert summary["diverged"].startswith("train loss") and "trainer.diverge_loss" in summary["diverged"]


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


def evaluations_return(monkeypatch, later):
    """The real step-0 validation loss, then later(first) at every evaluation after it."""
    from orthonoise import trainer

    real, first = trainer.evaluate, []

    def evaluate(*args):
        if first:
            return later(first[0])
        first.append(real(*args))
        return first[0]

    monkeypatch.setattr(trainer, "evaluate", evaluate)


@pytest.mark.parametrize("later,cause", [
    (lambda first: 22 * first, "validation loss .* above trainer.diverge_val_ratio=2.0 × its first value .* step 3"),
    (lambda first: float("nan"), "non-finite validation loss at step 3"),
    (lambda first: math.log(8192), r"collapse: validation loss at ln\(8192\) for 1 evaluations in a row"),
])
def test_an_exploding_or_collapsed_validation_loss_is_divergence(compose_cfg, tmp_path, monkeypatch, later, cause):
    evaluations_return(monkeypatch, later)
    summary = train(compose_cfg(*FAST, "trainer.collapse_evals=1"), tmp_path)
    assert summary["status"] == "diverged" and summary["steps"] == 3
    assert re.search(cause, summary["diverged"]), summary["diverged"]


def test_a_gradient_that_stays_exactly_zero_is_a_collapse(compose_cfg, tmp_path, monkeypatch):
    from orthonoise import trainer

    real_build = trainer.build_model

    def build_model(*args, **kwargs):  # every gradient zeroed: nothing can learn, the loss stays finite
        model = real_build(*args, **kwargs)
        for p in model.parameters():
            p.register_hook(torch.zeros_like)
        return model

    monkeypatch.setattr(trainer, "build_model", build_model)
    summary = train(compose_cfg(*FAST, "trainer.collapse_evals=2"), tmp_path)
    assert summary["status"] == "diverged" and summary["steps"] == 6
    assert summary["diverged"].startswith("collapse: gradient norm exactly 0 at every step for 2 evaluations")


@pytest.mark.parametrize("override,message", [
    ("trainer.diverge_val_ratio=0.5", "trainer.diverge_val_ratio=0.5 is out of range: must be a number > 1"),
    ("trainer.collapse_evals=-1", "trainer.collapse_evals=-1 is out of range: must be an integer ≥ 0"),
])
def test_divergence_limits_are_checked_before_compute(compose_cfg, tmp_path, override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        train(compose_cfg(*FAST, override), tmp_path)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_metrics_deleted_mid_run_are_rewritten_and_the_summary_says_so(compose_cfg, tmp_path, monkeypatch):
    from orthonoise import trainer

    calls, real = [], trainer.gradient_norm

    def delete_at_step_4(*args):
        calls.append(1)
        if len(calls) == 4:
            (tmp_path / "metrics.jsonl").unlink()
        return real(*args)

    monkeypatch.setattr(trainer, "gradient_norm", delete_at_step_4)
    summary = train(compose_cfg(*FAST), tmp_path)
    assert [row["step"] for row in read_metrics(tmp_path)] == list(range(7))
    (note,) = summary["metrics_restored"]
    assert note.startswith("at step 4: metrics.jsonl was deleted")
