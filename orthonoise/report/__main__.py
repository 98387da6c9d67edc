"""python -m orthonoise.report <sweep_dir> [<sweep_dir> ...] [--phase 3.1|3.2|3.3|4] [--baseline KEY=VALUE ...]

Writes report.md, groups.md/.csv, runs.md/.csv, criteria.csv and PNG plots into the first sweep dir. Several
dirs are read as one pool of runs: phase 3.2's sweeps have no baseline runs of their own, so
`python -m orthonoise.report outputs/sweeps/phase32_alpha outputs/sweeps/phase31` compares them with 3.1's.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

from . import criteria
from .analysis import analyse
from orthonoise.rundir import Status

from .collect import COMPLETED
from .plots import write_plots
from .table import (GROUP_CSV_HEADER, GROUP_MD_HEADER, RUN_HEADER, age_text, group_csv_rows,
                    group_md_rows, markdown_table, relative_path, run_rows, write_csv)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m orthonoise.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dirs", type=Path, nargs="+", metavar="sweep_dir")
    parser.add_argument("--phase", choices=criteria.PHASES,
                        help="whose pass criteria to evaluate (default: the runs' `phase` config key)")
    parser.add_argument("--baseline", nargs="+", metavar="KEY=VALUE",
                        help="baseline groups instead of Muon, e.g. optimizer=adamw or "
                             "optimizer._target_=torch.optim.AdamW (a Hydra choice, config key or group label)")
    parser.add_argument("--early-tolerance", type=float, default=criteria.EARLY_TOLERANCE_PCT,
                        help="phase 3.3: how much worse (%%) than baseline the loss at step 100 may be")
    parser.add_argument("--out", type=Path, help="where to write the report (default: the sweep dir)")
    return parser.parse_args(argv)


def infer_phase(runs) -> str | None:
    phases = Counter(run.phase for run in runs if run.phase is not None)
    return phases.most_common(1)[0][0] if phases else None


def problems_section(groups, root: Path, now: float) -> str:
    """Every job that did not complete, with why: nothing is dropped silently."""
    rows = []
    for g in groups:
        for run in g.runs:
            if run.state == COMPLETED:
                continue
            state = run.state + (" (stale)" if run.is_stale(now) else "")
            detail = run.error or ("no summary.json or metrics.jsonl: crashed before writing output"
                                   if run.state == Status.MISSING else "")
            rows.append([relative_path(run.path, root), g.label, run.seed, state,
                         f"{run.steps if run.steps is not None else '–'}/{run.max_steps or '–'}",
                         age_text(now - run.last_activity), detail])
    if not rows:
        return "All jobs completed.\n"
    header = ["run", "group", "seed", "state", "step", "last activity", "error"]
    return (f"{len(rows)} job(s) did not complete; they are left out of the statistics.\n\n"
            + markdown_table(header, rows))


def render(sweep_dirs: list[Path], root: Path, phase, groups, rows, verdicts, plots, out_dir: Path, now: float) -> str:
    n_runs = sum(len(g.runs) for g in groups)
    n_done = sum(len(g.completed) for g in groups)
    lines = [
        "# Sweep report: " + ", ".join(f"`{d}`" for d in sweep_dirs),
        "",
        f"Generated {datetime.fromtimestamp(now).isoformat(timespec='seconds')}: {n_runs} jobs "
        f"({n_done} completed) in {len(groups)} groups; phase {phase or 'not set'}. "
        "How to read this: `docs/report.md`.",
        "",
        "## Verdict" + (f" (phase {phase})" if phase else ""),
        "",
    ]
    if phase and not verdicts:
        lines.append(f"No pass criteria are defined for phase {phase} (known: {', '.join(criteria.PHASES)}).")
    elif phase:
        lines.append(markdown_table(["criterion", "verdict", "numbers"],
                                    [[c.name, f"**{c.verdict}**", c.numbers] for c in verdicts]))
        lines.append(f"Rules: a comparison needs ≥{criteria.MIN_SEEDS} completed seeds per side (else "
                     f"INCONCLUSIVE); \"significant\" = two-sided Welch t-test on final val loss, "
                     f"p < {criteria.P_THRESHOLD}.")
    else:
        lines.append("No phase set (config `phase` is null and no `--phase`): pass criteria not evaluated.")
    lines += [
        "",
        "## Groups",
        "",
        "Statistics over completed seeds. Δ = (group − baseline) / baseline: negative = lower loss = better. "
        "CI = t-based 95% interval of the mean. Welch p and paired p (same seeds on both sides) test "
        "the final val loss against the group's baseline.",
        "",
        markdown_table(GROUP_MD_HEADER, group_md_rows(rows)),
        "Tables: `groups.csv`, `groups.md`, `runs.csv`, `runs.md`, `criteria.csv`.",
        "",
        "## Plots",
        "",
    ]
    if plots:
        for title, path in plots.items():
            lines += [f"### {title}", "", f"![{title}]({path.relative_to(out_dir)})", ""]
    else:
        lines += ["No evaluation data to plot yet.", ""]
    lines += ["## Jobs that did not complete", "", problems_section(groups, root, now)]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    sweep_dirs = [d.resolve() for d in args.sweep_dirs]
    for d in sweep_dirs:
        if not d.is_dir():
            print(f"not a directory: {d}", file=sys.stderr)
            return 2
    root = Path(os.path.commonpath(sweep_dirs))  # run paths in the tables are relative to it
    runs, groups, rows = analyse(sweep_dirs, args.baseline)
    if not runs:
        print(f"no run directories (with .hydra/ or summary.json) under {', '.join(map(str, sweep_dirs))}",
              file=sys.stderr)
        return 1
    out_dir = (args.out or sweep_dirs[0]).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    now = time.time()
    phase = args.phase or infer_phase(runs)
    verdicts = criteria.evaluate(phase, groups, rows, now, args.early_tolerance)
    plots = write_plots(groups, out_dir)

    write_csv(out_dir / "groups.csv", GROUP_CSV_HEADER, group_csv_rows(rows))
    (out_dir / "groups.md").write_text(markdown_table(GROUP_MD_HEADER, group_md_rows(rows)))
    runs_table = run_rows(groups, root)
    write_csv(out_dir / "runs.csv", RUN_HEADER, runs_table)
    (out_dir / "runs.md").write_text(markdown_table(RUN_HEADER, runs_table))
    write_csv(out_dir / "criteria.csv", ["phase", "criterion", "verdict", "numbers"],
              [[phase, c.name, c.verdict, c.numbers] for c in verdicts])
    report = out_dir / "report.md"
    report.write_text(render(sweep_dirs, root, phase, groups, rows, verdicts, plots, out_dir, now))

    print(f"{len(runs)} jobs in {len(groups)} groups -> {report}")
    for c in verdicts:
        print(f"  {c.verdict:12s} {c.name}")
    if not any(g.baseline for g in groups if not g.is_baseline) and len(groups) > 1:
        print("  note: no baseline group matched; pass --baseline KEY=VALUE", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
