"""Two gloo processes split the orthogonalisation and must end with the single-process parameters."""
import gc
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from orthonoise.optim import NOLAH, Muon, OrthoNoise

# 5 shapes with 1–3 matrices each: ranks own unequal shares, one rank owns nothing of some shapes
SHAPES = [(24, 8), (24, 8), (24, 8), (8, 24), (16, 16), (16, 16), (12, 20), (20, 12)]
CASES = {
    "muon": (Muon, dict(lr=0.02)),
    "svd": (Muon, dict(lr=0.02, orthogonalizer="svd")),
    "orthonoise": (OrthoNoise, dict(lr=0.02, alpha=0.05, seed=3, rank_threshold=0.9)),
    "buffer": (OrthoNoise, dict(lr=0.02, alpha=0.05, seed=3, noise_into_buffer=True)),
    "update": (OrthoNoise, dict(lr=0.02, alpha=0.05, seed=3, perturb="update")),
    "nolah": (NOLAH, dict(lr=0.02)),
}


def train(case: str, steps: int = 4):
    cls, kwargs = CASES[case]
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in SHAPES]
    opt = cls(params, **kwargs)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)  # identical on every rank, as after DDP's all-reduce
        opt.step()
    return [p.detach().clone() for p in params], opt.metrics()


def _worker(rank, world, port, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    out = {case: train(case) for case in CASES}
    results[rank] = out
    del out
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks():
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(2, _free_port(), results), nprocs=2, join=True)
        return dict(results)


@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_equal_one_process(two_ranks, case):
    single, single_metrics = train(case)
    for rank in (0, 1):
        params, metrics = two_ranks[rank][case]
        for a, b in zip(params, single):
            torch.testing.assert_close(a, b, atol=2e-4, rtol=0)  # lr × one bf16 ulp: batch sizes differ
        assert metrics == pytest.approx(single_metrics, rel=1e-5)
