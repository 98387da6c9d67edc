"""python -m orthonoise.report <sweep_dir> [<sweep_dir> ...] [--phase 3.1|3.2|3.3|4] [--baseline KEY=VALUE ...]
       python -m orthonoise.report --table FILE.csv [--baseline GROUP] [--margin PCT] [--json]

Writes report.md, groups.md/.csv, runs.md/.csv, criteria.csv and PNG plots into the first sweep dir. Several
dirs are read as one pool of runs: phase 3.2's sweeps have no baseline runs of their own, so
`python -m orthonoise.report outputs/sweeps/phase32_alpha outputs/sweeps/phase31` compares them with 3.1's.
A repeated (config, seed) counts once. `--table` runs the same statistics engine on a CSV of results from
anywhere (columns group,seed,value and optionally step: the last step of each group and seed is used).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

from orthonoise.sweep import winners

from . import criteria, power
from .analysis import analyse
from .plots import write_plots
from .render import power_for, render
from .table import (
    CRITERIA,
    GROUP_CSV,
    GROUP_MD,
    RUNS,
    criterion_items,
    group_table,
    markdown_table,
    run_items,
    table,
    write_csv,
)
from .tablemode import run_table


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m orthonoise.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dirs", type=Path, nargs="*", metavar="sweep_dir")
    parser.add_argument("--phase", choices=criteria.PHASES,
                        help="whose pass criteria to evaluate (default: the runs' `phase` config key)")
    parser.add_argument("--baseline", nargs="+", metavar="KEY=VALUE",
                        help="baseline groups instead of Muon, e.g. optimizer=adamw or "
                             "optimizer._target_=torch.optim.AdamW (a Hydra choice, config key or group label); "
                             "with --table: the baseline group's name")
    parser.add_argument("--early-tolerance", type=float, default=criteria.EARLY_TOLERANCE_PCT,
                        help="phase 3.3: how much worse (%%) than baseline the loss at step 100 may be")
    parser.add_argument("--from", dest="noise_from", type=Path, metavar="SWEEP_DIR",
                        help="measure the seed std and seed-block share for the power lines in this earlier sweep")
    parser.add_argument("--out", type=Path, help="where to write the report (default: the sweep dir)")
    parser.add_argument("--table", type=Path, metavar="FILE.csv", help="table mode: group,seed,value[,step] rows")
    parser.add_argument("--margin", type=float, default=criteria.SIGNAL_MARGIN_PCT, metavar="PCT",
                        help="table mode: the claim is 'beats the baseline by more than PCT %%'")
    parser.add_argument("--json", action="store_true", help="table mode: JSON on stdout")
    args = parser.parse_args(argv)
    if not args.table and not args.sweep_dirs:
        parser.error("give a sweep dir or --table FILE.csv")
    return args


def infer_phase(runs) -> str | None:
    phases = Counter(run.phase for run in runs if run.phase is not None)
    return phases.most_common(1)[0][0] if phases else None


def noise_from(sweep_dir: Path | None):
    """(σ̂, ρ̂, source) measured in an earlier sweep, or None (this sweep's own, else the default)."""
    if sweep_dir is None:
        return None
    measured = power.noise_of(sweep_dir)
    if measured is None:
        print(f"note: no seed variance measurable in {sweep_dir}; power uses the default", file=sys.stderr)
        return power.DEFAULT_SIGMA_PCT, power.DEFAULT_RHO, f"default: nothing measurable in {sweep_dir}"
    return measured


def write_tables(analysis, root: Path, out_dir: Path, phase, verdicts) -> None:
    write_csv(out_dir / "groups.csv", *group_table(GROUP_CSV, analysis.rows))
    (out_dir / "groups.md").write_text(markdown_table(*group_table(GROUP_MD, analysis.rows)))
    runs_table = table(RUNS, run_items(analysis.groups, root))
    write_csv(out_dir / "runs.csv", *runs_table)
    (out_dir / "runs.md").write_text(markdown_table(*runs_table))
    write_csv(out_dir / "criteria.csv", *table(CRITERIA, criterion_items(verdicts, phase, analysis)))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.table:
        return run_table(args.table, " ".join(args.baseline or []) or None, args.margin, args.json)
    sweep_dirs = [d.resolve() for d in args.sweep_dirs]
    for d in sweep_dirs:
        if not d.is_dir():
            print(f"error: not a directory: {d}", file=sys.stderr)
            return 2
    root = Path(os.path.commonpath(sweep_dirs))  # run paths in the tables are relative to it
    analysis = analyse(sweep_dirs, args.baseline)
    if not analysis.runs:
        print(f"no run directories (with .hydra/ or summary.json) under {', '.join(map(str, sweep_dirs))}",
              file=sys.stderr)
        return 1
    out_dir = (args.out or sweep_dirs[0]).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    now = time.time()
    phase = args.phase or infer_phase(analysis.runs)
    verdicts = criteria.evaluate(phase, analysis.groups, analysis.families, analysis.rank_families, now,
                                 args.early_tolerance)
    plots = write_plots(analysis, out_dir, phase)
    write_tables(analysis, root, out_dir, phase, verdicts)
    power_text = power_for(analysis, phase, noise_from(args.noise_from))
    report = out_dir / "report.md"
    winners_section = winners.write_from_report(analysis, sweep_dirs, out_dir, phase)  # phase 3.2: winners.json
    report.write_text(render(sweep_dirs, root, phase, analysis, verdicts, plots, out_dir, now, power_text)
                      + "\n".join(winners_section) + ("\n" if winners_section else ""))

    not_started = sum(p.missing for p in analysis.plans)
    print(f"{len(analysis.runs)} jobs" + (f" (+{not_started} planned, not started)" if not_started else "")
          + f" in {len(analysis.groups)} groups -> {report}"
          + (" (INTERIM: some jobs have no final result)" if analysis.interim else ""))
    for c in verdicts:
        print(f"  {c.verdict:12s} {c.name}")
    for line in winners_section:
        if line.startswith("- ") or line.startswith("No winners"):
            print(f"  winners: {line.removeprefix('- ')}")
    for warning in analysis.warnings:
        print(f"  warning: {warning}", file=sys.stderr)
    if not any(g.baseline for g in analysis.groups if not g.is_baseline) and len(analysis.groups) > 1:
        print("  note: no baseline group matched; pass --baseline KEY=VALUE", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
