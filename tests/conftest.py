"""Shared fixtures: Hydra compose with the project's conf/, fast overrides for real training runs, bench scripts."""
import importlib.util
import json
import subprocess
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from orthonoise.run.rundir import METRICS_FILE, register_resolvers
from tests.tiers import pytest_addoption, pytest_collection_modifyitems, pytest_runtest_call  # noqa: F401 (hooks)

register_resolvers()  # as train.py does before Hydra composes conf/

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# A few real optimisation steps on the tiny model, in seconds. (The final eval reads one batch too: the whole
# validation split, its default, costs more than such a run's training.)
FAST = [
    "trainer.max_steps=6", "trainer.eval_every=3", "trainer.eval_batches=1", "trainer.final_eval_batches=1",
    "trainer.log_every=1",
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


def read_metrics(run_dir: Path) -> list[dict]:
    """Every line of the run's metrics file, in file order. Not orthonoise.run.rundir.read_metrics: that reader keeps
    the last line of a repeated step (what the report wants), which would hide the duplicated rows a resumed run
    must not write, and skips malformed lines the trainer must not write either."""
    return [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines()]


TIMING = {"step_time_s", "tokens_per_s", "fwd_bwd_s", "optimizer_s", "mfu", "peak_mem_gib"}


def without_timing(rows: list[dict]) -> list[dict]:
    """Metric rows minus the wall-clock fields, which no two runs share."""
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def wait_for_step(proc: subprocess.Popen, metrics: Path, step: int, timeout_s: float = 240) -> int:
    """Poll a training subprocess's metrics.jsonl until it has logged `step` (or later); returns the step seen."""
    deadline = time.time() + timeout_s
    while True:
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        seen = json.loads(lines[-1])["step"] if lines and lines[-1].endswith("}") else -1
        if seen >= step:
            return seen
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.02)
