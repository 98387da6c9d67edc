"""Run directories named by the overrides: the same command, the same directory."""
from omegaconf import OmegaConf

from orthonoise.run.rundir import MAX_NAME, run_name


def test_names_are_the_overrides_made_safe():
    assert run_name("") == "default"
    assert run_name("optimizer=orthonoise,seed=1") == "optimizer=orthonoise,seed=1"
    assert run_name("data.path=/data/my texts") == "data.path=_data_my texts"  # one directory, not three


def test_long_names_are_bounded_and_stay_distinct():
    a, b = run_name("x=" + "1" * 300), run_name("x=" + "1" * 299 + "2")
    assert len(a.encode()) <= MAX_NAME and len(b.encode()) <= MAX_NAME and a != b
    assert run_name("x=" + "é" * 200).encode().decode()  # never cut inside a character


def test_the_config_names_single_runs_and_multirun_jobs_alike(compose_cfg):
    cfg = compose_cfg("seed=3", "optimizer=adamw", return_hydra_config=True)
    cfg.hydra.job.override_dirname = "optimizer=adamw,seed=3"  # what Hydra sets at launch
    assert OmegaConf.select(cfg, "hydra.run.dir") == "outputs/runs/optimizer=adamw,seed=3"
    sweep = cfg.hydra.sweep
    assert f"{sweep.dir}/{sweep.subdir}" == "outputs/runs/optimizer=adamw,seed=3"
