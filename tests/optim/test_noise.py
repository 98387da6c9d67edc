import math

import pytest
import torch

from orthonoise.optim.noise import effective_rank, haar_from_gaussian, isotropic_noise, orthogonal_noise

SHAPES = [(3, 80, 20), (3, 20, 80), (3, 48, 48), (70, 50)]


def gram_error(Q):
    G = Q.mT @ Q if Q.size(-2) >= Q.size(-1) else Q @ Q.mT
    return (G - torch.eye(G.size(-1))).abs().max().item()


@pytest.mark.parametrize("method", ["cholesky", "qr"])
@pytest.mark.parametrize("shape", SHAPES)
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


def test_effective_rank_of_known_spectra():
    assert effective_rank(torch.eye(17)).item() == pytest.approx(17, rel=1e-5)
    u, v = torch.randn(30), torch.randn(20)
    assert effective_rank(torch.outer(u, v)).item() == pytest.approx(1, abs=1e-3)
    D = torch.diag(torch.tensor([3.0, 1.0, 0.0, 0.0]))  # p = (3/4, 1/4)
    assert effective_rank(D).item() == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))
    batch = effective_rank(torch.stack([torch.eye(5), torch.zeros(5, 5)]))
    assert batch.tolist() == pytest.approx([5.0, 0.0])
