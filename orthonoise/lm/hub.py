"""Hugging Face hub access: decided once, quickly, so an offline machine fails in seconds, not after retries."""
import functools
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

_HUB = os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def hub_reachable(timeout_s: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    return can_connect(*host_and_port(_HUB), timeout_s)


def host_and_port(url: str) -> tuple[str | None, int]:
    """The host and TCP port a URL names: its own port, else its scheme's (http 80, https 443)."""
    parsed = urlparse(url)
    try:
        port = parsed.port
    except ValueError:  # a port that is not a number: nothing listens there
        port = -1
    return parsed.hostname, port or (80 if parsed.scheme == "http" else 443)


@functools.cache  # asked by train.py and again by the config check: one 3 s timeout, not two
def can_connect(host: str | None, port: int = 443, timeout_s: float = 3.0) -> bool:
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
        return True
    except (OSError, OverflowError, TypeError):  # refused, unresolvable, no route; a port out of range; no host
        return False


def use_local_cache_if_offline() -> None:
    """When the hub cannot be reached, make transformers/datasets read only the local cache (HF_HOME).

    Must run before huggingface_hub is imported: it reads the variable once.
    """
    if not hub_reachable():
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"


def in_local_cache(repo_id: str, repo_type: str = "model") -> bool:
    """Whether a snapshot of the repo is in the hub cache, so it loads without the network."""
    from huggingface_hub.constants import HF_HUB_CACHE

    snapshots = Path(HF_HUB_CACHE) / f"{repo_type}s--{repo_id.replace('/', '--')}" / "snapshots"
    return snapshots.is_dir() and any(snapshots.iterdir())
