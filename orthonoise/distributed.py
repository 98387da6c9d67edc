"""Process-group set-up: one plain process, torchrun, or a submitit/SLURM task — whichever is present."""
import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel wrapper (its weights, its lm_head), or the model itself."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def env_ranks() -> Dist:
    """Ranks from torchrun's variables, else submitit's task (local or SLURM), else SLURM's, else one process."""
    if "WORLD_SIZE" in os.environ and "RANK" in os.environ:
        return Dist(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ["WORLD_SIZE"]))
    if os.environ.get("SUBMITIT_EXECUTOR"):  # a task of hydra/launcher=local_* or slurm_*
        import submitit

        env = submitit.JobEnvironment()
        if env.num_tasks > 1:
            # one job's tasks meet on its first host, at a port of their own: jobs sharing a host don't collide
            os.environ.setdefault("MASTER_ADDR", env.hostnames[0] if env.num_nodes > 1 else "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", str(20000 + int(env.raw_job_id) % 20000))
        return Dist(env.global_rank, env.local_rank, env.num_tasks)
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ:
        return Dist(int(os.environ["SLURM_PROCID"]), int(os.environ.get("SLURM_LOCALID", 0)),
                    int(os.environ["SLURM_NTASKS"]))
    return Dist()


def init(device_type: str) -> Dist:
    ranks = env_ranks()
    if ranks.world_size > 1 and not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=ranks.rank, world_size=ranks.world_size)
    return ranks


def teardown() -> None:
    # Without a barrier before destroy, gloo processes abort at exit about half the time.
    gc.collect()
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size() > 1:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.AVG if value.device.type == "cuda" else dist.ReduceOp.SUM)
        if value.device.type != "cuda":  # gloo has no AVG
            value /= dist.get_world_size()
    return value
