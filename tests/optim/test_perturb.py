"""Where the noise enters (perturb: momentum / update) and what else it changes: with the defaults, nothing.

The relative difference between a noise variant's update and Muon's must vanish as alpha → 0, or a verdict
"OrthoNoise beats Muon" would measure something other than the noise."""
import pytest
import torch

from orthonoise.optim import IsotropicNoise, Muon, OrthoNoise
from orthonoise.optim.orthogonalize import reorthogonalize

SHAPES = [(64, 32), (32, 64), (48, 48)]  # tall, wide, square


def last_update(make, shape, steps=3):
    """W's change at the last of `steps` steps on the same random gradients, from the same start."""
    gen = torch.Generator().manual_seed(0)
    (p,) = params = [torch.nn.Parameter(torch.randn(shape, generator=gen))]
    opt = make(params)
    for _ in range(steps):
        p.grad = torch.randn(shape, generator=gen)
        before = p.detach().clone()
        opt.step()
    return p.detach() - before


def relative_difference(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("cls", [OrthoNoise, IsotropicNoise])
def test_noise_variants_converge_to_muon_as_alpha_vanishes(cls, shape):
    muon = last_update(lambda ps: Muon(ps, lr=0.02), shape)
    noisy = last_update(lambda ps: cls(ps, lr=0.02, alpha=1e-9, seed=1), shape)
    assert relative_difference(noisy, muon) < 1e-3
    # ns_steps_noise is a second change: it alone moves the update by several percent
    fewer_steps = last_update(lambda ps: cls(ps, lr=0.02, alpha=1e-9, seed=1, ns_steps_noise=3), shape)
    assert relative_difference(fewer_steps, muon) > 0.05


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("cls", [OrthoNoise, IsotropicNoise])
def test_update_reading_converges_to_muon_re_orthogonalised(cls, shape):
    """perturb=update as alpha → 0: Muon's update, re-orthogonalised; that is Muon's update itself when Muon's
    orthogonaliser is exact (svd). Muon's 5 Newton–Schulz steps leave singular values in ~[0.7, 1.2], which the
    re-orthogonalisation takes towards 1: a difference that is not noise (docs/optimizers.md)."""
    for orthogonalizer in ("svd", "newton_schulz"):
        settings = dict(lr=0.02, weight_decay=0.0, orthogonalizer=orthogonalizer)
        muon = last_update(lambda ps: Muon(ps, **settings), shape)
        noisy = last_update(lambda ps: cls(ps, alpha=1e-9, seed=1, perturb="update", **settings), shape)
        if orthogonalizer == "svd":
            assert relative_difference(noisy, muon) < 1e-3
    # Muon's last update is −lr·adjust·O: re-orthogonalise that O with the same 3 steps
    scale = 0.02 * max(1.0, shape[0] / shape[1]) ** 0.5
    polished = -scale * reorthogonalize(-muon[None] / scale, steps=3)[0]
    assert relative_difference(noisy, polished) < 1e-2 and relative_difference(noisy, muon) > 0.05


@pytest.mark.parametrize("cls", [OrthoNoise, IsotropicNoise])
def test_update_reading_with_alpha_zero_is_muon_exactly(cls):
    for shape in SHAPES:
        muon = last_update(lambda ps: Muon(ps, lr=0.02), shape)
        assert torch.equal(last_update(lambda ps: cls(ps, lr=0.02, alpha=0.0, seed=1, perturb="update"), shape), muon)


@pytest.mark.parametrize("shape,orthogonalizer", [((64, 32), "newton_schulz"), ((32, 64), "newton_schulz"),
                                                 ((48, 48), "svd")])
@pytest.mark.parametrize("cls", [OrthoNoise, IsotropicNoise])
def test_update_reading_gives_an_orthogonal_update(cls, shape, orthogonalizer):
    """The applied update is lr·adjust·Õ with Õ orthogonal (to bf16 rounding); and it differs from Muon's by the
    noise (alpha = 5e-3 is a ~20% perturbation of O at this step: ‖g‖/‖U‖ ≈ 7 with uncorrelated gradients)."""
    lr, adjust = 0.1, max(1.0, shape[0] / shape[1]) ** 0.5
    delta = last_update(lambda ps: cls(ps, lr=lr, weight_decay=0.0, alpha=5e-3, seed=2, perturb="update",
                                       orthogonalizer=orthogonalizer), shape, steps=2)
    s = torch.linalg.svdvals(-delta / (lr * adjust))
    assert (s - 1).abs().max() < 2e-2
    muon = last_update(lambda ps: Muon(ps, lr=lr, weight_decay=0.0, orthogonalizer=orthogonalizer), shape, steps=2)
    assert relative_difference(delta, muon) > 0.01


def test_update_reading_cannot_go_into_the_buffer():
    with pytest.raises(ValueError, match="^perturb must be 'momentum' when noise_into_buffer"):
        OrthoNoise([torch.nn.Parameter(torch.zeros(4, 4))], perturb="update", noise_into_buffer=True)
    with pytest.raises(ValueError, match="^perturb must be one of"):
        OrthoNoise([torch.nn.Parameter(torch.zeros(4, 4))], perturb="weights")


def test_a_new_distribution_is_one_entry_for_the_generic_noise_variant(monkeypatch):
    """docs/optimizers.md's "adding a noise distribution": a sampler in DISTRIBUTIONS is all NoisyMuon needs
    (seeding per matrix, drawing ahead, the schedule, resume)."""
    from orthonoise.optim import NoisyMuon, noise

    def rademacher(shape, *, generator=None, device=None, seeds=None):
        signs = noise.gaussian(shape, generator=generator, device=device, seeds=seeds).sign()
        return signs / max(shape[-2:]) ** 0.5  # ‖N‖_F = sqrt(min(m, n)), as every distribution's

    monkeypatch.setitem(noise.DISTRIBUTIONS, "rademacher", noise.Distribution(rademacher))
    direct = last_update(lambda ps: NoisyMuon(ps, distribution="rademacher", alpha=0.05, seed=1), (16, 8))
    ahead_params = [torch.nn.Parameter(torch.randn((16, 8), generator=torch.Generator().manual_seed(0)))]
    opt = NoisyMuon(ahead_params, distribution="rademacher", alpha=0.05, seed=1)
    gen = torch.Generator().manual_seed(0)
    torch.randn((16, 8), generator=gen)  # as last_update draws the start first
    for _ in range(3):
        opt.prepare()
        ahead_params[0].grad = torch.randn((16, 8), generator=gen)
        before = ahead_params[0].detach().clone()
        opt.step()
    assert torch.equal(ahead_params[0].detach() - before, direct)
    assert relative_difference(direct, last_update(lambda ps: Muon(ps), (16, 8))) > 0.01
