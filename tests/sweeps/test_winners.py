"""Winners as data: the 3.2 report writes winners.json, a later phase composes its arms from it through a generated
config dir under outputs/, and nothing under sweeps/ (tracked) is written. A later phase without winners refuses
at once, in one line that names the command that makes them."""
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from report.fake_runs import write_run

from orthonoise.report.__main__ import main as report_main
from orthonoise.sweep.plan import ROOT, expand, plan
from orthonoise.sweep.winners import (
    CARRIED,
    CONFIRMATION,
    SCREENING,
    SHOWN,
    Arm,
    WinnersError,
    main,
    read_winners,
    write_winners,
)

from .arms import BASELINE, RUNNER_UP, WINNER, generated_arms


def test_round_trip(tmp_path):
    path = tmp_path / "winners.json"
    write_winners(path, SCREENING, [WINNER, RUNNER_UP], BASELINE, ["outputs/sweeps/phase32_alpha"])
    assert read_winners(path) == (SCREENING, [WINNER, RUNNER_UP], BASELINE, ["outputs/sweeps/phase32_alpha"])
    assert json.loads(path.read_text())["format"] == 2


def test_confirmation_runs_the_winners_the_control_at_the_winners_settings_and_the_tuned_baseline(tmp_path):
    searchpath = generated_arms(tmp_path, (WINNER, RUNNER_UP))
    jobs = plan("phase32_confirm", searchpath, history=tmp_path)
    assert len(jobs) == 4 * 5 and {j.seed for j in jobs} == {101, 102, 103, 104, 105}
    arms = {}
    for overrides, cfg in expand("phase32_confirm", searchpath):
        arm = next(o.split("=")[1] for o in overrides if o.startswith("arm="))
        arms[arm] = (cfg.optimizer._target_.rsplit(".", 1)[1], cfg.optimizer.lr, cfg.optimizer.get("alpha"),
                     cfg.optimizer.get("rank_threshold"), cfg.noise.schedule)
        assert list(cfg.plan.declared_differences) == ["optimizer.lr"] and cfg.plan.stage == CONFIRMATION
    assert arms == {
        "orthonoise_best": ("OrthoNoise", 1e-4, 0.005, None, "linear"),
        "orthonoise_runner_up": ("OrthoNoise", 1e-4, 0.001, 0.3, "constant"),
        "isotropic_best": ("IsotropicNoise", 1e-4, 0.005, None, "linear"),
        "baseline_best": ("Muon", 0.0002, None, None, "constant"),
    }


def test_one_winner_drops_an_earlier_runner_up(tmp_path):
    generated_arms(tmp_path, (WINNER, RUNNER_UP))
    searchpath = generated_arms(tmp_path, (WINNER,))
    assert not (tmp_path / "arms" / "arm" / "orthonoise_runner_up.yaml").exists()
    assert len(plan("phase32_confirm", searchpath, history=tmp_path)) == 3 * 5


def test_an_arm_from_a_finished_run(tmp_path):
    run = tmp_path / "optimizer.alpha=0.005,noise=linear,seed=1"
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save({"optimizer": {"lr": 1e-4, "alpha": 0.005, "rank_threshold": None}, "seed": 1},
                   run / ".hydra" / "config.yaml")
    OmegaConf.save({"hydra": {"runtime": {"choices": {"optimizer": "orthonoise", "noise": "linear", "model": "x"}}}},
                   run / ".hydra" / "hydra.yaml")
    arm = Arm.from_run_dir(run, "best")
    assert arm == Arm("best", {"optimizer": "orthonoise", "noise": "linear"},
                      {"optimizer.lr": 1e-4, "optimizer.alpha": 0.005, "optimizer.rank_threshold": None})


@pytest.mark.parametrize("document,message", [
    ({"format": 1}, "format=1 is not supported"),
    ({"format": 2, "stage": "screening", "winners": [], "baseline": {"label": "b", "choices": {"optimizer": "muon"}}},
     "0 given"),
    ({"format": 2, "stage": "screening", "winners": [{"label": "w", "choices": {"optimizer": "muon"}}],
      "baseline": {"label": "b", "choices": {"optimizer": "muon"}}}, "must be a noise-injecting optimizer"),
    ({"format": 2, "stage": "later", "winners": [{"label": "w", "choices": {"optimizer": "orthonoise"}}],
      "baseline": {"label": "b", "choices": {"optimizer": "muon"}}}, "stage='later' is not supported"),
    ({"format": 2, "winners": [{"label": "w"}], "baseline": {}}, "needs stage, winners and baseline"),
])
def test_bad_winners_files_are_named(tmp_path, document, message):
    path = tmp_path / "winners.json"
    path.write_text(json.dumps(document))
    with pytest.raises(WinnersError, match=message):
        read_winners(path)


# ---- the report writes them ----

