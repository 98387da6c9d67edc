"""Every use of hydra-submitit-launcher beyond its configs, in one place.

orthonoise's launchers (orthonoise/sweep/launcher.py) replace hydra-submitit-launcher's `launch()` and keep the
rest: the job callable (`__call__`, which composes the job's config and runs it in the job's process) and
`checkpoint()` (the resubmission submitit calls on USR2). Doing so needs names the plugin does not document: the
launcher's `_EXECUTOR`, `params`, `config` and `hydra_context` attributes and the arguments `__call__` takes. They are
read here only, behind `SubmititAdapter`'s methods; tests/test_launcher.py checks the installed version is
PINNED_VERSION and that every name below exists, so an upgrade fails there, loudly, instead of in a sweep.
"""
from __future__ import annotations

from pathlib import Path

from hydra.core.singleton import Singleton
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, LocalQueueConf, SlurmQueueConf
from omegaconf import DictConfig, OmegaConf

PINNED_VERSION = "1.2.0"
DISTRIBUTION = "hydra-submitit-launcher"
# what this module reads from the plugin's launcher: class attributes, attributes set in __init__/setup, and the
# positional parameters of the job callable that `submit_array` passes
CLASS_NAMES = ("_EXECUTOR", "checkpoint", "__call__", "setup")
INSTANCE_NAMES = ("params", "config", "hydra_context")
CALL_PARAMETERS = ("sweep_overrides", "job_dir_key", "job_num", "job_id", "singleton_state")
INIT_ONLY_PARAMS = ("submitit_folder", "max_num_timeout")  # AutoExecutor's own, not update_parameters'

__all__ = ["BaseQueueConf", "LocalQueueConf", "SlurmQueueConf", "LocalLauncherBase", "SlurmLauncherBase"]


class SubmititAdapter:
    """The plugin launcher's state and submission, as orthonoise's launchers use them."""

    @property
    def cluster(self) -> str:
        """submitit's executor name: "local" or "slurm"."""
        return self._EXECUTOR

    @property
    def launch_params(self) -> dict:
        """hydra.launcher's settings, resolved to plain values."""
        return self.params

    @property
    def sweep_config(self) -> DictConfig:
        return self.config

    @property
    def context(self):
        """Hydra's HydraContext: the config loader and the multirun's callbacks."""
        return self.hydra_context

    def job_config(self, overrides: list[str]) -> DictConfig:
        """A job's composed config, as its own process will compose it."""
        return self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))

    def executor(self):
        """submitit's executor with hydra.launcher's settings, as the plugin's launch() builds it."""
        import submitit

        init = {"folder": self.params["submitit_folder"]}
        if "max_num_timeout" in self.params:
            init[f"{self._EXECUTOR}_max_num_timeout"] = self.params["max_num_timeout"]
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"{self._EXECUTOR}_{k}": v for k, v in self.params.items()
                                      if k not in INIT_ONLY_PARAMS})
        return executor

    def submit_array(self, jobs: list[tuple[list[str], int]]) -> list:
        """One submission (a job array on SLURM) of this launcher as the callable, one task per (overrides, index)."""
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        args = [(overrides, "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state())
                for overrides, idx in jobs]
        return self.executor().map_array(self, *zip(*args))


class LocalLauncherBase(SubmititAdapter, submitit_launcher.LocalLauncher):
    """Jobs as subprocesses of this machine."""


class SlurmLauncherBase(SubmititAdapter, submitit_launcher.SlurmLauncher):
    """Jobs as one SLURM job array."""
