"""Where the noise enters (perturb: momentum / update) and what else it changes: with the defaults, nothing.

The relative difference between a noise variant's update and Muon's must vanish as alpha → 0, in every option,
or a verdict "OrthoNoise beats Muon" would measure something other than the noise."""
import pytest
import torch

from orthonoise.optim import IsotropicNoise, Muon, OrthoNoise
from orthonoise.optim.orthogonalize import svd_polar

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


# Every noise option, each with the settings it differs in from Muon's defaults (alpha aside).
NOISE_OPTIONS = {
    "momentum": {},
    "momentum, svd": dict(orthogonalizer="svd"),
    "buffer": dict(noise_into_buffer=True),
    "update": dict(perturb="update"),
    "update, svd": dict(perturb="update", orthogonalizer="svd"),
    "update, 1 step": dict(perturb="update", ns_steps_noise=1),
    "rank gate": dict(rank_threshold=1.0, rank_every=1),  # every matrix is below full rank: all get noise
    "qr sampler": dict(sampler="qr"),
    "polar sampler": dict(sampler="polar"),
    "cosine schedule": dict(schedule="cosine", schedule_steps=2),
}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("option", NOISE_OPTIONS)
@pytest.mark.parametrize("cls", [OrthoNoise, IsotropicNoise])
def test_every_noise_option_converges_to_muon_as_alpha_vanishes(cls, option, shape):
    """α → 0 is Muon's update within bf16 resolution (2⁻⁸ = 4e-3 relative), in both readings of where the noise
    enters; the same option at alpha = 5e-3 is not (so the comparison can fail)."""
    settings = {k: v for k, v in NOISE_OPTIONS[option].items() if k != "sampler" or cls is OrthoNoise}
    shared = {k: v for k, v in settings.items() if k == "orthogonalizer"}
    muon = last_update(lambda ps: Muon(ps, lr=0.02, **shared), shape)
    vanishing = last_update(lambda ps: cls(ps, lr=0.02, alpha=1e-9, seed=1, **settings), shape)
    noisy = last_update(lambda ps: cls(ps, lr=0.02, alpha=5e-3, seed=1, **settings), shape)
    assert relative_difference(vanishing, muon) < 1e-3 < 1e-2 < relative_difference(noisy, muon)


@pytest.mark.parametrize("cls", [OrthoNoise, IsotropicNoise])
def test_fewer_newton_schulz_steps_are_a_second_change(cls):
    """ns_steps_noise in the momentum reading moves the update by several percent at α → 0: not noise."""
    for shape in SHAPES:
        muon = last_update(lambda ps: Muon(ps, lr=0.02), shape)
        fewer_steps = last_update(lambda ps: cls(ps, lr=0.02, alpha=1e-9, seed=1, ns_steps_noise=3), shape)
        assert relative_difference(fewer_steps, muon) > 0.05


@pytest.mark.parametrize("cls", [OrthoNoise, IsotropicNoise])
def test_update_reading_with_alpha_zero_is_muon_exactly(cls):
    for shape in SHAPES:
        muon = last_update(lambda ps: Muon(ps, lr=0.02), shape)
        assert torch.equal(last_update(lambda ps: cls(ps, lr=0.02, alpha=0.0, seed=1, perturb="update"), shape), muon)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("cls", [OrthoNoise, IsotropicNoise])
def test_update_reading_turns_the_update_and_keeps_its_size(cls, shape):
    """The noise changes the update's direction, not its singular values: they stay Muon's to first order in the
    noise (here ~100× less change than the update's), and with an exact orthogonaliser the update stays orthogonal.
    alpha = 1e-3 is a ~5% perturbation of O at this step (‖g‖/‖U‖ ≈ 7 with uncorrelated gradients)."""
    lr, adjust = 0.1, max(1.0, shape[0] / shape[1]) ** 0.5
    for orthogonalizer in ("newton_schulz", "svd"):
        settings = dict(lr=lr, weight_decay=0.0, orthogonalizer=orthogonalizer)
        delta = last_update(lambda ps: cls(ps, alpha=1e-3, seed=2, perturb="update", **settings), shape, steps=2)
        muon = last_update(lambda ps: Muon(ps, **settings), shape, steps=2)
        s, s_muon = (torch.linalg.svdvals(-d / (lr * adjust)) for d in (delta, muon))
        assert relative_difference(delta, muon) > 0.02
        assert relative_difference(s, s_muon) < 0.02 * relative_difference(delta, muon)
        if orthogonalizer == "svd":
            assert (s - 1).abs().max() < 1e-3


def test_update_reading_re_orthogonalises_the_noisy_update_of_an_orthogonal_one():
    """Where Muon's update O is orthogonal, the update reading is the plan's Õ = O + ε·N re-orthogonalised (its
    polar factor), to the float32 accuracy of the 3 re-orthogonalisation steps."""
    from orthonoise.optim.update import perturb_update

    gen = torch.Generator().manual_seed(3)
    O = svd_polar(torch.randn(4, 40, 24, generator=gen))
    U, N = 7 * torch.randn(4, 40, 24, generator=gen), 0.3 * torch.randn(4, 40, 24, generator=gen)
    ratio = O.norm(dim=(-2, -1), keepdim=True) / U.norm(dim=(-2, -1), keepdim=True)
    torch.testing.assert_close(perturb_update(O, U, N, steps=3), svd_polar(O + ratio * N), atol=1e-4, rtol=0)


def test_update_reading_cannot_go_into_the_buffer():
    with pytest.raises(ValueError, match="^perturb must be 'momentum' when noise_into_buffer"):
        OrthoNoise([torch.nn.Parameter(torch.zeros(4, 4))], perturb="update", noise_into_buffer=True)
    with pytest.raises(ValueError, match="^perturb must be one of"):
        OrthoNoise([torch.nn.Parameter(torch.zeros(4, 4))], perturb="weights")


def test_a_new_distribution_is_one_entry_for_the_generic_noise_variant(monkeypatch):
    """docs/optimizers.md's "adding a noise distribution": a sampler in DISTRIBUTIONS is all NoisyMuon needs
    (seeding per matrix, drawing ahead, the schedule, resume)."""
    from orthonoise.optim import NoisyMuon, noise
    from tests.optim.test_registry import rademacher

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
