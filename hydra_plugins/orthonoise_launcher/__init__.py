"""orthonoise's sweep launchers, where Hydra looks for launcher plugins (the hydra_plugins namespace).

hydra-submitit-launcher's local and SLURM launchers (through orthonoise/sweep/submitit_adapter.py) with
orthonoise.sweep.launcher's accounting: completed jobs skipped and jobs running elsewhere left out before submission,
every job's result gathered, jobs killed hard recorded failed, requeued jobs waited for.
"""
from orthonoise.sweep.launcher import Accounting, SlurmAccounting, register_launchers
from orthonoise.sweep.submitit_adapter import LocalLauncherBase, SlurmLauncherBase


class LocalLauncher(Accounting, LocalLauncherBase):
    """Jobs as subprocesses of this machine (conf/hydra/launcher/local_*.yaml)."""


class SlurmLauncher(SlurmAccounting, SlurmLauncherBase):
    """One SLURM job per run, as a job array (conf/hydra/launcher/slurm_*.yaml)."""


register_launchers()
