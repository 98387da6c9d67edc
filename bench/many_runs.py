"""`status` and the report over many run directories: the seconds each takes.

    python bench/many_runs.py                 # 2,000 fake runs in a temp dir
    python bench/many_runs.py --runs 500 --keep DIR

Writes the run directories with the report tests' writer (tests/report/fake_runs.py: the trainer's files through
orthonoise/run/rundir.py), their `.hydra/` records as long as Hydra writes them (composed from conf/): five
optimizers × 400 seeds in one sweep dir, each a 1,000-step run logging every 10 steps with an eval every 50, a
tenth of them still running (no summary). Then times, each as its own process as a user
types it, `python -m orthonoise.status DIR` and `python -m orthonoise.report DIR`, and, in this process, the
report's collection alone (orthonoise.report.collect.load_runs plus reading every run's figures). Prints wall and
CPU seconds (the CPU figure does not depend on what else the machine runs).
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from orthonoise.run.rundir import HYDRA_DIR, Status  # noqa: E402
from tests.report.fake_runs import linear_curve, write_run  # noqa: E402

OPTIMIZERS = ("muon", "orthonoise", "isotropic", "nolah", "adamw")


def composed_records() -> dict[str, tuple[dict, dict]]:
    """{optimizer: (config.yaml, hydra.yaml)} as Hydra writes them for `train.py optimizer=<name>`: the fake
    runs' small records are merged into these, so each run's YAML is as long as a real run's."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from orthonoise.run.rundir import register_resolvers

    register_resolvers()
    records = {}
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for optimizer in OPTIMIZERS:
            cfg = OmegaConf.to_container(compose("config", overrides=[f"optimizer={optimizer}"],
                                                 return_hydra_config=True), resolve=False)
            records[optimizer] = cfg, {"hydra": cfg.pop("hydra")}
    return records


def write_runs(root: Path, n: int) -> None:
    sweep, records = root / "sweep", composed_records()
    for i in range(n):
        optimizer, seed = OPTIMIZERS[i % len(OPTIMIZERS)], i // len(OPTIMIZERS) + 1
        alpha = 1e-3 if optimizer in ("orthonoise", "isotropic") else None
        status = None if i % 10 == 9 else Status.COMPLETED
        run = write_run(sweep, f"optimizer={optimizer},seed={seed}", seed=seed, optimizer=optimizer, alpha=alpha,
                        val=linear_curve(3.0 + 0.001 * (i % 7), max_steps=1000), status=status, phase="3.1",
                        max_steps=1000)
        config, hydra = records[optimizer]
        fake = yaml.safe_load((run / HYDRA_DIR / "config.yaml").read_text())
        fake["trainer"] = {**config["trainer"], **fake["trainer"]}
        (run / HYDRA_DIR / "config.yaml").write_text(yaml.safe_dump({**config, **fake}))
        hydra["hydra"]["runtime"]["choices"].update(optimizer=optimizer)
        (run / HYDRA_DIR / "hydra.yaml").write_text(yaml.safe_dump(hydra))


def child_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_command(*args: str) -> tuple[float, float, int]:
    """(wall s, CPU s, exit code) of `python -m <args>`."""
    cpu, start = child_cpu_s(), time.perf_counter()
    result = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True)
    return time.perf_counter() - start, child_cpu_s() - cpu, result.returncode


def timed_collection(root: Path) -> tuple[float, float]:
    """(wall s, CPU s) of reading every run as the report does: its records and the figures it tabulates."""
    from orthonoise.report.collect import load_runs

    cpu, start = time.process_time(), time.perf_counter()
    runs = load_runs(root)
    for run in runs:
        (run.state, run.final_val_loss, run.best_val_loss, run.last_eff_rank, run.tokens_per_s, run.steps)
    return time.perf_counter() - start, time.process_time() - cpu


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--keep", type=Path, help="write the runs here and leave them (default: a temp dir)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        start = time.perf_counter()
        write_runs(root, args.runs)
        print(f"wrote {args.runs} run directories in {time.perf_counter() - start:.1f} s under {root}")
        wall, cpu, rc = timed_command("orthonoise.status", str(root))
        print(f"status:            {wall:6.2f} s wall  {cpu:6.2f} s CPU  (exit {rc})")
        wall, cpu = timed_collection(root)
        print(f"report collection: {wall:6.2f} s wall  {cpu:6.2f} s CPU")
        wall, cpu, rc = timed_command("orthonoise.report", str(root / "sweep"))
        print(f"report (whole):    {wall:6.2f} s wall  {cpu:6.2f} s CPU  (exit {rc})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
