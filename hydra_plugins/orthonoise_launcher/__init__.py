"""orthonoise's sweep launchers, where Hydra looks for launcher plugins (the hydra_plugins namespace).

hydra-submitit-launcher's local and SLURM launchers with orthonoise.sweep.launcher's accounting: completed jobs skipped
before submission, every job's result gathered, jobs killed hard recorded failed, requeued jobs waited for.
"""
from hydra_plugins.hydra_submitit_launcher import submitit_launcher

from orthonoise.sweep.launcher import Accounting, SlurmAccounting, register_launchers


class LocalLauncher(Accounting, submitit_launcher.LocalLauncher):
    """Jobs as subprocesses of this machine (conf/hydra/launcher/local_*.yaml)."""


class SlurmLauncher(SlurmAccounting, submitit_launcher.SlurmLauncher):
    """One SLURM job per run, as a job array (conf/hydra/launcher/slurm_*.yaml)."""


register_launchers()
