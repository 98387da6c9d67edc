"""DDP over gloo with 2 CPU processes equals one process on the same global batch; ranks from each launcher."""
import gc
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from hydra import compose, initialize_config_dir

from orthonoise import distributed
from tests.conftest import CONF, FAST

# OrthoNoise exercises the whole Muon family's rank split (each rank orthogonalises its share, then all-gather)
# and grad_accum=2 exercises DDP's no_sync on the first micro-step.
OVERRIDES = [*FAST, "trainer.max_steps=3", "trainer.eval_every=3", "trainer.checkpoint_every=3",
             "optimizer=orthonoise", "optimizer.alpha=1e-2", "hardware.grad_accum=2", "hardware.num_threads=1"]


def run(rank: int, world_size: int, port: int, out_dir: str) -> None:
    """One process: train through the real trainer, then save the parameters this rank ended with."""
    from orthonoise import trainer

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    built = []
    build_model = trainer.build_model
    trainer.build_model = lambda *a, **k: built.append(build_model(*a, **k)) or built[-1]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[*OVERRIDES, f"hardware.world_size={world_size}",
                                           f"hardware.batch_size={8 // world_size}"])
    summary = trainer.train(cfg, f"{out_dir}/run{world_size}")  # tears the process group down at the end
    torch.save({"params": built[0].state_dict(), "summary": summary}, f"{out_dir}/w{world_size}_rank{rank}.pt")
    built.clear()  # the model goes before the process group does (gloo)
    gc.collect()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(300)
def test_gloo_ddp_equals_single_process_on_the_same_global_batch(tmp_path):
    for name in ("run1", "run2"):
        (tmp_path / name).mkdir()
    mp.spawn(run, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    mp.spawn(run, args=(1, free_port(), str(tmp_path)), nprocs=1, join=True)
    rank0, rank1, single = (torch.load(tmp_path / f, weights_only=False)
                            for f in ("w2_rank0.pt", "w2_rank1.pt", "w1_rank0.pt"))
    assert rank0["summary"]["status"] == single["summary"]["status"] == "completed"
    for name, p in rank0["params"].items():
        assert torch.equal(p, rank1["params"][name]), f"{name} differs between ranks"
        # Summation order differs (two half-batch means vs one mean), and Newton–Schulz runs in bf16: differences
        # stay ~1e-4 after 3 steps at Muon lr 0.02 (an update's size), far below what a missed average would give.
        # AdamW's first steps are nearly sign(g)·lr, so a rare token whose gradient is ~0 may move differently by
        # summation order alone (measured: 3 of 1.6M embedding entries, by 6e-4); a missed average moves them all.
        outside = ~torch.isclose(p, single["params"][name], rtol=1e-3, atol=5e-4)
        assert outside.float().mean() < 1e-5, f"{name}: {int(outside.sum())} of {p.numel()} entries differ"
    # sharded evaluation over both ranks = the single process's evaluation of the same windows
    assert rank0["summary"]["final_val_loss"] == pytest.approx(single["summary"]["final_val_loss"], rel=1e-4)


def test_ranks_from_each_launcher(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SUBMITIT_EXECUTOR", "SLURM_NTASKS", "SLURM_PROCID"):
        monkeypatch.delenv(key, raising=False)
    assert distributed.env_ranks() == distributed.Dist(0, 0, 1)  # a plain process
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_PROCID", "2")
    monkeypatch.setenv("SLURM_LOCALID", "2")
    assert distributed.env_ranks() == distributed.Dist(2, 2, 4)  # srun without submitit
    # a submitit task (hydra/launcher=local here; slurm reads the same SLURM_* through submitit)
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    monkeypatch.setenv("SUBMITIT_LOCAL_JOB_ID", "4242")
    monkeypatch.setenv("SUBMITIT_LOCAL_NTASKS", "4")
    monkeypatch.setenv("SUBMITIT_LOCAL_GLOBALID", "3")
    monkeypatch.setenv("SUBMITIT_LOCAL_LOCALID", "3")
    monkeypatch.delenv("MASTER_PORT", raising=False)
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    assert distributed.env_ranks() == distributed.Dist(3, 3, 4)
    assert os.environ["MASTER_PORT"] == str(20000 + 4242)  # per job: two jobs on one host don't collide
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed.env_ranks() == distributed.Dist(1, 0, 2)  # torchrun wins
