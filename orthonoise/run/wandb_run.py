"""Weights & Biases: runs of one sweep share a group and tags, so the web view filters like the report.

logger=online falls back to offline, with one warning that says why, whenever online logging cannot work: no
credentials, a server that cannot be reached (at the scheme and port of WANDB_BASE_URL), something that answers
but is not a W&B server or rejects the key, or any failure of wandb.init itself. Training never stops for it.
"""
import base64
import http.client
import json
import logging
import netrc
import os
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)
DEFAULT_BASE_URL = "https://api.wandb.ai"
PROBE_TIMEOUT_S = 5.0
INIT_TIMEOUT_S = 60.0  # wandb.init's own wait for its service and the server (wandb's default is 90 s)


def run_tags(cfg: DictConfig, choices: dict) -> list[str]:
    tags = [f"{group}={choices[group]}" for group in ("model", "optimizer", "noise", "hardware") if group in choices]
    if cfg.phase is not None:
        tags.append(f"phase={cfg.phase}")
    if "alpha" in cfg.optimizer:
        tags.append(f"alpha={cfg.optimizer.alpha}")
    tags.append(f"seed={cfg.seed}")
    return tags + list(cfg.tags)


def api_key(host: str | None) -> str | None:
    """The API key in the environment, or the one `wandb login` stored in ~/.netrc (or $NETRC)."""
    if os.environ.get("WANDB_API_KEY"):
        return os.environ["WANDB_API_KEY"]
    try:
        entry = netrc.netrc(os.environ.get("NETRC")).authenticators(host or "")
    except (OSError, netrc.NetrcParseError):
        return None
    return entry[2] if entry else None


def server_problem(base_url: str, key: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Why `base_url` is not a W&B server that accepts `key`, or None. Asks what wandb asks first: its GraphQL
    endpoint for the key's user; anything but a GraphQL answer is a failure."""
    request = urllib.request.Request(
        base_url.rstrip("/") + "/graphql", data=json.dumps({"query": "query { viewer { id } }"}).encode(),
        headers={"Content-Type": "application/json",
                 "Authorization": "Basic " + base64.b64encode(f"api:{key}".encode()).decode()})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = response.read(1 << 16)
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            return f"{base_url} rejected the API key (HTTP {err.code})"
        return f"{base_url} answered HTTP {err.code} to a W&B request: not a W&B server?"
    except http.client.HTTPException as err:  # a server of another protocol (ssh, a database, ...)
        return f"{base_url} answered, but not as a W&B server ({type(err).__name__})"
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        return f"{base_url} cannot be reached or did not answer ({type(err).__name__}: {reason})"
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if not (isinstance(answer, dict) and ("data" in answer or "errors" in answer)):
        return f"{base_url} answered, but not as a W&B server (no GraphQL reply)"
    return None


def logging_mode(requested: str) -> str:
    """online needs credentials and a W&B server; without either the run logs offline instead of failing."""
    if requested != "online":
        return requested
    base_url = os.environ.get("WANDB_BASE_URL", DEFAULT_BASE_URL)
    key = api_key(urlparse(base_url).hostname)
    if not key:
        problem = "no wandb credentials (set WANDB_API_KEY or run `wandb login`)"
    else:
        problem = server_problem(base_url, key)
    if problem is None:
        return "online"
    _warn_offline(problem)
    return "offline"


def _warn_offline(problem: str) -> None:
    log.warning("logger=online but %s: logging offline instead; upload later with "
                "`wandb sync <run dir>/wandb/offline-run-*`", problem)


def start_wandb(cfg: DictConfig, run_dir: Path, choices: dict, resume_id: str | None = None):
    """A wandb run in the run directory, or None when logger.mode=disabled."""
    mode = logging_mode(cfg.logger.mode)
    if mode == "disabled":
        return None
    try:
        return _init(cfg, run_dir, choices, resume_id, mode)
    except Exception as err:  # noqa: BLE001 - wandb raises its own CommError, UsageError, timeouts, ...
        if mode != "online":
            raise
        _warn_offline(f"wandb.init failed ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})")
        return _init(cfg, run_dir, choices, resume_id, "offline")


def _init(cfg: DictConfig, run_dir: Path, choices: dict, resume_id: str | None, mode: str):
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
        settings=wandb.Settings(console="off", silent=True, x_disable_stats=True, init_timeout=INIT_TIMEOUT_S),
    )
