"""The number an Optuna trial reports (sweeps/optuna.yaml): final validation loss averaged over seeds.

One trial = one point of the search space trained once per seed in `objective.seeds`, each into
<trial dir>/seed=<s> (resumable and skippable like any run). A seed that fails or diverges makes the trial's
value NaN, which Optuna records as a failed trial rather than a good or bad score.
"""
import logging
import math
import traceback
from pathlib import Path

from omegaconf import DictConfig, open_dict

from orthonoise.run.metrics import mark_status
from orthonoise.run.rundir import Status

log = logging.getLogger(__name__)


def mean_final_val_loss(cfg: DictConfig, trial_dir: Path, choices: dict) -> float:
    from orthonoise.trainer import train

    losses = []
    for seed in cfg.objective.seeds:
        run_cfg, run_dir = cfg.copy(), Path(trial_dir) / f"seed={seed}"
        with open_dict(run_cfg):
            run_cfg.seed = seed
        run_dir.mkdir(parents=True, exist_ok=True)
        try:
            summary = train(run_cfg, run_dir, choices=choices)
            ok = summary["status"] == Status.COMPLETED and summary["final_val_loss"] is not None
            losses.append(summary["final_val_loss"] if ok else math.nan)
        except Exception as err:  # the trial fails; the study goes on
            traceback.print_exc()
            mark_status(run_dir, Status.FAILED, error=f"{type(err).__name__}: {err}")
            losses.append(math.nan)
    value = sum(losses) / len(losses)
    log.info("objective: mean final val loss over seeds %s = %.4f (%s)", list(cfg.objective.seeds), value, losses)
    return value
