"""The registry of optimizer kinds is the one list: every config option of the optimizer group is in it, with
the class that option builds, and the matching rule for controls finds the right run."""
import shutil
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_class, instantiate

from orthonoise.errors import ConfigError
from orthonoise.optim import REGISTRY, Kind, Muon, NoisyMuon, Role, build_optimizers, kind_of, noise
from orthonoise.optim.muon import check
from orthonoise.optim.noise import DISTRIBUTIONS
from orthonoise.optim.registry import GENERIC_NOISE_TARGET, kinds, matches
from orthonoise.validate import validate_settings

CONF = Path(__file__).resolve().parents[2] / "conf"


def optimizer_options(conf: Path = CONF) -> list[str]:
    """The `optimizer` group's options: its yaml files but the shared parts (a leading underscore, as _noise.yaml)."""
    return sorted(p.stem for p in (conf / "optimizer").glob("*.yaml") if not p.stem.startswith("_"))


def test_every_optimizer_config_is_a_registered_kind_with_its_class(compose_cfg):
    options = optimizer_options()
    assert options == sorted(REGISTRY)
    for name in options:
        cfg = compose_cfg(f"optimizer={name}")
        kind = kind_of(cfg.optimizer._target_, cfg.optimizer.get("distribution"))
        assert kind is REGISTRY[name]
        cls = get_class(kind.target)
        assert issubclass(cls, Muon) == kind.muon_family
        assert (kind.distribution is not None) == issubclass(cls, NoisyMuon)


def test_roles_and_comparisons_are_consistent():
    assert [k.name for k in kinds(Role.BASELINE)] == ["muon"] and REGISTRY["orthonoise"] in kinds(Role.METHOD)
    for kind in REGISTRY.values():
        assert kind.compared_with is None or kind.compared_with in REGISTRY
        assert kind.distribution is None or kind.distribution in DISTRIBUTIONS
        if kind.role == Role.CONTROL:
            assert REGISTRY[kind.matched_to].role == Role.METHOD
    assert REGISTRY["isotropic"].matched_to == "orthonoise" and REGISTRY["isotropic"].compared_with == "muon"
    assert kind_of("torch.optim.SGD") is None
    assert kind_of("orthonoise.optim.NoisyMuon", "isotropic") is REGISTRY["isotropic"]
    assert kind_of("orthonoise.optim.NoisyMuon") is REGISTRY["orthonoise"]  # NoisyMuon's default distribution
    assert kind_of("orthonoise.optim.NoisyMuon", "cauchy") is None
    # a kind is a (class, distribution) pair, and a NoisyMuon run's distribution names one kind
    assert len({(k.target, k.distribution) for k in REGISTRY.values()}) == len(REGISTRY)
    noisy = [k.distribution for k in REGISTRY.values() if k.distribution is not None]
    assert len(set(noisy)) == len(noisy)
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


def rademacher(shape, *, generator=None, device=None, seeds=None):
    """A scratch distribution: random signs with ‖N‖_F = sqrt(min(m, n)), as every distribution's."""
    return noise.gaussian(shape, generator=generator, device=device, seeds=seeds).sign() / max(shape[-2:]) ** 0.5


def scratch_conf(tmp_path: Path, option: str, yaml: str) -> Path:
    """A copy of conf/ with one more optimizer option, as the walk-through's step writes it."""
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "optimizer" / f"{option}.yaml").write_text(yaml)
    return conf


