import math

import pytest
import torch

import orthonoise.optim.noise as noise
from orthonoise.optim.noise import (
    RANK_METHODS,
    SAMPLERS,
    effective_rank,
    haar_from_gaussian,
    isotropic_noise,
    orthogonal_noise,
    polar_schedule,
)

SHAPES = [(3, 80, 20), (3, 20, 80), (3, 48, 48), (70, 50)]
POLAR_SHAPES = [(3, 300, 40), (3, 40, 300)]  # big enough for the polar sampler's own path (the rest fall back)


def gram_error(Q):
    G = Q.mT @ Q if Q.size(-2) >= Q.size(-1) else Q @ Q.mT
    return (G - torch.eye(G.size(-1))).abs().max().item()


@pytest.mark.parametrize("method", SAMPLERS)
@pytest.mark.parametrize("shape", SHAPES + POLAR_SHAPES)
def test_orthogonal_noise_is_orthonormal_in_float32(shape, method):
    Q = orthogonal_noise(shape, generator=torch.Generator().manual_seed(0), method=method)
    assert Q.dtype == torch.float32 and Q.shape == shape
    assert gram_error(Q) < 1e-5


@pytest.mark.parametrize("shape", SHAPES)
def test_orthonormal_from_bf16_gaussian(shape):
    G = torch.randn(shape, generator=torch.Generator().manual_seed(1)).bfloat16()
    assert gram_error(haar_from_gaussian(G)) < 1e-5
    assert gram_error(haar_from_gaussian(G, "qr")) < 1e-5


def test_ill_conditioned_square_gaussian_stays_orthonormal():
    G = torch.randn(64, 64, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    U, S, Vh = torch.linalg.svd(G)
    S[-1] = S[0] * 1e-9  # far beyond what plain float32 Cholesky-QR survives
    assert gram_error(haar_from_gaussian((U * S) @ Vh)) < 1e-5


@pytest.mark.parametrize("shape", [(60, 20), (20, 60), (30, 30)])
def test_cholesky_gives_the_sign_corrected_qr_factor(shape):
    # same Q as Householder QR with sign(diag R) folded in, so the same (Haar) distribution
    G = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(haar_from_gaussian(G, "cholesky"), haar_from_gaussian(G, "qr"), atol=2e-4, rtol=0)


def random_orthogonal(n, seed):
    return torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))[0]


