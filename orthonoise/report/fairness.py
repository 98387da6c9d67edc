"""Like against like: the settings an arm and its baseline differ in beyond what the comparison is about.

What a comparison is about is read from the two configs and the registry of optimizer kinds
(orthonoise/optim/registry.py), not from a list of names: the optimizer class and the kind's `may_differ` keys
(distribution, sampler); every `optimizer.` key only one of the two optimizers takes (OrthoNoise's alpha, perturb,
rank_threshold, noise_into_buffer, ns_steps_noise, its schedule keys, ...); the alpha schedule group `noise.`; and,
between optimizers of different families (Muon against AdamW), the whole `optimizer.` node, whose keys mean
different things to each (a Muon lr is not an AdamW lr). Every other key that differs is a training setting
(the lr or weight decay of the shared algorithm, the AdamW partner, batch, precision, ...; model, data and trainer
settings never differ: groups are only paired within one setting) and is named in the report. It forbids a
verdict unless the plan declares it: `plan.declared_differences`, a list of dotted config keys in the runs'
composed config (e.g. the tuned baseline's learning-rate grid declares `optimizer.lr`).
"""
from __future__ import annotations

from dataclasses import dataclass

from orthonoise.optim.registry import kind_of

from .engine import FAIL, INCONCLUSIVE, PASS
from .groups import Group, canonical, short

DECLARED_KEY = "plan.declared_differences"
OPTIMIZER, TARGET, SCHEDULE = "optimizer.", "optimizer._target_", "noise."
ABSENT = "(not set)"


@dataclass(frozen=True)
class Difference:
    key: str
    arm: object
    baseline: object
    declared: bool  # the plan says the two arms differ in this key on purpose

    def text(self) -> str:
        return f"{self.key} {short(self.arm)} vs {short(self.baseline)}"


def declared_keys(*groups: Group) -> set[str]:
    """The keys the runs of these groups declare as intended differences (their configs' plan.declared_differences)."""
    keys = set()
    for g in groups:
        for run in g.runs:
            value = run.flat_config.get(DECLARED_KEY)
            keys |= {str(k) for k in value} if isinstance(value, list) else set()
    return keys


def _kind(config: dict):
    return kind_of(str(config.get(TARGET, "")), config.get("optimizer.distribution"))


def comparison_keys(arm: dict, baseline: dict) -> set[str]:
    """The keys of two flat configs that are what the comparison is about (module docstring)."""
    kinds = [k for k in (_kind(arm), _kind(baseline)) if k is not None]
    own = {TARGET, *(key for k in kinds for key in k.may_differ)}
    own |= {k for k in arm.keys() ^ baseline.keys() if k.startswith(OPTIMIZER)}
    own |= {k for k in arm.keys() | baseline.keys() if k.startswith(SCHEDULE)}
    if len({k.muon_family for k in kinds}) > 1 or (_kind(arm) is None) != (_kind(baseline) is None):
        own |= {k for k in arm.keys() | baseline.keys() if k.startswith(OPTIMIZER)}
    return own


def differences(arm: Group, baseline: Group) -> list[Difference]:
    """Every key the two groups' configs differ in beyond the comparison's own, sorted by key."""
    own = comparison_keys(arm.config, baseline.config)
    declared = declared_keys(arm, baseline)
    found = []
    for key in sorted((arm.config.keys() | baseline.config.keys()) - own):
        mine, theirs = arm.config.get(key, ABSENT), baseline.config.get(key, ABSENT)
        if canonical(mine) != canonical(theirs):
            found.append(Difference(key, mine, theirs, key in declared))
    return found


def like_against_like(arm: Group, baseline: Group) -> bool:
    """Whether the two groups differ only in the comparison's own settings and in what the plan declares: only then
    can the arm's interval speak for the method (the report's verdicts, the winners' "shown better")."""
    return all(d.declared for d in differences(arm, baseline))


def describe(diffs: list[Difference]) -> str:
    """'optimizer.lr 0.02 vs 0.0001 (not declared: no verdict)'; empty when like against like."""
    return ", ".join(d.text() + (" (declared by the plan)" if d.declared else " (not declared: no verdict)")
                     for d in diffs)


def like_for_like(verdict: str, tested: Group, *others: Group) -> tuple[str, str]:
    """The item's verdict after comparing the tested arm's settings with every other arm's, and what differs. An
    undeclared difference leaves a PASS or FAIL INCONCLUSIVE: the interval may be the setting's, not the method's."""
    diffs = [d for other in others if other is not tested for d in differences(tested, other)]
    if any(not d.declared for d in diffs) and verdict in (PASS, FAIL):
        verdict = INCONCLUSIVE
    return verdict, describe(diffs)


def claims(groups: list[Group]) -> list[str]:
    """One sentence per compared group whose settings differ from its baseline's beyond the comparison's own."""
    sentences = []
    for g in [g for g in groups if g.baseline is not None and not g.is_baseline]:
        diffs = differences(g, g.baseline)
        if not diffs:
            continue
        open_ = [d.text() for d in diffs if not d.declared]
        planned = [d.text() for d in diffs if d.declared]
        text = f"Not like against like: {g.label} and its baseline {g.baseline.label} differ in "
        parts = ([", ".join(open_) + ", which the plan does not declare, so no comparison of them is given a "
                  "verdict"] if open_ else []) + ([", ".join(planned) + " as the plan declares"] if planned else [])
        sentences.append(text + "; and in ".join(parts) + (": its intervals below may show that setting's effect, "
                                                            "not the method's." if open_ else "."))
    return sentences