def compose_from(conf: Path, *overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def labels(conf: Path) -> dict[str, str]:
    """Every optimizer option of `conf` → the kind its runs are labelled with."""
    configs = {name: compose_from(conf, f"optimizer={name}").optimizer for name in optimizer_options(conf)}
    return {name: kind_of(c._target_, c.get("distribution")).name for name, c in configs.items()}


def test_a_distribution_added_as_documented_gets_its_kind_and_every_kind_keeps_its_label(tmp_path, monkeypatch):
    """docs/where-to-change-what.md, "Add a noise distribution", made in a scratch copy: the sampler and its
    DISTRIBUTIONS entry, conf/optimizer/<name>.yaml composing _noise.yaml, and its Kind. Its runs get its kind;
    every shipped option, and a NoisyMuon run of each existing distribution, keep theirs."""
    monkeypatch.setitem(noise.DISTRIBUTIONS, "rademacher", noise.Distribution(rademacher))
    conf = scratch_conf(tmp_path, "rademacher", "defaults: [muon, _noise, _self_]\n"
                                                "_target_: orthonoise.optim.NoisyMuon\ndistribution: rademacher\n")
    monkeypatch.setitem(REGISTRY, "rademacher", Kind("rademacher", GENERIC_NOISE_TARGET, Role.CONTROL,
                                                     muon_family=True, compared_with="muon",
                                                     distribution="rademacher", matched_to="orthonoise"))
    assert labels(conf) == {name: name for name in optimizer_options(conf)}
    (p,) = params = [torch.nn.Parameter(torch.randn(6, 4))]
    opt = instantiate(compose_from(conf, "optimizer=rademacher").optimizer, _convert_="all")(params)
    p.grad = torch.randn(6, 4)
    opt.step()
    assert type(opt) is NoisyMuon and opt.noise.distribution.sample is rademacher
    for kind in REGISTRY.values():
        if kind.distribution is not None:
            assert kind_of(GENERIC_NOISE_TARGET, kind.distribution) is kind
    assert kind_of(GENERIC_NOISE_TARGET) is REGISTRY["orthonoise"]


class ScratchMuon(Muon):
    """The walk-through's scratch variant: Muon on g/‖g‖_F (normalize: false is Muon)."""

    def __init__(self, params, *args, normalize: bool = True, **kwargs):
        check(isinstance(normalize, bool), "normalize", normalize, "true or false")
        super().__init__(params, *args, **kwargs)
        self._set_defaults(normalize=normalize)

    def _gradient(self, group, g):
        return g / g.norm() if group["normalize"] else g


def test_a_muon_variant_added_as_documented_is_checked_built_and_labelled(tmp_path, monkeypatch):
    """docs/where-to-change-what.md, "Add a Muon variant", steps 2–4 in a scratch copy: the config check knows its
    settings, build_optimizers gives it the hidden matrices, its runs get its kind and every other kind keeps its."""
    target = f"{__name__}.ScratchMuon"
    conf = scratch_conf(tmp_path, "scratch", f"defaults: [muon, _self_]\n_target_: {target}\nnormalize: true\n")
    monkeypatch.setitem(REGISTRY, "scratch", Kind("scratch", target, Role.METHOD, muon_family=True,
                                                  compared_with="muon"))
    assert labels(conf) == {name: name for name in optimizer_options(conf)}
    cfg = compose_from(conf, "optimizer=scratch")
    validate_settings(cfg)
    with pytest.raises(ConfigError, match="optimizer.normalise"):
        validate_settings(compose_from(conf, "optimizer=scratch", "+optimizer.normalise=false"))
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    optimizers = build_optimizers(model, cfg, log=lambda line: None)
    assert type(optimizers[0]) is ScratchMuon and optimizers.hooked == [optimizers[0]]
    assert {id(p) for p in optimizers[0].param_groups[0]["params"]} == {id(m.weight) for m in model}


def test_a_kind_may_name_its_class_by_its_module(monkeypatch):
    """A new variant's yaml and Kind may spell `orthonoise.optim.<module>.<Class>` (no export needed)."""
    variant = Kind("scratch", "orthonoise.optim.scratch.ScratchMuon", Role.METHOD, muon_family=True,
                   compared_with="muon")
    monkeypatch.setitem(REGISTRY, "scratch", variant)
    assert kind_of("orthonoise.optim.scratch.ScratchMuon") is variant
    assert kind_of("orthonoise.optim.ScratchMuon") is variant
    assert kind_of("orthonoise.optim.Muon") is REGISTRY["muon"]
