"""One checkpoint per run directory, replaced atomically: an interruption loses at most one interval."""
import os
from pathlib import Path

import torch

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(run_dir: Path, state: dict) -> None:
    path = Path(run_dir) / CHECKPOINT
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(run_dir: Path) -> dict | None:
    path = Path(run_dir) / CHECKPOINT
    return torch.load(path, map_location="cpu", weights_only=False) if path.exists() else None
