"""Group runs by their config with the seed (and run-local keys) taken out, label the groups,
and pair every group with its Muon baseline. A group holds every job; its replicates are one run per seed."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import yaml

from orthonoise.optim.registry import Kind, Role, kind_of

from .collect import COMPLETED, DIVERGED, Run

# Keys that differ between seeds of one config or never change the training result; `phase` only says which
# sweep asked for the run (phase 3.1's arms and 3.2's configs with the same settings are one config), `plan` what
# the sweep file declares about its design (plan.declared_differences: fairness.py reads them from the runs), not a
# setting of the run.
RUN_LOCAL_TOP_KEYS = {"seed", "hydra", "logger", "tags", "paths", "wandb", "phase", "plan"}
RUN_LOCAL_LEAF_NAMES = {"progress_bar", "resume", "resume_from"}
RUN_LOCAL_LEAF_SUFFIXES = ("_dir", "_path")
ALPHA_KEY = "optimizer.alpha"  # the noise scale a schedule starts from; summary.json's final_alpha is where it ended
# The keys a baseline must share with the group it is compared against.
SETTING_TOP_KEYS = ("model", "trainer", "data")


def grouping_config(run: Run) -> dict:
    return grouping_items(run.flat_config)


def grouping_items(flat_config: dict) -> dict:
    """The flat config minus the seed and the run-local keys: what makes two runs the same config."""
    kept = {}
    for key, value in flat_config.items():
        top, leaf = key.split(".", 1)[0], key.rsplit(".", 1)[-1]
        if top in RUN_LOCAL_TOP_KEYS or leaf in RUN_LOCAL_LEAF_NAMES or leaf.endswith(RUN_LOCAL_LEAF_SUFFIXES):
            continue
        kept[key] = value
    return kept


def canonical(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


@dataclass
class Group:
    key: str
    config: dict  # flat grouping config shared by all its runs
    choices: dict
    runs: list = field(default_factory=list)
    label: str = ""
    baseline: Group | None = None
    is_baseline: bool = False

    @property
    def registered(self) -> Kind | None:
        """The optimizer kind of orthonoise/optim/registry.py this group ran; None for a class it does not list."""
        return kind_of(str(self.config.get("optimizer._target_", "")), self.config.get("optimizer.distribution"))

    @property
    def kind(self) -> str:
        """The kind's name ('orthonoise'); an unregistered class by its lower-cased name ('sgd')."""
        kind = self.registered
        return kind.name if kind else str(self.config.get("optimizer._target_", "")).rsplit(".", 1)[-1].lower()

    def has_role(self, *roles: Role) -> bool:
        return self.registered is not None and self.registered.role in roles

    @property
    def replicates(self) -> dict:
        """seed -> the one run that stands for it: a repeated (config, seed) is one replicate, not more
        evidence. Of repeats the finished one wins (completed, then diverged), then the latest."""
        chosen: dict = {}
        for run in self.runs:
            key = run.seed if run.seed is not None else f"run:{run.path}"
            if key not in chosen or _preference(run) > _preference(chosen[key]):
                chosen[key] = run
        return chosen

    @property
    def duplicates(self) -> dict:
        """seed -> every run of that seed, for the seeds that ran more than once."""
        by_seed: dict = {}
        for run in self.runs:
            if run.seed is not None:
                by_seed.setdefault(run.seed, []).append(run)
        return {seed: runs for seed, runs in by_seed.items() if len(runs) > 1}

    @property
    def completed_by_seed(self) -> dict:
        """seed -> its completed replicate."""
        return {seed: run for seed, run in self.replicates.items() if run.state == COMPLETED}

    @property
    def completed(self) -> list[Run]:
        return list(self.completed_by_seed.values())

    def count(self, *states) -> int:
        return sum(run.state in states for run in self.replicates.values())

    def seed_counts(self) -> str:
        """'3/3 completed' or '1/3 completed, 2/3 diverged': every seed of the arm, by state."""
        n = len(self.replicates)
        counts: dict = {}
        for run in self.replicates.values():
            counts[run.state] = counts.get(run.state, 0) + 1
        return ", ".join(f"{k}/{n} {state}" for state, k in sorted(counts.items(), key=lambda x: x[0] != COMPLETED))

    @property
    def final_alphas(self) -> list[float]:
        """The alphas its completed runs ended at (summary.json), where they differ from optimizer.alpha: an
        annealed schedule's end; empty for a constant alpha and for optimizers without noise."""
        alpha = self.config.get(ALPHA_KEY)
        ends = {run.final_alpha for run in self.completed if run.final_alpha is not None}
        return sorted(end for end in ends if not isinstance(alpha, (int, float)) or not math.isclose(end, alpha))

    def alpha_text(self) -> str:
        """'0.01→0.001' for a run annealed from 0.01 to 0.001; the configured alpha otherwise."""
        ends = self.final_alphas
        return short(self.config.get(ALPHA_KEY)) + ("→" + "/".join(map(short, ends)) if ends else "")

    @property
    def setting(self) -> str:
        """Model/trainer/data settings: groups with the same setting are comparable."""
        return canonical({k: v for k, v in self.config.items() if k.split(".", 1)[0] in SETTING_TOP_KEYS})

    @property
    def setting_label(self) -> str:
        preset = self.config.get("model.preset", "?")
        origin = "fine-tune" if self.config.get("model.pretrained") else "from scratch"
        return f"{preset}, {origin}, {self.config.get('trainer.max_steps', '?')} steps"


