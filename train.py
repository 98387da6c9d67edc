"""Train one Granite-4.0-H model with one optimizer; Hydra composes the config from conf/.

    python train.py                                    # the embedded default: tiny model, Muon, CPU
    python train.py optimizer=orthonoise optimizer.alpha=5e-3
    python train.py -m optimizer.alpha=1e-4,1e-3,5e-3 seed=1,2
"""
import logging
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from orthonoise.errors import ConfigError
from orthonoise.hub import use_local_cache_if_offline
from orthonoise.run_dirs import register_resolvers

log = logging.getLogger("orthonoise")
register_resolvers()  # before Hydra composes conf/: the run directory's name uses one


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> str | float:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    if cfg.model.pretrained or cfg.data.name != "local":
        use_local_cache_if_offline()  # before transformers/datasets import huggingface_hub
    from orthonoise.metrics import mark_status
    from orthonoise.rundir import Status
    from orthonoise.trainer import train

    try:
        if cfg.get("objective"):  # an Optuna trial (sweeps/optuna.yaml): returns the number it minimises
            from orthonoise.objective import mean_final_val_loss

            return mean_final_val_loss(cfg, run_dir, dict(hydra_cfg.runtime.choices))
        return train(cfg, run_dir, choices=dict(hydra_cfg.runtime.choices))["status"]
    except ConfigError as err:
        message = f"error: {err}"
    except Exception as err:  # a crash is recorded in the run directory, then reported
        traceback.print_exc()
        message = f"error: {type(err).__name__}: {err}"
    log.error(message)
    mark_status(run_dir, Status.FAILED, error=message.removeprefix("error: "))
    if multirun:
        return "failed"  # one failed job must not stop the rest of the sweep
    sys.exit(1)


if __name__ == "__main__":
    main()
