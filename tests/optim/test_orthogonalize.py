import pytest
import torch

from orthonoise.optim.noise import haar_from_gaussian
from orthonoise.optim.orthogonalize import (
    MUON_COEFFICIENTS,
    POLAR_EXPRESS_COEFFICIENTS,
    coefficient_schedule,
    newton_schulz,
    reorthogonalize,
    spectral_norm_bound,
    svd_polar,
)

SHAPES = [(96, 32), (32, 96), (64, 64)]


def singular_values(O):
    return torch.linalg.svdvals(O.float())


@pytest.mark.parametrize("shape", SHAPES)
def test_newton_schulz_matches_torch_reference(shape):
    from torch.optim._muon import _zeropower_via_newtonschulz

    X = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    ours = newton_schulz(X[None], coefficient_schedule(MUON_COEFFICIENTS, 5))[0]
    ref = _zeropower_via_newtonschulz(X, MUON_COEFFICIENTS, 5, 1e-7)
    torch.testing.assert_close(ours.float(), ref.float(), atol=1e-2, rtol=0)


def test_batched_equals_one_by_one():
    X = torch.randn(5, 40, 24, generator=torch.Generator().manual_seed(1))
    coeffs = coefficient_schedule(MUON_COEFFICIENTS, 5)
    alone = torch.stack([newton_schulz(x[None], coeffs)[0] for x in X])
    torch.testing.assert_close(newton_schulz(X, coeffs).float(), alone.float(), atol=1e-2, rtol=0)


@pytest.mark.parametrize("shape", SHAPES)
def test_muon_ns_lands_in_its_band_and_polar_express_converges(shape):
    X = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    s = singular_values(newton_schulz(X[None], coefficient_schedule(MUON_COEFFICIENTS, 5)))
    assert 0.6 < s.min() and s.max() < 1.25  # Keller Jordan's quintic: roughly Uniform(0.7, 1.2)
    s = singular_values(newton_schulz(X[None], coefficient_schedule("polar_express", 8), safety=1.01))
    assert (s - 1).abs().max() < 0.05  # converges tighter, to bf16 precision


def test_coefficient_schedules():
    assert coefficient_schedule(MUON_COEFFICIENTS, 3) == [MUON_COEFFICIENTS] * 3
    pe = coefficient_schedule("polar_express", 10)
    assert pe[:8] == POLAR_EXPRESS_COEFFICIENTS and pe[8:] == [(1.875, -1.25, 0.375)] * 2
    assert coefficient_schedule([[1, 2, 3], [4, 5, 6]], 3) == [(1, 2, 3), (4, 5, 6), (4, 5, 6)]
    for bad in ["cubic", [1, 2], [[1, 2, 3], [4, 5]]]:
        with pytest.raises(ValueError):
            coefficient_schedule(bad, 5)


@pytest.mark.parametrize("shape", SHAPES)
def test_svd_is_the_exact_polar_factor(shape):
    X = torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    U, _, Vh = torch.linalg.svd(X, full_matrices=False)
    torch.testing.assert_close(svd_polar(X[None].bfloat16().float())[0].double(), U @ Vh, atol=0.15, rtol=0)
    torch.testing.assert_close(svd_polar(X.float()[None])[0].double(), U @ Vh, atol=1e-4, rtol=0)


def test_zero_input_gives_zero_not_nan():
    Z = torch.zeros(2, 8, 5)
    assert newton_schulz(Z, coefficient_schedule(MUON_COEFFICIENTS, 5)).abs().max() == 0
    assert svd_polar(Z).abs().max() == 0


@pytest.mark.parametrize("shape", [(96, 32), (32, 96), (4, 128, 48)])
def test_reorthogonalize_accuracy_grows_with_its_steps(shape):
    """From Muon's update (σ in ~[0.7, 1.2]) plus a 5% orthogonal perturbation, each fixed-point quintic step
    shrinks max|σ − 1| (~cubically); 3 steps, the default, reach float32 precision."""
    X = torch.randn(shape, generator=torch.Generator().manual_seed(4))
    O = newton_schulz(X, coefficient_schedule(MUON_COEFFICIENTS, 5)).float()
    Q = haar_from_gaussian(torch.randn(shape, generator=torch.Generator().manual_seed(5)))
    perturbed = O + 0.05 * Q
    errors = [(singular_values(reorthogonalize(perturbed, steps)) - 1).abs().max().item() for steps in range(5)]
    assert errors[0] > 0.2  # the head start: not yet orthogonal
    assert all(a > b for a, b in zip(errors[:3], errors[1:3])) and errors[3] < 1e-5 and errors[4] < 1e-5


def test_reorthogonalize_keeps_an_orthogonal_matrix_and_zero():
    U, _, Vh = torch.linalg.svd(torch.randn(40, 24, generator=torch.Generator().manual_seed(6)), full_matrices=False)
    torch.testing.assert_close(reorthogonalize((U @ Vh)[None], 3)[0], U @ Vh, atol=1e-5, rtol=0)
    assert reorthogonalize(torch.zeros(2, 8, 5), 3).abs().max() == 0


@pytest.mark.parametrize("n", [8, 48, pytest.param(768, marks=pytest.mark.simulation)])  # 768: the model's width
def test_spectral_norm_bound_is_an_upper_bound_within_its_factor(n):
    scales = torch.tensor([1e-3, 1.0, 1e3])[:, None, None]  # tiny, unit and large matrices
    X = torch.randn(3, n, 2 * n, generator=torch.Generator().manual_seed(7)) * scales
    sigma = torch.linalg.matrix_norm(X, ord=2)
    bound = spectral_norm_bound(X @ X.mT, squarings=3)
    assert (bound >= sigma * (1 - 1e-5)).all() and (bound <= sigma * n ** (1 / 32) * (1 + 1e-5)).all()
