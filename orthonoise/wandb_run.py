"""Weights & Biases: runs of one sweep share a group and tags, so the web view filters like the report."""
import logging
import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import DictConfig, OmegaConf

from orthonoise.hub import can_connect

log = logging.getLogger(__name__)


def run_tags(cfg: DictConfig, choices: dict) -> list[str]:
    tags = [f"{group}={choices[group]}" for group in ("model", "optimizer", "noise", "hardware") if group in choices]
    if cfg.phase is not None:
        tags.append(f"phase={cfg.phase}")
    if "alpha" in cfg.optimizer:
        tags.append(f"alpha={cfg.optimizer.alpha}")
    tags.append(f"seed={cfg.seed}")
    return tags + list(cfg.tags)


def has_credentials(host: str) -> bool:
    """An API key in the environment, or the one `wandb login` stored in ~/.netrc (or $NETRC)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def logging_mode(requested: str) -> str:
    """online needs credentials and the server; without either the run logs offline instead of failing."""
    if requested != "online":
        return requested
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    if not has_credentials(host):
        problem = "no wandb credentials (set WANDB_API_KEY or run `wandb login`)"
    elif not can_connect(host):
        problem = f"{host} cannot be reached"
    else:
        return "online"
    log.warning("logger=online but %s: logging offline instead; upload later with "
                "`wandb sync <run dir>/wandb/offline-run-*`", problem)
    return "offline"


def start_wandb(cfg: DictConfig, run_dir: Path, choices: dict, resume_id: str | None = None):
    """A wandb run in the run directory, or None when logger.mode=disabled."""
    mode = logging_mode(cfg.logger.mode)
    if mode == "disabled":
        return None
    import wandb

    return wandb.init(
        project=cfg.logger.project,
        entity=cfg.logger.entity,
        group=cfg.logger.group,
        tags=run_tags(cfg, choices),
        name=run_dir.name,
        dir=str(run_dir),
        mode=mode,
        config=OmegaConf.to_container(cfg, resolve=True),
        id=resume_id,
        resume="allow" if resume_id else None,
        settings=wandb.Settings(console="off", silent=True, x_disable_stats=True),
    )
