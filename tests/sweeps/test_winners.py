"""Phase 3.2's winners file becomes the confirmation sweep's arms (and the config 3.3 and 4 carry), not a hand edit."""
import json
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from orthonoise.sweep.plan import ROOT, expand, plan
from orthonoise.sweep.winners import Arm, WinnersError, apply, main, read_winners, write_winners

WINNER = Arm("alpha=0.005 linear", {"optimizer": "orthonoise", "noise": "linear"}, {"optimizer.alpha": 0.005})
RUNNER_UP = Arm("alpha=0.001 rank 0.3", {"optimizer": "orthonoise", "noise": "constant"},
                {"optimizer.alpha": 0.001, "optimizer.rank_threshold": 0.3})
BASELINE = Arm("lr=0.0002", {"optimizer": "muon"}, {"optimizer.lr": 0.0002})


@pytest.fixture
def sweeps(tmp_path):
    """A copy of sweeps/ to write arms into (the repository's placeholders stay as committed)."""
    return Path(shutil.copytree(ROOT / "sweeps", tmp_path / "sweeps"))


def test_round_trip(tmp_path):
    path = tmp_path / "winners.json"
    write_winners(path, [WINNER, RUNNER_UP], BASELINE, ["outputs/sweeps/phase32_alpha"])
    assert read_winners(path) == ([WINNER, RUNNER_UP], BASELINE, ["outputs/sweeps/phase32_alpha"])
    assert json.loads(path.read_text())["format"] == 1


def test_confirmation_runs_the_winners_the_control_at_the_winners_settings_and_the_tuned_baseline(tmp_path, sweeps):
    path = tmp_path / "winners.json"
    write_winners(path, [WINNER, RUNNER_UP], BASELINE, ["outputs/sweeps/phase32_alpha"])
    assert apply(path, sweeps) == ["orthonoise_best", "orthonoise_runner_up", "isotropic_best", "baseline_best"]
    jobs = plan("phase32_confirm", [], history=tmp_path, sweeps_dir=sweeps)
    assert len(jobs) == 4 * 5 and {j.seed for j in jobs} == {101, 102, 103, 104, 105}
    arms = {}
    for overrides, cfg in expand("phase32_confirm", [], sweeps):
        arm = next(o.split("=")[1] for o in overrides if o.startswith("arm="))
        arms[arm] = (cfg.optimizer._target_.rsplit(".", 1)[1], cfg.optimizer.lr, cfg.optimizer.get("alpha"),
                     cfg.optimizer.get("rank_threshold"), cfg.noise.schedule)
    assert arms == {
        "orthonoise_best": ("OrthoNoise", 1e-4, 0.005, None, "linear"),
        "orthonoise_runner_up": ("OrthoNoise", 1e-4, 0.001, 0.3, "constant"),
        "isotropic_best": ("IsotropicNoise", 1e-4, 0.005, None, "linear"),
        "baseline_best": ("Muon", 0.0002, None, None, "constant"),
    }
    assert "do not edit by hand" in (sweeps / "arm" / "orthonoise_best.yaml").read_text()


def test_one_winner_drops_an_earlier_runner_up(tmp_path, sweeps):
    path = tmp_path / "winners.json"
    write_winners(path, [WINNER, RUNNER_UP], BASELINE, [])
    apply(path, sweeps)
    write_winners(path, [WINNER], BASELINE, [])
    assert apply(path, sweeps) == ["orthonoise_best", "isotropic_best", "baseline_best"]
    assert not (sweeps / "arm" / "orthonoise_runner_up.yaml").exists()
    assert len(plan("phase32_confirm", [], history=tmp_path, sweeps_dir=sweeps)) == 3 * 5


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
    ({"format": 2}, "format=2 is not supported"),
    ({"format": 1, "winners": [], "baseline": {"label": "b", "choices": {"optimizer": "muon"}}}, "0 given"),
    ({"format": 1, "winners": [{"label": "w", "choices": {"optimizer": "muon"}}],
      "baseline": {"label": "b", "choices": {"optimizer": "muon"}}}, "must be a noise-injecting optimizer"),
    ({"format": 1, "winners": [{"label": "w"}], "baseline": {}}, "each arm needs label, choices and values"),
])
def test_bad_winners_files_are_named(tmp_path, document, message):
    path = tmp_path / "winners.json"
    path.write_text(json.dumps(document))
    with pytest.raises(WinnersError, match=message):
        read_winners(path)


def test_cli_without_a_winners_file_says_so_in_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "absent.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: winners file") and "run the phase 3.2 report first" in err[0]
