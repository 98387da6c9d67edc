"""`python -m orthonoise.report --table FILE.csv`: the statistics engine on results from anywhere (a wandb export).

Columns `group,seed,value` and optionally `step`: with steps, each (group, seed) contributes its value at its last
step. A repeated (group, seed[, step]) row is one replicate: the last row wins, with a warning naming it.
"""
from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

from . import engine
from .criteria import fmt_interval, fmt_pct


def read_table(path: Path) -> tuple[dict[str, dict], list[str]]:
    """group -> {seed: value}, and warnings about repeated rows."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"group", "seed", "value"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: columns {sorted(missing)} missing (need group,seed,value[,step])")
        rows = list(reader)
    latest: dict[tuple, tuple[float, float]] = {}  # (group, seed) -> (step, value)
    seen, warnings = set(), []
    for row in rows:
        key = (row["group"], row["seed"])
        step = float(row["step"]) if row.get("step") not in (None, "") else math.inf
        if (key, step) in seen:
            warnings.append(f"group {key[0]!r} seed {key[1]!r}" + (f" step {step:g}" if math.isfinite(step) else "")
                            + " appears more than once: counted once (the last row)")
        seen.add((key, step))
        value = float(row["value"]) if row["value"] not in ("", None) else math.nan
        if key not in latest or step >= latest[key][0]:
            latest[key] = (step, value)
    values: dict[str, dict] = {}
    for (group, seed), (_, value) in latest.items():
        values.setdefault(group, {})[seed] = value
    return values, warnings


def table_result(values: dict[str, dict], baseline: str, margin_pct: float) -> dict:
    family = engine.many_to_one(values, baseline)
    groups = {}
    for name, by_seed in values.items():
        comp = family.comparisons.get(name)
        entry = {"n": sum(1 for v in by_seed.values() if math.isfinite(v)), "baseline": name == baseline}
        if comp is not None:
            low, high = comp.bounds_pct()
            entry.update(delta_pct=comp.delta_pct, low_pct=low, high_pct=high, adjusted_p=comp.p_adjusted,
                         verdict=engine.below(low, high, -margin_pct), better_than_baseline=high < 0)
        elif name != baseline:
            entry.update(verdict=engine.INCONCLUSIVE, reason="fewer than 2 values a side")
        groups[name] = entry
    return {"baseline": baseline, "claim": f"beats the baseline by more than {margin_pct:g}%",
            "analysis": family.method, "sigma_pct": family.sigma_pct, "rho": family.rho, "error_df": family.df,
            "homogeneity_p": family.homogeneity_p, "note": family.note, "groups": groups}


def run_table(path: Path, baseline: str | None, margin_pct: float, as_json: bool) -> int:
    try:
        values, warnings = read_table(path)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    baseline = baseline or next(iter(values), None)
    if baseline not in values:
        print(f"error: --baseline {baseline!r} is not a group of {path} (groups: {', '.join(values)})", file=sys.stderr)
        return 2
    result = table_result(values, baseline, margin_pct)
    result["warnings"] = warnings
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if as_json:
        print(json.dumps(result, indent=2, default=lambda x: None))
        return 0
    print(f"{result['analysis']} vs {baseline}: σ̂ {result['sigma_pct']:.3g}% ρ̂ {result['rho']:.2f}; "
          f"claim: {result['claim']} (simultaneous 95%)")
    for name, g in result["groups"].items():
        if g["baseline"]:
            print(f"  {name}: n={g['n']} (baseline)")
        elif "delta_pct" in g:
            print(f"  {name}: n={g['n']} Δ {fmt_pct(g['delta_pct'])} {fmt_interval((g['low_pct'], g['high_pct']))} "
                  f"{g['verdict']}")
        else:
            print(f"  {name}: n={g['n']} {g['verdict']} ({g['reason']})")
    return 0
