"""Train one Granite-4.0-H model with one optimizer; Hydra composes the config from conf/.

    python train.py                                    # the embedded default: tiny model, Muon, CPU
    python train.py optimizer=orthonoise optimizer.alpha=5e-3
    python train.py -m optimizer.alpha=1e-4,1e-3,5e-3 seed=1,2
"""
import sys


def interrupted_by_ctrl_c() -> None:
    """Ctrl-C before the run's own handler is in place (imports, config checks) or a second one that aborts a run:
    one line and the shell's status for it, not a traceback."""
    print("interrupted (Ctrl-C): stopped at once; launch the same command again (a run resumes from its newest "
          "checkpoint)", file=sys.stderr)
    sys.exit(130)


try:
    import errno
    import logging
    import traceback
    from pathlib import Path

    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import DictConfig, OmegaConf

    from orthonoise.errors import ConfigError, RunRefused
    from orthonoise.lm.hub import use_local_cache_if_offline
    from orthonoise.run.rundir import Status, register_resolvers
except KeyboardInterrupt:
    interrupted_by_ctrl_c()

log = logging.getLogger("orthonoise")
register_resolvers()  # before Hydra composes conf/: the run directory's name uses one


def hydra_files(cfg: DictConfig) -> dict[str, str] | None:
    """This launch's `.hydra/*.yaml` as Hydra wrote them: the run's identity record keeps them, so that a later
    launch, whose Hydra overwrites them before our code runs, can put them back (orthonoise/run/identity.py)."""
    from orthonoise.run.rundir import HYDRA_DIR

    hydra_cfg = HydraConfig.instance().cfg
    if hydra_cfg.hydra.output_subdir != HYDRA_DIR:
        return None
    return {"config.yaml": OmegaConf.to_yaml(cfg), "hydra.yaml": OmegaConf.to_yaml(hydra_cfg),
            "overrides.yaml": OmegaConf.to_yaml(hydra_cfg.hydra.overrides.task)}


# What to do about a write that failed, by its cause.
WRITE_REMEDIES = {
    errno.ENOSPC: "the disk is full: free space there (or set hydra.run.dir to another disk)",
    errno.EDQUOT: "the disk quota is used up: free space there (or set hydra.run.dir to another disk)",
    errno.EACCES: "the run directory is not writable: make it writable",
    errno.EROFS: "the file system is read-only: set hydra.run.dir to a writable folder",
}


def write_failure(err: OSError) -> str:
    """One line for a write that failed mid-run: the file, the cause and what to do."""
    if not err.filename:
        return f"{type(err).__name__}: {err}"
    remedy = WRITE_REMEDIES.get(err.errno, "fix the cause")
    return (f"cannot write {err.filename}: {err.strerror}; {remedy}, then launch the same command again: it resumes "
            f"from the newest checkpoint")


def record_failure(run_dir: Path, message: str) -> str:
    """Mark the run failed; returns what to add to the error line when even that could not be written."""
    from orthonoise.run.metrics import mark_status

    try:
        mark_status(run_dir, Status.FAILED, error=message)
        return ""
    except OSError as err:
        return f" (summary.json could not be marked failed either: {err.strerror})"


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> str | float:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    if cfg.model.pretrained or cfg.data.name != "local":
        use_local_cache_if_offline()  # before transformers/datasets import huggingface_hub
    from orthonoise.run.rundir import RUNNING_ELSEWHERE
    from orthonoise.run.runlock import RunDirBusy
    from orthonoise.trainer import train
    from orthonoise.validate import clamp_warmup

    clamp_warmup(cfg)  # before hydra_files: the run's .hydra/config.yaml holds the warmup it runs with

    try:
        if cfg.get("objective"):  # an Optuna trial (sweeps/optuna.yaml): returns the number it minimises
            from orthonoise.sweep.objective import mean_final_val_loss

            return mean_final_val_loss(cfg, run_dir, dict(hydra_cfg.runtime.choices))
        return train(cfg, run_dir, choices=dict(hydra_cfg.runtime.choices), hydra_files=hydra_files(cfg))["status"]
    except RunRefused as err:  # another process's or another config's run directory: left exactly as it was
        if multirun and isinstance(err, RunDirBusy):
            log.warning("%s: %s", RUNNING_ELSEWHERE, err)
            return RUNNING_ELSEWHERE
        log.error("error: %s", err)
        if multirun:
            return Status.FAILED
        sys.exit(1)
    except ConfigError as err:
        message = str(err)
    except OSError as err:  # a write that failed mid-run (disk full, run dir read-only or gone): its own line says it
        message = write_failure(err)
    except Exception as err:  # a crash is recorded in the run directory, then reported
        traceback.print_exc()
        message = f"{type(err).__name__}: {err}"
    log.error("error: %s", message + record_failure(run_dir, message))
    if multirun:
        return Status.FAILED  # one failed job must not stop the rest of the sweep
    sys.exit(1)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        interrupted_by_ctrl_c()
