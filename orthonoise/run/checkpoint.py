"""Checkpoints that survive any interruption: the last `keep` of them, each written atomically and checksummed.

<run dir>/checkpoints/step-00000050.pt is the torch.save of the whole training state and step-00000050.sha256
its SHA-256, written after it. A checkpoint without a matching checksum (killed mid-write, truncated, a flipped
byte) is skipped with a warning and the one before it used. Loading uses weights_only=True: a checkpoint holds
tensors and plain Python values only, so a tampered file cannot run code.
"""
import hashlib
import logging
import os
import random
from pathlib import Path

import numpy as np
import torch

from orthonoise.errors import ConfigError
from orthonoise.run.atomic import write_atomic, write_text_atomic

log = logging.getLogger(__name__)
DIRNAME = "checkpoints"


class _HashingFile:
    """A write-only file that hashes what passes through it, so the checksum costs no second read."""

    def __init__(self, f):
        self.f, self.sha256 = f, hashlib.sha256()
        self.error: OSError | None = None  # torch.save reports a failed write as a RuntimeError naming neither

    def write(self, data) -> int:
        self.sha256.update(data)
        try:
            return self.f.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.f.flush()


def _sha256_of(path: Path) -> str:
    sha256 = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            sha256.update(chunk)
    return sha256.hexdigest()


def checkpoint_paths(run_dir: Path) -> list[Path]:
    """The run's checkpoints, oldest first."""
    return sorted((Path(run_dir) / DIRNAME).glob("step-*.pt"))


def save_checkpoint(run_dir: Path, state: dict, step: int, keep: int = 2) -> Path:
    """Write the checkpoint of `step`, then drop all but the newest `keep`."""
    folder = Path(run_dir) / DIRNAME
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:08d}.pt"

    def write(f) -> str:
        hashing = _HashingFile(f)
        try:
            torch.save(state, hashing)
        except RuntimeError:
            if hashing.error:  # the file's own error (a full disk): it names the cause
                raise hashing.error from None
            raise
        return hashing.sha256.hexdigest()

    write_text_atomic(path.with_suffix(".sha256"), write_atomic(path, write))
    for old in checkpoint_paths(run_dir)[:-keep]:
        old.with_suffix(".sha256").unlink(missing_ok=True)
        old.unlink(missing_ok=True)  # someone may have deleted it by hand meanwhile
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_tmp(run_dir: Path) -> None:
    """Remove the `*.<pid>.tmp` files of checkpoint writes that were killed half-way. Called by the process that
    holds the run directory (orthonoise/run/runlock.py); a file whose writer is still alive on this host is kept."""
    for stale in (Path(run_dir) / DIRNAME).glob("*.tmp"):
        pid = stale.suffixes[-2][1:] if len(stale.suffixes) >= 2 else ""
        if not (pid.isdigit() and int(pid) != os.getpid() and _pid_alive(int(pid))):
            stale.unlink(missing_ok=True)


def load_checkpoint(run_dir: Path) -> tuple[dict, Path] | tuple[None, None]:
    """The newest readable checkpoint and its path; (None, None) when the run has none yet."""
    paths = checkpoint_paths(run_dir)
    for path in reversed(paths):
        checksum = path.with_suffix(".sha256")
        try:
            if not checksum.exists() or checksum.read_text().strip() != _sha256_of(path):
                raise ValueError("its checksum does not match (truncated or corrupted)")
            return torch.load(path, map_location="cpu", weights_only=True), path
        except Exception as err:  # noqa: BLE001 - any unreadable file: fall back to the one before
            log.warning("checkpoint %s is unusable (%s); trying the previous one", path, str(err).splitlines()[0])
    if paths:
        raise ConfigError(f"none of the {len(paths)} checkpoints in {paths[0].parent} can be read; "
                          f"delete that folder to restart the run from step 0")
    return None, None


def rng_state() -> dict:
    """Every random number generator a run touches: python, numpy, torch (CPU) and CUDA."""
    numpy_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        # weights_only loading takes tensors, not numpy arrays
        "numpy": {**numpy_state, "state": {"key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
                                            "pos": numpy_state["state"]["pos"]}},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state({**numpy_state, "state": {"key": numpy_state["state"]["key"].numpy().astype(np.uint32),
                                                  "pos": numpy_state["state"]["pos"]}})
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
