"""Run directories named by what was asked for: the same command finds the same directory.

So launching a command again resumes its interrupted run (or skips it when completed) instead of paying for a
new one. conf/config.yaml names runs `outputs/runs/${run_name:${hydra.job.override_dirname}}`; Hydra sorts the
overrides, so their order on the command line does not matter.
"""
import hashlib

from omegaconf import OmegaConf

MAX_NAME = 200  # file systems allow 255 bytes per path component


def run_name(override_dirname: str) -> str:
    """`optimizer=orthonoise,seed=1` as a directory name: "default" for no overrides, no slashes, bounded length."""
    name = override_dirname.replace("/", "_") or "default"
    if len(name.encode()) > MAX_NAME:
        digest = hashlib.sha1(name.encode()).hexdigest()[:12]
        name = name.encode()[: MAX_NAME - 13].decode(errors="ignore") + "-" + digest
    return name


def register_resolvers() -> None:
    """Every entry point that composes conf/ calls this first (train.py, orthonoise.plan, the tests)."""
    OmegaConf.register_new_resolver("run_name", run_name, replace=True)
