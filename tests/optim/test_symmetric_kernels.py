"""orthonoise.optim.symmetric_kernels: the one-triangle Triton kernels equal torch's X Xᵀ and b·A + c·A·A to bf16
rounding, and Newton–Schulz / Muon with ns_kernel=triton_symmetric equal the torch path to bf16 rounding.

On the CPU the kernels run under Triton's interpreter (TRITON_INTERPRET=1, in a subprocess since the flag is read
when the kernels are defined), which rounds fp32 → bf16 toward zero where a GPU rounds to nearest: the tolerances
allow one bf16 unit in the last place. The `check_*` functions hold the assertions and run on either device.
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from orthonoise.optim import Muon
from orthonoise.optim.orthogonalize import MUON_COEFFICIENTS, coefficient_schedule, newton_schulz
from orthonoise.optim.symmetric_kernels import interpreted

ROOT = Path(__file__).resolve().parents[2]
HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed (CPU-only torch)")
NS5 = coefficient_schedule(MUON_COEFFICIENTS, 5)
BF16_ULP = 2.0 ** -7  # one unit in the last place of bf16, relative


def assert_bf16_close(out, ref, ulps: float = 1.0):
    """Within `ulps` bf16 units of the float64 reference, plus fp32-summation noise on entries that cancel."""
    torch.testing.assert_close(out.double(), ref.double(), rtol=ulps * BF16_ULP, atol=1e-4 * ref.abs().max().item())


def check_kernels(device: str) -> None:
    """Odd m and n (not multiples of any tile), m below one tile, batch 1 and > 1, rectangular tiles, and inputs
    that are a transposed view and a slice of a wider buffer."""
    from orthonoise.optim.symmetric_kernels import Tiles, gram, gram_polynomial

    gen = torch.Generator().manual_seed(0)
    cases = [((1, 5, 9), None), ((2, 37, 53), Tiles(16, 16, 16, 4, 2)), ((3, 40, 70), Tiles(16, 32, 16, 4, 2)),
             ((2, 70, 20), Tiles(32, 16, 16, 4, 2))]
    for (k, m, n), tiles in cases:
        wide = torch.randn(k, m, n + 4, generator=gen).to(device, torch.bfloat16)
        for X in (wide[..., 2:2 + n], wide[..., :n].contiguous(), wide[..., :n].mT.contiguous().mT):
            A = gram(X, tiles)
            assert A.shape == (k, m, m) and A.dtype == torch.bfloat16 and torch.equal(A, A.mT)
            assert_bf16_close(A, X.double() @ X.double().mT)
        b, c = MUON_COEFFICIENTS[1:]
        B = gram_polynomial(A, b, c, tiles)
        Ad = A.double()
        assert B.shape == A.shape and torch.equal(B, B.mT)
        assert_bf16_close(B, b * Ad + c * Ad @ Ad)
        assert_bf16_close(B, torch.baddbmm(A, A, A, beta=b, alpha=c), ulps=2)


def relative_error(a, b) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def round_bf16(x):
    """fp32 → bf16 as the kernels round on this device: to nearest on a GPU, toward zero in the interpreter."""
    if interpreted():
        return (x.float().contiguous().view(torch.int32) & -65536).view(torch.float32).bfloat16()
    return x.bfloat16()


def newton_schulz_reference(G):
    """torch's Newton–Schulz with the kernels' arithmetic for A and B: fp32 products, one bf16 rounding."""
    X = G.bfloat16()
    tall = X.size(-2) > X.size(-1)
    X = X.mT if tall else X
    X = X / X.norm(dim=(-2, -1), keepdim=True).clamp(min=1e-7)
    for a, b, c in NS5:
        A = round_bf16(X.float() @ X.float().mT).float()
        X = torch.baddbmm(X, round_bf16(b * A + c * A @ A), X, beta=a)
    return X.mT if tall else X


# The interpreter's rounding toward zero about doubles the distance to torch's round-to-nearest Newton–Schulz.
def torch_tolerance() -> float:
    return 0.05 if interpreted() else 0.02


def check_newton_schulz(device: str) -> None:
    """Five Muon steps on wide, tall and square batches: the kernels' arithmetic done by torch (to fp32 summation
    order), torch's own path to bf16 rounding, and orthogonal to the same degree (the same singular values)."""
    gen = torch.Generator().manual_seed(1)
    for shape in [(3, 40, 72), (2, 90, 33), (1, 64, 64)]:
        G = torch.randn(shape, generator=gen).to(device)
        ours, torchs = newton_schulz(G, NS5, ns_kernel="triton_symmetric"), newton_schulz(G, NS5)
        assert ours.shape == torchs.shape == shape and ours.dtype == torch.bfloat16
        assert relative_error(ours, newton_schulz_reference(G)) < 0.005
        assert relative_error(ours, torchs) < torch_tolerance(), relative_error(ours, torchs)
        sv, sv_torch = (torch.linalg.svdvals(O.double()) for O in (ours, torchs))
        assert (sv - sv_torch).abs().max() < 1.5 * torch_tolerance() and sv.min() > 0.6 and sv.max() < 1.25


