"""Every sweep file composes and expands to exactly the runs the plan lists (SPEC.md, "The experiment plan")."""
from pathlib import Path

import pytest

from orthonoise.plan import ROOT, expand
from orthonoise.validate import validate_settings

TINY = ["+preset=tiny", "model=tiny", "data=local", "hardware=cpu", "logger=disabled"]

# sweep -> (jobs, phase, model, hardware, steps)
PLAN = {
    "phase31": (8, "3.1", "granite-350m", "h100", 500),
    "phase32_alpha": (20, "3.2", "granite-350m", "h100", 500),
    "phase32_schedule": (6, "3.2", "granite-350m", "h100", 500),
    "phase32_adaptive": (4, "3.2", "granite-350m", "h100", 500),
    "phase33_finetune": (6, "3.3", "granite-1b", "h100", 500),
    "phase33_scratch": (4, "3.3", "granite-1b", "h100x4", 1000),
    "phase4_350m": (2, "4", "granite-350m", "h100x4", 5000),
    "phase4_1b": (2, "4", "granite-1b", "h100x4", 5000),
}


def test_every_grid_sweep_file_is_in_the_plan():
    files = {p.stem for p in (ROOT / "sweeps").glob("*.yaml")} - {"optuna"}
    assert files == set(PLAN)


@pytest.mark.parametrize("sweep", sorted(PLAN))
def test_sweep_expands_to_the_planned_runs(sweep):
    n, phase, model, hardware, steps = PLAN[sweep]
    jobs = expand(sweep, [])
    assert len(jobs) == n
    dirs = {Path(cfg.hydra.sweep.dir) / cfg.hydra.sweep.subdir for _, cfg in jobs}
    assert len(dirs) == n, "every job has its own run directory"
    for _, cfg in jobs:
        assert str(cfg.phase) == phase
        assert (cfg.model.preset, cfg.hardware.name, cfg.trainer.max_steps) == (model, hardware, steps)
        assert cfg.hydra.sweep.dir == f"outputs/sweeps/{sweep}"  # deterministic: a relaunch finds the same dirs
        assert cfg.model.pretrained == ("scratch" not in sweep and "phase4" not in sweep)
        assert cfg.data.name == "fineweb-edu" and cfg.optimizer.lr == 1e-4
        validate_settings(cfg)  # every job passes the checks train.py makes before any compute


def optimizer_of(cfg):
    name = cfg.optimizer._target_.rsplit(".", 1)[-1]
    return name, cfg.optimizer.get("alpha"), cfg.noise.schedule if name != "Muon" else None


def test_phase31_arms_and_seeds():
    runs = sorted((optimizer_of(cfg), cfg.seed) for _, cfg in expand("phase31", []))
    arms = {("Muon", None, None), ("OrthoNoise", 1e-3, "constant"), ("IsotropicNoise", 1e-3, "constant"),
            ("OrthoNoise", 1e-2, "linear")}
    assert runs == sorted((arm, seed) for arm in arms for seed in (1, 2))


def test_phase32_alpha_grid():
    runs = {(cfg.optimizer.alpha, cfg.noise.schedule, cfg.seed) for _, cfg in expand("phase32_alpha", [])}
    assert runs == {(a, s, seed) for a in (1e-4, 1e-3, 5e-3, 1e-2, 5e-2) for s in ("constant", "linear")
                    for seed in (1, 2)}


def test_phase32_schedule_and_adaptive():
    schedules = {(cfg.optimizer.alpha, cfg.noise.schedule, cfg.noise.end_factor, cfg.noise.steps)
                 for _, cfg in expand("phase32_schedule", [])}
    assert schedules == {(1e-2, s, 0.1, 1000) for s in ("constant", "linear", "exponential")}
    thresholds = sorted(cfg.optimizer.rank_threshold for _, cfg in expand("phase32_adaptive", []))
    assert thresholds == [0.3, 0.3, 0.7, 0.7]


def test_phase33_and_4_compare_baseline_with_orthonoise():
    for sweep, seeds in [("phase33_finetune", 3), ("phase33_scratch", 2), ("phase4_350m", 1), ("phase4_1b", 1)]:
        names = sorted(optimizer_of(cfg)[0] for _, cfg in expand(sweep, []))
        assert names == ["Muon"] * seeds + ["OrthoNoise"] * seeds, sweep


def test_tiny_preset_keeps_the_structure_on_this_cpu():
    real = expand("phase33_scratch", [])
    tiny = expand("phase33_scratch", TINY)
    assert [cfg.hydra.sweep.subdir for _, cfg in tiny] == [cfg.hydra.sweep.subdir for _, cfg in real]
    for _, cfg in tiny:
        assert cfg.hydra.sweep.dir == "outputs/sweeps/phase33_scratch-tiny"
        assert (cfg.model.preset, cfg.hardware.name, cfg.hardware.world_size) == ("tiny", "cpu", 1)
        assert not cfg.model.pretrained and cfg.trainer.max_steps <= 50


def test_overriding_a_group_without_the_preset_changes_the_run_dirs():
    """model=tiny alone must not land in (and later be skipped as) the real sweep's run directories."""
    subdirs = [cfg.hydra.sweep.subdir for _, cfg in expand("phase31", ["model=tiny"])]
    assert all("model=tiny" in s for s in subdirs)


@pytest.mark.parametrize("launcher,tasks,gpus", [("slurm_h100", 1, 1), ("slurm_h100x4", 4, 4),
                                                 ("local_h100", 1, 1), ("local_h100x4", 4, 4)])
def test_launchers(launcher, tasks, gpus):
    (_, cfg), *_ = expand("phase31", [f"hydra/launcher={launcher}", "hydra.launcher.timeout_min=30"])
    assert (cfg.hydra.launcher.tasks_per_node, cfg.hydra.launcher.gpus_per_node) == (tasks, gpus)
    assert cfg.hydra.launcher.timeout_min == 30
    # local launchers have no array_parallelism: one job at a time, or they would share the GPUs
    assert cfg.hydra.sweeper.max_batch_size == (1 if launcher.startswith("local") else cfg.hydra.launcher.array_parallelism)
    if launcher.startswith("slurm"):
        assert cfg.hydra.launcher.signal_delay_s > 0 and cfg.hydra.launcher.max_num_timeout > 0


def test_slurm_partition_and_account_are_overridable():
    (_, cfg), *_ = expand("phase33_scratch", ["hydra/launcher=slurm_h100x4", "hydra.launcher.partition=gpu",
                                              "hydra.launcher.account=lab"])
    assert (cfg.hydra.launcher.partition, cfg.hydra.launcher.account) == ("gpu", "lab")


def test_optuna_sweep_composes():
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="optional extra: pip install -e '.[optuna]'")
    from orthonoise.plan import load_hydra
    from hydra.types import RunMode

    cfg = load_hydra().config_loader.load_configuration("optuna", [], run_mode=RunMode.MULTIRUN)
    assert cfg.hydra.sweeper.direction == "minimize" and list(cfg.objective.seeds) == [1, 2]
    assert set(cfg.hydra.sweeper.params) == {"optimizer.alpha", "noise", "optimizer.rank_threshold"}