def fake_screening(root: Path, gains: dict[float, float], seeds=(1, 2, 3, 4), lrs=(1e-4, 2e-4)) -> list[Path]:
    """Two 3.2 sweep dirs: Muon at two learning rates (2e-4 the better by 0.5%), OrthoNoise configs whose final loss
    is the baseline's × (1 − gain) with a little seed noise shared by every arm (a seed is a block)."""
    base, alpha = root / "phase32_baseline", root / "phase32_alpha"
    for seed in seeds:
        block = 0.002 * ((seed * 7) % 5 - 2)
        for lr in lrs:
            run = write_run(base, f"optimizer.lr={lr},seed={seed}", seed=seed, phase="3.2",
                            val={200: 3.0 * (1 + block) * (0.995 if lr == 2e-4 else 1.0)})
            _set(run, "optimizer.lr", lr)
        for a, gain in gains.items():
            jitter = 0.0005 * ((seed * 3 + int(a * 1e4)) % 3 - 1)
            write_run(alpha, f"optimizer.alpha={a},seed={seed}", seed=seed, phase="3.2", optimizer="orthonoise",
                      alpha=a, val={200: 3.0 * (1 + block) * (1 - gain) * (1 + jitter)})
    return [alpha, base]


def _set(run: Path, key: str, value) -> None:
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    OmegaConf.update(cfg, key, value)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")


def test_the_32_report_writes_winners_best_first_with_the_best_lr_baseline(tmp_path):
    dirs = fake_screening(tmp_path, {1e-3: 0.03, 5e-3: 0.05, 1e-2: 0.0})
    assert report_main([str(d) for d in dirs]) == 0
    stage, winners, baseline, source = read_winners(dirs[0] / "winners.json")
    assert stage == SCREENING and source == [str(d.resolve()) for d in dirs]
    assert [w.values["optimizer.alpha"] for w in winners] == [5e-3, 1e-3]  # both shown better, best Δ first
    assert all(w.status == SHOWN for w in winners)
    assert baseline.values["optimizer.lr"] == 2e-4  # the best of the learning-rate grid
    report = (dirs[0] / "report.md").read_text()
    assert "## Winners (screening)" in report and "Rule: Baseline: the Muon group with the lowest mean" in report


def test_when_none_is_shown_better_the_best_estimate_is_carried_and_says_so(tmp_path):
    dirs = fake_screening(tmp_path, {1e-3: 0.0, 5e-3: -0.01})
    assert report_main([str(d) for d in dirs]) == 0
    _, winners, _, _ = read_winners(dirs[0] / "winners.json")
    assert [w.values["optimizer.alpha"] for w in winners] == [1e-3]
    assert winners[0].status == CARRIED[SCREENING] == "not shown better, carried for confirmation"
    assert "not shown better, carried for confirmation" in (dirs[0] / "report.md").read_text()


def test_reports_of_other_phases_write_no_winners(tmp_path):
    for seed in (1, 2):
        write_run(tmp_path / "p31", f"optimizer=muon,seed={seed}", seed=seed, phase="3.1", val={200: 3.0})
        write_run(tmp_path / "p31", f"optimizer=orthonoise,seed={seed}", seed=seed, phase="3.1",
                  optimizer="orthonoise", alpha=1e-3, val={200: 3.0})
    assert report_main([str(tmp_path / "p31")]) == 0
    assert not (tmp_path / "p31" / "winners.json").exists()


# ---- a later phase reads them, or refuses at once ----

def make(*args: str, timeout: int = 60) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    start = time.monotonic()
    result = subprocess.run(["make", "--no-print-directory", "-o", ".venv/.installed", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=timeout)
    return result, time.monotonic() - start


def test_confirm_without_winners_refuses_in_one_line_within_seconds(tmp_path):
    """Nothing under outputs/sweeps/*-<preset>: the error names the missing step and the command that makes it."""
    result, seconds = make("phase32-confirm", "PRESET=nowhere-tiny-test", "BUDGET_USD=")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode != 0 and len(errors) == 1, result.stderr
    assert "no screening winners" in errors[0] and "make phase32 PRESET=nowhere-tiny-test" in errors[0]
    assert 'make report SWEEP="outputs/sweeps/phase32_baseline' in errors[0]
    assert seconds < 5


def test_cli_writes_the_arms_of_the_newest_winners_of_its_stage_outside_sweeps(tmp_path):
    before = {p: p.read_bytes() for p in (ROOT / "sweeps").rglob("*.yaml")}
    old, new = tmp_path / "phase32_alpha-tiny", tmp_path / "phase32_baseline-tiny"
    write_winners(old / "winners.json", SCREENING, [RUNNER_UP], BASELINE, [])
    time.sleep(0.01)
    write_winners(new / "winners.json", SCREENING, [WINNER], BASELINE, [])
    write_winners(tmp_path / "confirm" / "winners.json", CONFIRMATION, [RUNNER_UP], BASELINE, [])
    out = tmp_path / "arms"
    assert main(["arms", "--stage", SCREENING, "--out", str(out), str(old), str(new)]) == 0
    assert "alpha: 0.005" in (out / "arm" / "orthonoise_best.yaml").read_text()
    assert main(["arms", "--stage", SCREENING, "--out", str(out), str(tmp_path / "confirm")]) == 2
    assert {p: p.read_bytes() for p in (ROOT / "sweeps").rglob("*.yaml")} == before  # no tracked file written
    assert not list((ROOT / "sweeps").rglob("*_best.yaml"))
