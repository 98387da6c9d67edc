"""What a job costs, from measurements only: seconds per step, the evaluations and start-up beside the steps, and
what the plan's runs under outputs/ already spent. A figure nobody measured is never read as 0: the job is
"unpriced" (no step time) or its estimate names the parts left out ("unmeasured: start-up").

Seconds per step, most specific first: the median wall_time_s / steps of earlier runs under outputs/ with the same
model preset, optimizer and hardware (their wall time already holds their evals); else the measured table
bench/results/step_times.yaml (`measured`, which names where each figure was measured), plus that file's
`overheads` for the same model and hardware: start-up, one validation pass, one effective-rank pass (paid at every
eval, and every `rank_every` steps by a rank_threshold run), the final whole-split eval.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from orthonoise import REPO_ROOT
from orthonoise.run.rundir import SUMMARY_FILE, read_hydra_record, read_summary

STEP_TIMES = REPO_ROOT / "bench" / "results" / "step_times.yaml"
OVERHEADS = ("startup_s", "eval_s", "rank_s", "final_eval_s")  # the per-run costs beside the steps


def step_time_table(path: Path = STEP_TIMES) -> dict:
    return OmegaConf.to_container(OmegaConf.load(path))


def _run_record(run_dir: Path) -> tuple[dict, DictConfig, str] | None:
    """(summary, composed config, optimizer choice) of a run directory, or None for a foreign/half-written one."""
    summary, hydra = read_summary(run_dir), read_hydra_record(run_dir)
    config, optimizer = hydra.composed(), hydra.choices.get("optimizer")
    return (summary, config, optimizer) if summary and config is not None and optimizer else None


def measured_step_times(history: Path) -> dict[tuple[str, str, str], list[float]]:
    """Seconds per step of every run under `history` that got somewhere, keyed by (model, optimizer, hardware)."""
    times: dict[tuple[str, str, str], list[float]] = {}
    for summary_path in Path(history).rglob(SUMMARY_FILE) if Path(history).exists() else []:
        record = _run_record(summary_path.parent)
        if record is None:
            continue
        summary, config, optimizer = record
        if summary.get("steps") and summary.get("wall_time_s"):
            key = (config.model.preset, optimizer, config.hardware.name)
            times.setdefault(key, []).append(summary["wall_time_s"] / summary["steps"])
    return times


def step_time(key: tuple[str, str, str], measured: dict, table: dict) -> tuple[float | None, str]:
    """(seconds per step, where the figure comes from) for (model, optimizer, hardware): runs here win."""
    if measured.get(key):
        return statistics.median(measured[key]), f"{len(measured[key])} runs"
    for row in table["measured"]:
        if (row["model"], row["optimizer"], row["hardware"]) == key:
            return row["step_s"], row["source"]
    return None, "unknown"


def overheads(table: dict, model: str, hardware: str) -> dict[str, float | None]:
    """The measured per-run costs beside the steps for (model, hardware); None where nothing was measured."""
    row = next((r for r in table.get("overheads", []) if (r["model"], r["hardware"]) == (model, hardware)), {})
    return {name: row.get(name) for name in OVERHEADS}


@dataclass
class Estimate:
    seconds: float | None          # wall seconds still to run; None: no step time measured, unpriced
    unmeasured: list[str] = field(default_factory=list)  # the parts left out for want of a measurement


def job_estimate(cfg: DictConfig, steps: int, step_s: float | None, from_runs: bool, table: dict) -> Estimate:
    """Seconds a job still needs: its steps and start-up, and (unless the step time came from runs here, whose wall
    time holds them) an eval and a rank pass every eval_every steps, rank passes every rank_every steps for a
    rank_threshold run, and the final eval. A job with nothing left costs nothing."""
    if steps == 0:
        return Estimate(0.0)
    if step_s is None:
        return Estimate(None)
    extra = overheads(table, cfg.model.preset, cfg.hardware.name)
    if from_runs:  # their wall_time_s holds their evals, not the process's start-up
        startup = extra["startup_s"]
        return Estimate(steps * step_s + (startup or 0.0), [] if startup is not None else ["startup"])
    trainer = cfg.trainer
    evals = steps // trainer.eval_every + 1 if trainer.eval_every else 1
    rank_passes = evals
    if cfg.optimizer.get("rank_threshold") is not None:
        rank_passes += steps // cfg.optimizer.get("rank_every", 1)
    counts = {"startup_s": 1, "eval_s": evals, "rank_s": rank_passes, "final_eval_s": 1}
    unmeasured = [name.removesuffix("_s") for name in OVERHEADS if extra[name] is None]
    seconds = steps * step_s + sum(counts[name] * extra[name] for name in OVERHEADS if extra[name] is not None)
    return Estimate(seconds, unmeasured)


def spent(history: Path) -> tuple[float, float, int]:
    """(GPU-hours, $, runs) the runs under `history` have already used: summary wall time × the GPUs of their
    hardware × its price per GPU-hour."""
    gpu_hours = usd = 0.0
    runs = 0
    for summary_path in Path(history).rglob(SUMMARY_FILE) if Path(history).exists() else []:
        if summary_path.parent.is_symlink():
            continue  # a reused run (orthonoise/sweep/plan.py links it) is counted where it ran
        record = _run_record(summary_path.parent)
        if record is None or not record[0].get("wall_time_s"):
            continue
        summary, config, _ = record
        gpus = config.hardware.world_size if config.hardware.device == "cuda" else 0
        hours = gpus * summary["wall_time_s"] / 3600
        gpu_hours, usd, runs = gpu_hours + hours, usd + hours * config.hardware.get("gpu_hour_usd", 0.0), runs + 1
    return gpu_hours, usd, runs
