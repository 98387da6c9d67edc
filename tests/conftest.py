"""Shared fixtures: Hydra compose with the project's conf/, fast overrides for real training runs, bench scripts."""
import importlib.util
import json
import subprocess
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from orthonoise.run.rundir import EVAL_S, METRICS_FILE, RANK_S, register_resolvers
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


# The one run trained for the tests that only read what a run leaves (summary, metrics, checkpoints): a tiny
# OrthoNoise run, with a nominal peak so that its rows carry MFU on a CPU.
SHARED_RUN = [*FAST, "optimizer=orthonoise", "+hardware.peak_tflops=0.001"]


def compose_config(*overrides, return_hydra_config=False):
    """The composed config, as `python train.py <overrides>` would see it."""
    GlobalHydra.instance().clear()  # whatever an earlier test left behind
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=return_hydra_config)


@pytest.fixture
def compose_cfg():
    """compose_cfg(*overrides) -> compose_config(*overrides), for tests that take it as a fixture."""
    return compose_config


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """The directory of SHARED_RUN, trained once per session. Read it; a test that writes (relaunches, resumes)
    works on a copy: shutil.copytree(trained_run, tmp_path / "run")."""
    from orthonoise.trainer import train

    run_dir = tmp_path_factory.mktemp("shared") / "run"
    train(compose_config(*SHARED_RUN), run_dir)
    return run_dir


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


TIMING = {"step_time_s", "tokens_per_s", "fwd_bwd_s", "optimizer_s", "mfu", "peak_mem_gib", EVAL_S, RANK_S}


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
