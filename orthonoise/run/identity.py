"""What produced a run: its settings and its code, recorded once in `<run dir>/identity.json`.

A run directory is found again by its name (the command's overrides), but the name says nothing about the YAML
files behind it or the code that ran. So the first launch records the run's identity: every setting that changes
the computation (the composed config, resolved, minus NOT_COMPUTATION) and the code (git commit, whether the tree
was dirty and a hash of its diff, the torch / transformers / mamba_ssm versions). A later launch into the same
directory compares its own identity with the record: a difference stops it with one error line naming the keys,
unless `trainer.allow_config_change=true` says to go on, in which case the change (keys, old and new values, the
step it took effect) is appended to the record and shown in summary.json as `config_changes`.

Hydra rewrites `.hydra/*.yaml` at every launch, before our code runs. The record keeps the `.hydra/` files the
run was started with (or last accepted), and every launch that does not train (a skip, a refusal) puts them back:
`.hydra/config.yaml` always describes the settings the run's results came from.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import logging
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from orthonoise import REPO_ROOT
from orthonoise.errors import RunRefused
from orthonoise.run.rundir import (
    HYDRA_DIR,
    HYDRA_FILES,
    IDENTITY_FILE,
    MAX_BYTES,
    MAX_CONFIG_BYTES,
    read_regular,
    write_json_atomic,
)

OVERRIDE = "trainer.allow_config_change"
# Keys that do not change what is computed, only how it is shown, mirrored, saved or paid for:
# the wandb settings and labels; the progress bar and how often rows are written; when checkpoints are saved and
# how many are kept; torch's CPU thread count (it can move the last bits of a CPU sum, as another GPU would);
# price and speed estimates; where the data cache lives (its entries are keyed on content); which seeds an Optuna
# trial trains; and the override itself.
NOT_COMPUTATION = (
    "logger", "tags", "phase", "objective", "trainer.progress_bar", "trainer.log_every", "trainer.checkpoint_every",
    "trainer.keep_checkpoints", OVERRIDE, "hardware.num_threads", "hardware.gpu_hour_usd", "hardware.step_time_s",
    "hardware.peak_tflops", "data.cache_dir",
)
PACKAGES = ("torch", "transformers", "mamba_ssm")
log = logging.getLogger(__name__)
REPO = REPO_ROOT


def _flatten(tree, prefix: str = "") -> dict:
    if not isinstance(tree, dict) or not tree:
        return {prefix.rstrip("."): tree}
    return {k: v for key, value in tree.items() for k, v in _flatten(value, f"{prefix}{key}.").items()}


def computation_settings(cfg: DictConfig) -> dict:
    """The composed config as flat `key: value` pairs, resolved, without the keys that do not change the run."""
    flat = _flatten(OmegaConf.to_container(cfg, resolve=True))
    return {k: v for k, v in sorted(flat.items())
            if not any(k == skip or k.startswith(skip + ".") for skip in NOT_COMPUTATION)}


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-c", f"safe.directory={REPO}", "-C", str(REPO), *args],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package.replace("_", "-"))
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def code_version() -> dict:
    """The code a run executes: git commit, dirty flag and diff hash (tracked files; None outside a git checkout),
    and the versions of the packages whose kernels compute it (None when not installed)."""
    commit, status = _git("rev-parse", "HEAD"), _git("status", "--porcelain", "--untracked-files=no")
    diff = _git("diff", "HEAD") if status else None
    return {
        "git_commit": commit.strip() if commit else None,
        "git_dirty": None if status is None else bool(status.strip()),
        "git_diff_sha256": hashlib.sha256(diff.encode()).hexdigest()[:16] if diff else None,
        **{package: _version(package) for package in PACKAGES},
    }


def device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def provenance(device) -> dict:
    """summary.json's `provenance`: the code version plus where it ran (python, host, device)."""
    return {**code_version(), "python": platform.python_version(), "host": platform.node(),
            "device_name": device_name(device)}


