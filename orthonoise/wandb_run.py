"""Weights & Biases: runs of one sweep share a group and tags, so the web view filters like the report."""
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def run_tags(cfg: DictConfig, choices: dict) -> list[str]:
    tags = [f"{group}={choices[group]}" for group in ("model", "optimizer", "noise", "hardware") if group in choices]
    if cfg.phase is not None:
        tags.append(f"phase={cfg.phase}")
    if "alpha" in cfg.optimizer:
        tags.append(f"alpha={cfg.optimizer.alpha}")
    tags.append(f"seed={cfg.seed}")
    return tags + list(cfg.tags)


def start_wandb(cfg: DictConfig, run_dir: Path, choices: dict, resume_id: str | None = None):
    """A wandb run in the run directory, or None when logger.mode=disabled."""
    if cfg.logger.mode == "disabled":
        return None
    import wandb

    return wandb.init(
        project=cfg.logger.project,
        entity=cfg.logger.entity,
        group=cfg.logger.group,
        tags=run_tags(cfg, choices),
        name=run_dir.name,
        dir=str(run_dir),
        mode=cfg.logger.mode,
        config=OmegaConf.to_container(cfg, resolve=True),
        id=resume_id,
        resume="allow" if resume_id else None,
        settings=wandb.Settings(console="off", silent=True, x_disable_stats=True),
    )