def _preference(run: Run) -> tuple:
    return (run.state == COMPLETED, run.state == DIVERGED, run.last_activity)


def group_runs(runs: list[Run]) -> list[Group]:
    groups: dict[str, Group] = {}
    for run in runs:
        config = grouping_config(run)
        key = canonical(config)
        if key not in groups:
            choices = {k: v for k, v in run.choices.items()
                       if not k.startswith("hydra") and k not in RUN_LOCAL_TOP_KEYS}
            groups[key] = Group(key=key, config=config, choices=choices)
        groups[key].runs.append(run)
    ordered = sorted(groups.values(), key=lambda g: (g.setting, not g.has_role(Role.BASELINE), g.key))
    _label(ordered)
    return ordered


def short(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _label(groups: list[Group]) -> None:
    """Label each group by what tells it apart: differing Hydra choices, then config leaves that
    differ among groups that made the same choice for that leaf's config group."""
    choice_keys = sorted({k for g in groups for k in g.choices
                          if len({short(h.choices.get(k)) for h in groups}) > 1},
                         key=lambda k: (k != "optimizer", k))  # the optimizer reads first
    leaf_keys = set()
    for key in {k for g in groups for k in g.config}:
        top = key.split(".", 1)[0]
        by_choice: dict[str, set] = {}
        for g in groups:
            if key in g.config:
                by_choice.setdefault(short(g.choices.get(top)), set()).add(canonical(g.config[key]))
        if any(len(values) > 1 for values in by_choice.values()):
            leaf_keys.add(key)
    leaf_names = [k.rsplit(".", 1)[-1] for k in leaf_keys]
    for g in groups:
        parts = [f"{k}={short(g.choices[k])}" for k in choice_keys if k in g.choices]
        for key in sorted(leaf_keys):
            if key not in g.config:
                continue
            name = key.rsplit(".", 1)[-1]
            name = name if leaf_names.count(name) == 1 else key
            value = g.config[key]
            if key.endswith("_target_"):
                name, value = key.split(".", 1)[0], str(value).rsplit(".", 1)[-1]
            parts.append(f"{name}={g.alpha_text() if key == ALPHA_KEY else short(value)}")
        if g.final_alphas and ALPHA_KEY not in leaf_keys:  # an annealed run says where its alpha went
            parts.append(f"alpha={g.alpha_text()}")
        g.label = " ".join(parts) or g.kind or "(no config)"


def _matches(group: Group, selector: str) -> bool:
    key, _, wanted = selector.partition("=")
    if short(group.choices.get(key)) == wanted:
        return True
    if key not in group.config:
        return False
    value = group.config[key]
    return short(value) == wanted or value == yaml.safe_load(wanted) or \
        (key.endswith("_target_") and str(value).rsplit(".", 1)[-1] == wanted)


def is_baseline_candidate(group: Group, selectors: list[str] | None) -> bool:
    """The registry's baseline kind (Muon) by default; with selectors, a group whose label equals them or that
    matches every `key=value` (a Hydra choice, a config leaf, or an optimizer class name)."""
    if not selectors:
        return group.has_role(Role.BASELINE)
    if group.label == " ".join(selectors):
        return True
    return all(_matches(group, s) for s in selectors)


def assign_baselines(groups: list[Group], selectors: list[str] | None = None) -> None:
    """Every group gets the baseline candidate with the same model/trainer/data setting that
    shares the most config leaves with it; candidates are their own baseline."""
    candidates = [g for g in groups if is_baseline_candidate(g, selectors)]
    for g in candidates:
        g.is_baseline = True
    for g in groups:
        if g.is_baseline:
            g.baseline = g
            continue
        same_setting = [c for c in candidates if c.setting == g.setting]
        if same_setting:
            g.baseline = max(same_setting, key=lambda c: _shared_leaves(c, g))


def _shared_leaves(a: Group, b: Group) -> int:
    return sum(1 for k, v in a.config.items() if k in b.config and canonical(b.config[k]) == canonical(v))
