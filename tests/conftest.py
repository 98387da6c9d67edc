"""Shared fixtures: Hydra compose with the project's conf/, fast overrides for real training runs, bench scripts."""
import importlib.util
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# A few real optimisation steps on the tiny model, in seconds.
FAST = [
    "trainer.max_steps=6", "trainer.eval_every=3", "trainer.eval_batches=1", "trainer.log_every=1",
    "trainer.checkpoint_every=3", "trainer.warmup_steps=2", "trainer.progress_bar=false",
    "hardware.batch_size=4", "logger=disabled",
]


@pytest.fixture
def compose_cfg():
    """compose_cfg(*overrides) -> the composed config, as `python train.py <overrides>` would see it."""

    def _compose(*overrides, return_hydra_config=False):
        GlobalHydra.instance().clear()  # whatever an earlier test left behind
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose("config", overrides=list(overrides), return_hydra_config=return_hydra_config)

    return _compose



def load_bench(name: str):
    """bench/<name>.py as a module (the bench scripts are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