class Identity:
    """A run's settings and code; `differences` against a recorded one names every key that changed."""

    def __init__(self, settings: dict, code: dict):
        self.settings, self.code = settings, code

    @classmethod
    def of(cls, cfg: DictConfig) -> Identity:
        return cls(computation_settings(cfg), code_version())

    @property
    def fingerprint(self) -> str:
        text = json.dumps({"settings": self.settings, "code": self.code}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def differences(self, record: dict) -> dict[str, tuple]:
        """{key: (recorded value, this value)} for settings and code (code keys as `code.<name>`)."""
        diff = {}
        compared = [("", self.settings, record.get("settings", {}))]
        if record.get("code"):  # a record rebuilt from .hydra/config.yaml does not know the code
            compared.append(("code.", self.code, record["code"]))
        for prefix, mine, theirs in compared:
            for key in sorted(mine.keys() | theirs.keys()):
                if mine.get(key, "<absent>") != theirs.get(key, "<absent>"):
                    diff[prefix + key] = (theirs.get(key, "<absent>"), mine.get(key, "<absent>"))
        return diff


def describe(diff: dict[str, tuple], shown: int = 6) -> str:
    """`optimizer.alpha 0.001 → 0.05, code.git_commit 1a2b… → 3c4d…` (the first `shown`, then a count)."""
    def short(value):
        text = json.dumps(value, default=str)
        return text if len(text) <= 24 else text[:20] + "…"

    parts = [f"{key} {short(old)} → {short(new)}" for key, (old, new) in list(diff.items())[:shown]]
    more = f" and {len(diff) - shown} more" if len(diff) > shown else ""
    return ", ".join(parts) + more


def read_record(run_dir: Path) -> dict | None:
    """identity.json; None when the run has none (new, or from before identity records). An unreadable one is
    refused: without it the run's origin cannot be checked."""
    path = Path(run_dir) / IDENTITY_FILE
    try:
        data = read_regular(path, MAX_BYTES[IDENTITY_FILE])
        if data is None:
            return None
        record = json.loads(data)
        if isinstance(record, dict) and isinstance(record.get("settings"), dict):
            return record
    except (OSError, ValueError):
        pass
    raise RunRefused(f"{path} cannot be read, so what produced this run cannot be checked; to continue it with this "
                     f"launch's settings add {OVERRIDE}=true (recorded), or use another run directory")


# A run's `.hydra/*.yaml` as found before this launch's Hydra rewrote them (orthonoise.validate.OutputDirCheck calls
# remember_hydra_files first), for the runs that have no identity.json: their only record of what they ran with.
_before_launch: dict[Path, dict[str, str]] = {}


def remember_hydra_files(run_dir: Path) -> None:
    """Keep the `.hydra/*.yaml` texts of a run directory without identity.json, before Hydra overwrites them."""
    run_dir = Path(str(run_dir)).expanduser().resolve()
    if (run_dir / IDENTITY_FILE).exists():
        return
    texts = {}
    for name in HYDRA_FILES:
        try:
            data = read_regular(run_dir / HYDRA_DIR / name, MAX_CONFIG_BYTES)
        except OSError:
            data = None
        if data is not None:
            texts[name] = data.decode(errors="replace")
    if "config.yaml" in texts:
        _before_launch[run_dir] = texts


def rebuilt_record(run_dir: Path) -> dict | None:
    """The identity record of a run whose identity.json is gone, rebuilt from the `.hydra/config.yaml` it had before
    this launch: its settings (its code is not known); None when that file was not seen or cannot be composed."""
    texts = _before_launch.get(Path(run_dir).resolve())
    if not texts:
        return None
    try:
        settings = computation_settings(OmegaConf.create(texts["config.yaml"]))
    except Exception:  # noqa: BLE001 - a hand-edited or foreign file: nothing to rebuild from
        return None
    return {"settings": settings, "code": {}, "changes": [], "hydra_files": texts,
            "rebuilt_from": f"{HYDRA_DIR}/config.yaml"}


def recorded_identity(run_dir: Path) -> dict | None:
    """identity.json, or the record rebuilt from `.hydra/config.yaml` when it is missing (rebuilt_record)."""
    record = read_record(run_dir)
    if record is None and (record := rebuilt_record(run_dir)):
        log.warning("%s has no %s: what the run was made with is read from the %s/config.yaml it had before this "
                    "launch", run_dir, IDENTITY_FILE, HYDRA_DIR)
    return record


def restore_hydra_files(run_dir: Path, record: dict | None) -> None:
    """Put back the `.hydra/` files the run was started with (this launch's Hydra overwrote them)."""
    for name, text in ((record or {}).get("hydra_files") or {}).items():
        path = Path(run_dir) / HYDRA_DIR / name
        if path.exists() and path.read_text() != text:
            path.write_text(text)


class Claim:
    """This launch checked against the run's record: refused at once (RunRefused: the keys, and what to do) when
    its identity differs and `allow_change` is not set; `commit(step)` writes the record once the run has resumed.

    The caller holds the run's lock (orthonoise/run/runlock.py), so nothing else writes these files meanwhile. Until
    `commit`, `.hydra/` shows the files the run was made with, whatever this launch's Hydra wrote."""

    def __init__(self, run_dir: Path, identity: Identity, allow_change: bool, hydra_files: dict | None):
        self.run_dir, self.identity, self.hydra_files = Path(run_dir), identity, hydra_files
        try:
            self.record = recorded_identity(run_dir)
        except RunRefused:
            if not allow_change:
                raise
            self.record = None
        restore_hydra_files(run_dir, self.record)
        self.diff = identity.differences(self.record) if self.record else {}
        if self.diff and not allow_change:
            raise RunRefused(
                f"{run_dir} holds a run made with other settings or code: {describe(self.diff)}. To run these "
                f"settings, use another run directory (change an override, set hydra.run.dir=..., or delete that "
                f"one); to continue this run with them anyway, add {OVERRIDE}=true (the change is recorded in the run)")

    def commit(self, step: int) -> dict:
        """Record this launch's identity (and the accepted change, from `step` on); returns the record."""
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        previous = self.record or {}
        changes = previous.get("changes", [])
        if self.record is None and step > 0:  # never silent: the adoption is one of the run's config_changes
            log.warning("%s has checkpoints but no %s and no earlier %s/config.yaml: its settings cannot be "
                        "checked; recording this launch's as a change from step %d", self.run_dir, IDENTITY_FILE,
                        HYDRA_DIR, step)
            changes = [{"step": step, "at": now, "keys": {IDENTITY_FILE: ["missing", "this launch's settings"]}}]
        if self.diff:
            changes = [*changes, {"step": step, "at": now, "keys": {k: list(v) for k, v in self.diff.items()}}]
            print(f"config change accepted ({OVERRIDE}=true) from step {step}: {describe(self.diff)}", file=sys.stderr)
        self.record = {"fingerprint": self.identity.fingerprint, "settings": self.identity.settings,
                       "code": self.identity.code, "created_at": previous.get("created_at", now), "changes": changes,
                       "hydra_files": self.hydra_files if self.hydra_files is not None else previous.get("hydra_files")}
        self.diff = {}
        write_json_atomic(self.run_dir / IDENTITY_FILE, self.record)
        if self.hydra_files:  # this process's own config, whatever a concurrent launch's Hydra wrote meanwhile
            (self.run_dir / HYDRA_DIR).mkdir(exist_ok=True)
            for name, text in self.hydra_files.items():
                (self.run_dir / HYDRA_DIR / name).write_text(text)
        return self.record
