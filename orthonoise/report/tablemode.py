"""`python -m orthonoise.report --table FILE.csv`: the statistics engine on results from anywhere (a wandb export).

Columns `group,seed,value` and optionally `step`: with steps, each (group, seed) contributes its value at its last
step. A repeated (group, seed[, step]) row is one replicate: the last row wins, with a warning naming it. Seeds
that read as numbers are compared as numbers (`1` and `1.0` are one seed). The sweep report's rules hold: a
non-finite, blank or missing value is a diverged seed (counted per group, warned, and it forbids PASS as in
criteria.health); a value ≤ 0 is an error (the analysis is on the log scale). The output (and `--json`, strict
JSON with `null` where a number is undefined) says which group lost seeds.
"""
from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

from . import engine
from .criteria import fmt_interval, fmt_pct, lost_seeds_verdict

COLUMNS = ("group", "seed", "value")


def seed_key(text: str):
    """A seed as a number when it reads as one (so `1` == `1.0`), else the text itself."""
    try:
        number = float(text)
    except (TypeError, ValueError):
        return text
    return int(number) if math.isfinite(number) and number.is_integer() else number


def parse_value(text: str | None, where: str) -> float:
    """A finite positive value; nan for a diverged seed (non-finite, blank or missing); ValueError for a number
    ≤ 0 or text that is no number."""
    if text is None or text.strip() == "":
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}: value {text!r} is not a number (need a positive loss; nan/inf/blank = diverged)")
    if math.isfinite(value) and value <= 0:
        raise ValueError(f"{where}: value {text!r} is not positive (the log loss is undefined; need a value > 0)")
    return value


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8-sig") as handle:  # utf-8-sig: a BOM is not part of the header
        reader = csv.DictReader(handle)
        if not reader.fieldnames:
            raise ValueError(f"{path}: empty file (need a header row group,seed,value[,step] and data rows)")
        missing = set(COLUMNS) - set(reader.fieldnames)
        if missing:
            raise ValueError(f"{path}: columns {sorted(missing)} missing (need group,seed,value[,step]; "
                             f"found {reader.fieldnames})")
        rows = list(reader)
    if not rows:
        raise ValueError(f"{path}: no data rows under the header")
    return rows


def read_table(path: Path) -> tuple[dict[str, dict], list[str]]:
    """group -> {seed: value} (nan = diverged), and warnings about repeated rows and diverged seeds."""
    latest: dict[tuple, tuple[float, float]] = {}  # (group, seed) -> (step, value)
    seen, warnings = set(), []
    for line, row in enumerate(_rows(path), start=2):
        key = (row["group"], seed_key(row["seed"]))
        step = float(row["step"]) if row.get("step") not in (None, "") else math.inf
        if (key, step) in seen:
            warnings.append(f"group {key[0]!r} seed {row['seed']!r}" + (f" step {step:g}" if math.isfinite(step)
                                                                         else "")
                            + " appears more than once: counted once (the last row)")
        seen.add((key, step))
        value = parse_value(row["value"], f"{path} row {line} (group {key[0]!r}, seed {row['seed']!r}), "
                                          "column 'value'")
        if key not in latest or step >= latest[key][0]:
            latest[key] = (step, value)
    values: dict[str, dict] = {}
    for (group, seed), (_, value) in latest.items():
        values.setdefault(group, {})[seed] = value
        if not math.isfinite(value):
            warnings.append(f"group {group!r} seed {seed!r}: no finite value: counted as a diverged seed")
    return values, warnings


def group_entry(by_seed: dict, comp: engine.Comparison | None, margin_pct: float,
                lost_in_baseline: tuple[int, int]) -> dict:
    diverged = sum(not math.isfinite(v) for v in by_seed.values())
    entry = {"n": len(by_seed) - diverged, "diverged": diverged}
    if comp is None:
        return entry | {"verdict": engine.INCONCLUSIVE, "reason": "fewer than 2 values a side"}
    low, high = comp.bounds_pct()
    verdict = lost_seeds_verdict(engine.below(low, high, -margin_pct), (len(by_seed), diverged), [lost_in_baseline])
    entry |= dict(delta_pct=comp.delta_pct, low_pct=low, high_pct=high, adjusted_p=comp.p_adjusted,
                  verdict=verdict, better_than_baseline=high < 0)
    if comp.reason:
        entry["reason"] = comp.reason
    elif verdict != engine.below(low, high, -margin_pct):
        entry["reason"] = "diverged seeds: no PASS" if verdict == engine.INCONCLUSIVE else "half its seeds diverged"
    return entry


def table_result(values: dict[str, dict], baseline: str, margin_pct: float) -> dict:
    family = engine.many_to_one(values, baseline)
    base = values[baseline]
    lost_in_baseline = (len(base), sum(not math.isfinite(v) for v in base.values()))
    groups = {}
    for name, by_seed in values.items():
        if name == baseline:
            groups[name] = {"n": lost_in_baseline[0] - lost_in_baseline[1], "diverged": lost_in_baseline[1],
                            "baseline": True}
        else:
            comp = family.comparisons.get(name)
            groups[name] = group_entry(by_seed, comp, margin_pct, lost_in_baseline) | {"baseline": False}
    return {"baseline": baseline, "claim": f"beats the baseline by more than {margin_pct:g}%",
            "analysis": family.method, "sigma_pct": family.sigma_pct, "rho": family.rho, "error_df": family.df,
            "homogeneity_p": family.homogeneity_p, "note": family.note, "groups": groups}


def strict(value):
    """The result with every non-finite float as None: `json.dumps(..., allow_nan=False)` then holds."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    return value


def run_table(path: Path, baseline: str | None, margin_pct: float, as_json: bool) -> int:
    if not (math.isfinite(margin_pct) and margin_pct >= 0):
        print(f"error: --margin {margin_pct}: need a finite percentage ≥ 0", file=sys.stderr)
        return 2
    try:
        values, warnings = read_table(path)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    baseline = baseline or next(iter(values))
    if baseline not in values:
        print(f"error: --baseline {baseline!r} is not a group of {path} (groups: {', '.join(values)})", file=sys.stderr)
        return 2
    result = table_result(values, baseline, margin_pct)
    result["warnings"] = warnings
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if as_json:
        print(json.dumps(strict(result), indent=2, allow_nan=False))
        return 0
    print(f"{result['analysis']} vs {baseline}: σ̂ {result['sigma_pct']:.3g}% ρ̂ {result['rho']:.2f}; "
          f"claim: {result['claim']} (simultaneous 95%)")
    for name, g in result["groups"].items():
        seeds = f"n={g['n']}" + (f" ({g['diverged']} diverged)" if g["diverged"] else "")
        if g["baseline"]:
            print(f"  {name}: {seeds} (baseline)")
        elif "delta_pct" in g:
            print(f"  {name}: {seeds} Δ {fmt_pct(g['delta_pct'])} {fmt_interval((g['low_pct'], g['high_pct']))} "
                  f"{g['verdict']}" + (f" ({g['reason']})" if "reason" in g else ""))
        else:
            print(f"  {name}: {seeds} {g['verdict']} ({g['reason']})")
    return 0