@pytest.mark.parametrize("method", SAMPLERS)
@pytest.mark.parametrize("shape", [(60, 20), (30, 30), (300, 40), (40, 300)])
def test_samplers_are_rotation_equivariant_hence_haar(shape, method):
    # Q(HG) = H·Q(G) for every orthogonal H, and HG is as Gaussian as G: so Q's law is rotation-invariant, which
    # only the Haar measure is (for wide shapes, rotating the rows: Q(GH) = Q(G)·H).
    G = torch.randn(shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    wide = shape[0] < shape[1]
    H = random_orthogonal(shape[1] if wide else shape[0], seed=7)
    rotated = haar_from_gaussian((G @ H if wide else H @ G).float(), method).double()
    Q = haar_from_gaussian(G.float(), method).double()
    torch.testing.assert_close(rotated, Q @ H if wide else H @ Q, atol=1e-4, rtol=0)


@pytest.mark.parametrize("shape", POLAR_SHAPES)
def test_polar_sampler_is_the_polar_factor(shape):
    G = torch.randn(shape, generator=torch.Generator().manual_seed(8))
    U, _, Vh = torch.linalg.svd(G.double(), full_matrices=False)
    torch.testing.assert_close(haar_from_gaussian(G, "polar").double(), U @ Vh, atol=1e-5, rtol=0)


def tf32_matmul(a, b):
    """A GPU's TF32 GEMM, emulated: inputs rounded to 10 mantissa bits, products summed exactly."""
    def tf32(x):
        return ((x.float().contiguous().view(torch.int32) + (1 << 12)) & -(1 << 13)).view(torch.float32)
    return (tf32(a).double() @ tf32(b).double()).float()


@pytest.mark.parametrize("shape", POLAR_SHAPES + [pytest.param((2, 1536, 768), marks=pytest.mark.simulation)])
def test_polar_sampler_is_float32_orthonormal_with_tf32_gemms(shape, monkeypatch):
    monkeypatch.setattr(noise, "_fast_matmul", tf32_matmul)
    Q = haar_from_gaussian(torch.randn(shape, generator=torch.Generator().manual_seed(9)), "polar").double()
    gram = Q.mT @ Q if shape[-2] >= shape[-1] else Q @ Q.mT
    assert (gram - torch.eye(gram.size(-1), dtype=torch.float64)).abs().max() < 3e-6  # LAPACK float32 QR: ~1e-6
    # the emulation does bite: a plain TF32 Gram of that very Q is off by ~1e-4
    Q = Q.float() if shape[-2] >= shape[-1] else Q.float().mT
    assert (tf32_matmul(Q.mT, Q) - torch.eye(Q.size(-1))).abs().max() > 1e-5


def test_polar_schedule_takes_every_singular_value_in_its_bounds_to_one():
    for m, n in [(300, 40), (1536, 768), (4096, 768), (3072, 1536)]:
        schedule = polar_schedule(m, n)
        t = 6.5  # the schedule's tail: σ(G) in √m ± √n ± t outside an event of probability < 1e-9
        c = (math.sqrt(m) + math.sqrt(n) + t) ** 2
        low = math.sqrt(m) - math.sqrt(n) - t
        sigma = torch.linspace(low, math.sqrt(c), 10_001, dtype=torch.float64) / math.sqrt(c)
        for a, b in schedule:
            sigma = sigma * (a + b * sigma**2)  # one step T = aI + b·ZY on the singular values of G·Z
        assert (sigma - 1).abs().max() < 1e-4, (m, n)
        assert len(schedule) <= 6  # plain Newton–Schulz needs up to 10 here
    assert polar_schedule(80, 20) is None and polar_schedule(768, 768) is None  # these take the Cholesky path
    G = torch.randn(80, 20, generator=torch.Generator().manual_seed(10))
    assert torch.equal(haar_from_gaussian(G, "polar"), haar_from_gaussian(G, "cholesky"))


def test_haar_first_column_is_uniform_on_the_sphere():
    # E[Q11] = 0 and E[Q11²] = 1/n for a Haar-distributed Q; plain (uncorrected) QR fails the mean.
    Q = orthogonal_noise((4000, 8, 8), generator=torch.Generator().manual_seed(4))
    first = Q[:, 0, 0]
    assert abs(first.mean()) < 0.02 and abs(first.pow(2).mean() - 1 / 8) < 0.01
    plain = torch.linalg.qr(torch.randn(4000, 8, 8, generator=torch.Generator().manual_seed(4)))[0][:, 0, 0]
    assert abs(plain.mean()) > 0.1


@pytest.mark.parametrize("shape", SHAPES)
def test_isotropic_and_orthogonal_norms_match(shape):
    gen = torch.Generator().manual_seed(5)
    N, Q = isotropic_noise(shape, generator=gen), orthogonal_noise(shape, generator=gen)
    expected = torch.full(shape[:-2], math.sqrt(min(shape[-2:])))
    torch.testing.assert_close(N.norm(dim=(-2, -1)), expected)
    torch.testing.assert_close(Q.norm(dim=(-2, -1)), expected)
    assert gram_error(N) > 0.1  # and the isotropic one is not orthogonal


@pytest.mark.parametrize("method", RANK_METHODS)
def test_effective_rank_of_known_spectra(method):
    assert effective_rank(torch.eye(17), method).item() == pytest.approx(17, rel=1e-5)
    u, v = torch.randn(30), torch.randn(20)
    assert effective_rank(torch.outer(u, v), method).item() == pytest.approx(1, abs=1e-3)
    D = torch.diag(torch.tensor([3.0, 1.0, 0.0, 0.0]))  # p = (3/4, 1/4)
    expected = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert effective_rank(D, method).item() == pytest.approx(expected)
    batch = effective_rank(torch.stack([torch.eye(5), torch.zeros(5, 5)]), method)
    assert batch.tolist() == pytest.approx([5.0, 0.0])


@pytest.mark.parametrize("shape", [(4, 96, 32), (4, 32, 96), (4, 40, 40)])
def test_effective_rank_methods_agree(shape):
    gen = torch.Generator().manual_seed(11)
    U, _, Vh = torch.linalg.svd(torch.randn(shape, generator=gen, dtype=torch.float64), full_matrices=False)
    k = min(shape[-2:])
    spectra = torch.stack([torch.ones(k), torch.logspace(0, -7, k), torch.logspace(0, -2, k) ** 3,
                           torch.cat([torch.ones(3), torch.zeros(k - 3)])]).double()
    X = ((U * spectra[:, None, :]) @ Vh).float()  # flat, steep, moderate and rank-3 spectra
    torch.testing.assert_close(effective_rank(X, "gram"), effective_rank(X, "svd"), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="effective-rank method"):
        effective_rank(X, "eig")
