"""Hugging Face hub access: decided once, quickly, so an offline machine fails in seconds, not after retries."""
import os
import socket
from urllib.parse import urlparse

_HUB = os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def hub_reachable(timeout_s: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    host = urlparse(_HUB).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def use_local_cache_if_offline() -> bool:
    """When the hub cannot be reached, make transformers/datasets read only the local cache (HF_HOME).

    Returns whether the hub is online. Must run before huggingface_hub is imported: it reads the variable once.
    """
    online = hub_reachable()
    if not online:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
    return online
