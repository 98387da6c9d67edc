"""The trainer's protocol: declared hooks with no-op defaults, reached through Optimizers."""
import torch

from orthonoise.optim import Muon, Optimizers, OrthoNoise, TrainerHooks


def test_defaults_are_no_ops_and_the_noise_variant_overrides_them():
    params = [torch.nn.Parameter(torch.randn(8, 4))]
    muon, noisy = Muon(params), OrthoNoise([torch.nn.Parameter(torch.randn(8, 4))], alpha=2e-3, seed=0)
    assert isinstance(muon, TrainerHooks) and muon.summary() == {} and muon.prepare() is None
    assert noisy.summary() == {"final_alpha": 2e-3}


def test_optimizers_forward_the_hooks_to_the_declared_ones_only():
    noisy = OrthoNoise([torch.nn.Parameter(torch.randn(8, 4))], alpha=2e-3, seed=0)
    adamw = torch.optim.AdamW([torch.nn.Parameter(torch.randn(3))])
    optimizers = Optimizers([noisy, adamw], hooked=[noisy])
    assert list(optimizers) == [noisy, adamw] and type(optimizers[1]) is torch.optim.AdamW
    optimizers.prepare()
    assert len(noisy.noise.prepared) == 1  # the next step's noise, drawn ahead
    assert optimizers.summary() == {"final_alpha": 2e-3}
    assert optimizers.metrics() == {"alpha": 2e-3, "noise_frac": 0.0, "noise_ratio": 0.0}  # no step yet: no ranks
