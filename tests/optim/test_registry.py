"""The registry of optimizer kinds is the one list: every config option of the optimizer group is in it, with
the class that option builds, and the matching rule for controls finds the right run."""
from pathlib import Path

import pytest
from hydra.utils import get_class

from orthonoise.optim import REGISTRY, Muon, NoisyMuon, Role, kind_of
from orthonoise.optim.noise import DISTRIBUTIONS
from orthonoise.optim.registry import kinds, matches

CONF = Path(__file__).resolve().parents[2] / "conf" / "optimizer"


def test_every_optimizer_config_is_a_registered_kind_with_its_class(compose_cfg):
    options = sorted(p.stem for p in CONF.glob("*.yaml"))
    assert options == sorted(REGISTRY)
    for name in options:
        cfg = compose_cfg(f"optimizer={name}")
        kind = kind_of(cfg.optimizer._target_, cfg.optimizer.get("distribution"))
        assert kind is REGISTRY[name]
        cls = get_class(kind.target)
        assert issubclass(cls, Muon) == kind.muon_family
        assert (kind.distribution is not None) == issubclass(cls, NoisyMuon)


def test_roles_and_comparisons_are_consistent():
    assert [k.name for k in kinds(Role.BASELINE)] == ["muon"] and [k.name for k in kinds(Role.METHOD)] == ["orthonoise"]
    for kind in REGISTRY.values():
        assert kind.compared_with is None or kind.compared_with in REGISTRY
        assert kind.distribution is None or kind.distribution in DISTRIBUTIONS
        if kind.role == Role.CONTROL:
            assert REGISTRY[kind.matched_to].role == Role.METHOD
    assert REGISTRY["isotropic"].matched_to == "orthonoise" and REGISTRY["isotropic"].compared_with == "muon"
    assert kind_of("torch.optim.SGD") is None
    assert kind_of("orthonoise.optim.NoisyMuon", "isotropic") is REGISTRY["isotropic"]
    # a class named by its defining module is the kind the configs name by the package
    assert kind_of("orthonoise.optim.noisy.OrthoNoise") is REGISTRY["orthonoise"]
    assert kind_of("orthonoise.optim.muon.Muon") is REGISTRY["muon"]


ISO = {"optimizer._target_": "orthonoise.optim.IsotropicNoise", "optimizer.alpha": 1e-3, "optimizer.lr": 0.02,
       "noise.schedule": "linear", "noise.end_factor": 0.1, "seed": 1}
ORTHO = {**ISO, "optimizer._target_": "orthonoise.optim.OrthoNoise", "optimizer.sampler": "cholesky", "seed": 2}


@pytest.mark.parametrize("other,matched", [
    (ORTHO, True),  # differs only in the class, its sampler, and the seed (not a matched key)
    ({**ORTHO, "optimizer.alpha": 5e-3}, False),
    ({**ORTHO, "noise.schedule": "constant"}, False),
    ({k: v for k, v in ORTHO.items() if k != "noise.end_factor"}, False),  # another set of noise keys
    ({**ISO, "seed": 2}, False),  # not the method
    ({**ORTHO, "optimizer._target_": "orthonoise.optim.Muon"}, False),
    ({**ORTHO, "optimizer._target_": "orthonoise.optim.noisy.OrthoNoise"}, True),
])
def test_a_control_is_matched_to_the_method_run_with_its_settings(other, matched):
    assert matches(REGISTRY["isotropic"], ISO, other) is matched
    assert not matches(REGISTRY["orthonoise"], ORTHO, ISO)  # only controls have a match


def test_matching_compares_numbers_as_numbers():
    control, method = {**ISO, "optimizer.weight_decay": 0}, {**ORTHO, "optimizer.weight_decay": 0.0}
    assert matches(REGISTRY["isotropic"], control, method)
    assert not matches(REGISTRY["isotropic"], control, {**method, "optimizer.weight_decay": 0.1})