def check_muon(device: str) -> None:
    """Two Muon steps on the same parameters and gradients: ns_kernel=triton_symmetric moves them as torch's
    kernels do, to bf16 rounding (the weights move by lr·O, so their change is what is compared)."""
    gen = torch.Generator().manual_seed(2)
    weights = [torch.randn(s, generator=gen).to(device) for s in [(48, 40), (48, 40), (33, 70)]]
    grads = [[torch.randn(w.shape, generator=gen).to(device) for w in weights] for _ in range(2)]
    moved = []
    for kernel in ("triton_symmetric", "torch"):
        params = [torch.nn.Parameter(w.clone()) for w in weights]
        opt = Muon(params, lr=0.02, weight_decay=0.0, ns_kernel=kernel)
        for step in grads:
            for p, g in zip(params, step):
                p.grad = g
            opt.step()
        moved.append([p.detach() - w for p, w in zip(params, weights)])
    for ours, torchs in zip(*moved):
        assert relative_error(ours, torchs) < torch_tolerance(), relative_error(ours, torchs)


def run_interpreted(check: str) -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    code = f"from tests.optim.test_symmetric_kernels import {check}; {check}('cpu')"
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]


@needs_triton
@pytest.mark.parametrize("check", ["check_kernels", "check_newton_schulz", "check_muon"])
def test_interpreted_on_cpu(check):
    run_interpreted(check)


def test_the_kernels_refuse_cpu_tensors_outside_the_interpreter(monkeypatch):
    """Without a GPU or the interpreter, one clear error instead of Triton's pointer message."""
    from orthonoise.optim import symmetric_kernels

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    error = RuntimeError if symmetric_kernels.triton is None else ValueError
    with pytest.raises(error, match="triton|CUDA"):
        symmetric_kernels.gram(torch.zeros(1, 4, 6, dtype=torch.bfloat16))


@pytest.mark.parametrize("check", [check_kernels, check_newton_schulz, check_muon])
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_gpu(check):
    check("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_one_b_shapes_on_gpu():
    """The 1B model's stacks (bench/optimizer.py --shapes 1b), with the CUDA tiles: each product to bf16 rounding
    of torch's, and five Newton–Schulz steps to the same matrices."""
    from orthonoise.optim.symmetric_kernels import gram, gram_polynomial
    from tests.conftest import load_bench

    bench = load_bench("optimizer")
    shapes = bench.matrix_shapes(**bench.PRESETS["1b"])
    gen = torch.Generator(device="cuda").manual_seed(3)
    for shape in sorted(set(shapes)):
        G = torch.randn((shapes.count(shape), *shape), generator=gen, device="cuda")
        X = (G if shape[0] <= shape[1] else G.mT).bfloat16()
        X = X / X.norm(dim=(-2, -1), keepdim=True)
        A = gram(X)
        assert_bf16_close(A, (X.float() @ X.float().mT), ulps=1)
        b, c = MUON_COEFFICIENTS[1:]
        assert_bf16_close(gram_polynomial(A, b, c), torch.baddbmm(A.float(), A.float(), A.float(), beta=b, alpha=c))
        # at these sizes a different fp32 summation order alone moves five steps by ~0.5% (a CPU measurement)
        ours, torchs = newton_schulz(G, NS5, ns_kernel="triton_symmetric"), newton_schulz(G, NS5)
        assert relative_error(ours, torchs) < torch_tolerance(), (shape, relative_error(ours, torchs))
