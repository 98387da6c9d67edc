"""The one list of optimizer kinds: what each is in the research design and what it is compared or matched with.

A kind is a config option of the `optimizer` group (conf/optimizer/<name>.yaml) and a label of the report. The
report's criteria read this registry instead of spelling kinds: a new variant joins them by its entry here.

    kind_of(target, distribution=None) -> Kind | None    from a run's optimizer._target_ and .distribution
    kinds(role) -> list[Kind]                             e.g. kinds(Role.METHOD)
    REGISTRY[name] -> Kind
    matches(kind, config, other) -> bool                  is `other` the run a control `config` is matched to
"""
from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass

from orthonoise.optim.noise import DEFAULT_DISTRIBUTION

GENERIC_NOISE_TARGET = "orthonoise.optim.NoisyMuon"  # the noise variant whose distribution a config names


class Role(str, enum.Enum):
    BASELINE = "baseline"  # what the methods must beat (Muon)
    METHOD = "method"      # under study (OrthoNoise)
    CONTROL = "control"    # isolates one ingredient of a method (the isotropic control isolates orthogonality)
    ARCHIVED = "archived"  # a comparison row kept from earlier work (NOLAH)
    REFERENCE = "reference"  # outside the Muon family (AdamW on every parameter)


@dataclass(frozen=True)
class Kind:
    name: str                      # the config option and the report's label
    target: str                    # the class, as a run's config spells it (optimizer._target_)
    role: Role
    muon_family: bool              # takes the hidden matrices, with an AdamW partner for the rest
    compared_with: str | None      # the kind its runs are judged against
    distribution: str | None = None  # the noise distribution (noise.DISTRIBUTIONS) of a noise variant
    matched_to: str | None = None  # a control's method: the run with the same settings but this kind's noise
    # A control and its method's run agree on every key under these prefixes that both configs have, except
    # `may_differ` (the class itself, and settings only one distribution has).
    match_prefixes: tuple[str, ...] = ("optimizer.", "noise.")
    may_differ: tuple[str, ...] = ("optimizer._target_", "optimizer.distribution", "optimizer.sampler")


REGISTRY: dict[str, Kind] = {kind.name: kind for kind in [
    Kind("muon", "orthonoise.optim.Muon", Role.BASELINE, muon_family=True, compared_with=None),
    Kind("orthonoise", "orthonoise.optim.OrthoNoise", Role.METHOD, muon_family=True, compared_with="muon",
         distribution="orthogonal"),
    Kind("isotropic", "orthonoise.optim.IsotropicNoise", Role.CONTROL, muon_family=True, compared_with="muon",
         distribution="isotropic", matched_to="orthonoise"),
    Kind("nolah", "orthonoise.optim.NOLAH", Role.ARCHIVED, muon_family=True, compared_with="muon"),
    Kind("adamw", "torch.optim.AdamW", Role.REFERENCE, muon_family=False, compared_with=None),
]}


def kind_of(target: str, distribution: str | None = None) -> Kind | None:
    """The kind of a run from its optimizer._target_ and optimizer.distribution: a kind is a (class, distribution)
    pair. A named noise class (OrthoNoise) fixes its distribution, so the class alone decides. The generic
    NoisyMuon reads the distribution (none named: NoisyMuon's default) and is the kind registered for that pair,
    else the named class drawing that noise (NoisyMuon with distribution: isotropic is an isotropic run). A class
    named by its defining module (orthonoise.optim.noisy.OrthoNoise) is the one named by the package
    (orthonoise.optim.OrthoNoise), in a run's config and in a Kind alike."""
    target = _package_name(target)
    if target != GENERIC_NOISE_TARGET:
        return next((kind for kind in REGISTRY.values() if _package_name(kind.target) == target), None)
    same_noise = [kind for kind in REGISTRY.values() if kind.distribution == (distribution or DEFAULT_DISTRIBUTION)]
    return next((kind for kind in same_noise if kind.target == target), next(iter(same_noise), None))


def _package_name(target: str) -> str:
    """A class of orthonoise.optim by the package's name, whether spelled so or by its module's."""
    package, _, name = target.rpartition(".")
    return f"orthonoise.optim.{name}" if package.startswith("orthonoise.optim.") else target


def kinds(role: Role) -> list[Kind]:
    return [kind for kind in REGISTRY.values() if kind.role == role]


def matches(kind: Kind, config: Mapping, other: Mapping) -> bool:
    """Whether `other` (a flat config: "optimizer.alpha" → value) is the run control `config` is matched to: of
    kind `kind.matched_to`, equal on every matched key both have, with the same set of noise keys."""
    other_kind = kind_of(str(other.get("optimizer._target_", "")), other.get("optimizer.distribution"))
    if kind.matched_to is None or other_kind is None or other_kind.name != kind.matched_to:
        return False
    if {k for k in config if k.startswith("noise.")} != {k for k in other if k.startswith("noise.")}:
        return False
    keys = [k for k in config if k in other and k.startswith(kind.match_prefixes) and k not in kind.may_differ]
    return all(_same_value(config[k], other[k]) for k in keys)


def _same_value(a, b) -> bool:
    """Equal as the configs say them, or as numbers (a YAML 0.001 and 1e-3, an int 0 and a float 0.0)."""
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
    return json.dumps(a, default=str) == json.dumps(b, default=str) or (numbers and float(a) == float(b))
