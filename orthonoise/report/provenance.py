"""Which code produced the runs a report reads, and the comparisons it cannot vouch for.

Every run records its code in summary.json's `provenance` (orthonoise/run/identity.py: git commit, dirty flag, diff
hash, package versions). Two arms compared with each other should have run the same program: any difference in
CODE_KEYS is named next to the claims, as is a run continued after a change of its settings (`config_changes`). A
run from before provenance was recorded is "unknown": it is counted as such, never taken for different code.
"""
from __future__ import annotations

import json
from collections import Counter

from orthonoise.run.identity import PACKAGES

from .collect import Run
from .criteria import matched_method
from .groups import Group
from .table import markdown_table

CODE_KEYS = ("git_commit", "git_diff_sha256", *PACKAGES)  # what a comparison's arms must share
SHOWN_KEYS = ("git_commit", "git_dirty", "git_diff_sha256", *PACKAGES)  # the Provenance table's columns
UNKNOWN = "unknown"


def _text(key: str, value) -> str:
    if value is None:
        return "–"
    if key == "git_commit":
        return str(value)[:10]
    return json.dumps(value) if isinstance(value, bool) else str(value)


def _change_text(values) -> str:
    """[old, new] as 'old → new' (JSON values); anything else as it was written."""
    if isinstance(values, list) and len(values) == 2:
        return " → ".join(json.dumps(v, default=str) for v in values)
    return json.dumps(values, default=str)


def code_of(run: Run) -> dict | None:
    return None if run.provenance is None else {key: run.provenance.get(key) for key in CODE_KEYS}


def code_differences(*arms: Group) -> str | None:
    """'git_commit 1a2b3c4d5e vs 9f8e7d6c5b' when the arms' completed runs (those with a provenance) ran different
    code, per key, each arm's values in order; None when they ran the same code or nothing is known."""
    codes = [[code for run in arm.completed if (code := code_of(run)) is not None] for arm in arms]
    parts = []
    for key in CODE_KEYS:
        per_arm = [sorted({_text(key, code[key]) for code in arm_codes}) for arm_codes in codes]
        if len({value for values in per_arm for value in values}) > 1:
            parts.append(f"{key} " + " vs ".join("/".join(values) or UNKNOWN for values in per_arm))
    return ", ".join(parts) or None


def compared_pairs(groups: list[Group]) -> list[tuple[Group, Group]]:
    """Every (arm, the arm it is judged against) of the report: each group and its baseline, each control and its
    matched method."""
    pairs = [(g, g.baseline) for g in groups if g.baseline is not None and not g.is_baseline]
    for g in groups:
        method = matched_method(g, groups) if g.registered and g.registered.matched_to else None
        if method is not None:
            pairs.append((g, method))
    return pairs


def warnings(groups: list[Group]) -> list[str]:
    """One line per comparison whose arms ran different code, and per run continued with changed settings."""
    lines = [f"{a.label} vs {b.label} ran different code ({diff})"
             for a, b in compared_pairs(groups) if (diff := code_differences(a, b))]
    for g in groups:
        for seed, run in sorted(g.replicates.items(), key=lambda item: str(item[0])):
            for change in run.config_changes:
                keys = change.get("keys") if isinstance(change.get("keys"), dict) else {}
                keys = ", ".join(f"{key} {_change_text(values)}" for key, values in keys.items())
                lines.append(f"{g.label} seed {seed} was continued with changed settings at step "
                             f"{change.get('step', '?')} ({keys})")
    return lines


def section(groups: list[Group]) -> list[str]:
    """report.md's Provenance section: each code version read, with its run count; the devices."""
    runs = [run for g in groups for run in g.runs if not run.never_started]
    versions = Counter(tuple(_text(k, run.provenance.get(k)) for k in SHOWN_KEYS) if run.provenance else None
                       for run in runs)
    rows = [[*version, n] for version, n in sorted(versions.items(), key=lambda item: -item[1]) if version]
    if versions.get(None):
        rows.append([f"{UNKNOWN} (no provenance in summary.json)", *["–"] * (len(SHOWN_KEYS) - 1), versions[None]])
    devices = Counter((run.provenance or {}).get("device_name") or UNKNOWN for run in runs)
    known = len(versions) - (None in versions)
    intro = (f"The code the {len(runs)} runs read here ran ({known} known version(s)); comparisons whose arms ran "
             "different code are named under \"What can be claimed\".")
    if versions.get(None):
        intro += (f" {versions[None]} runs recorded no provenance (from before it was recorded): their code is unknown,"
                  " and a comparison with them is not checked.")
    devices_text = "Devices: " + ", ".join(f"{name} ({n})" for name, n in devices.most_common()) + "."
    return ["## Provenance", "", intro, "", markdown_table([*SHOWN_KEYS, "runs"], rows), devices_text, ""]
