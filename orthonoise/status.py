"""python -m orthonoise.status [outputs_dir] [--stale-after MINUTES]

Every run under the output tree: state, step reached, last validation loss, age of its last write.
Read from each run's summary.json; metrics.jsonl only for a run whose summary does not say (bench/many_runs.py
times it over 2,000 runs).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .report.collect import STALE_AFTER_S, Run, age_text, load_runs, relative_path
from .report.design import SWEEP_RECORD, plan_of
from .run import runlock
from .run.rundir import LOCK_FILE, METRICS_FILE, Status


def process_gone(run: Run) -> bool:
    """A run whose summary says running but whose lock no process holds: killed without a word (SIGKILL, a lost
    node). The lock tells at once, where the age of its files tells only after --stale-after."""
    return (run.state == Status.RUNNING and (run.path / LOCK_FILE).exists()
            and not runlock.held_elsewhere(run.path))


def note(run: Run) -> str:
    """The error column: why the run did not complete, or what its directory lacks."""
    if process_gone(run):
        return "its process is gone (run.lock is free): launch the same command again to resume it"
    if run.state == Status.COMPLETED and not (run.path / METRICS_FILE).exists():
        return f"{METRICS_FILE} is missing: launch the same command again to restore it from the checkpoint"
    return run.error.splitlines()[0][:60] if run.error else ""


def state_text(run: Run, now: float, stale_after_s: float) -> str:
    if process_gone(run):
        return f"{Status.INTERRUPTED} (process gone)"
    if run.is_stale(now, stale_after_s):
        # No write for a long while: the process most likely died without saying so.
        return f"{run.state} (stale)"
    return run.state


def status_rows(root: Path, now: float, stale_after_s: float = STALE_AFTER_S,
                runs: list[Run] | None = None) -> list[list[str]]:
    """One row per run under `root` (`runs`: those already read from it)."""
    rows = []
    for run in sorted(load_runs(root) if runs is None else runs, key=lambda r: r.last_activity):
        steps = "–" if run.steps is None else str(run.steps)
        val_loss = run.final_val_loss  # the summary's, else the last eval's
        rows.append([
            state_text(run, now, stale_after_s),
            f"{steps}/{run.max_steps if run.max_steps is not None else '–'}",
            "–" if val_loss is None else f"{val_loss:.4f}",
            age_text(now - run.last_activity),
            run.optimizer_name or "–",
            note(run),
            relative_path(run.path, root),  # last: sweep paths are long
        ])
    return rows


def planned_lines(root: Path, runs: list[Run]) -> list[str]:
    """Per sweep dir with a multirun.yaml: how many jobs (or Optuna trials) it planned and how many never started."""
    lines = []
    for record in sorted(root.rglob(SWEEP_RECORD)):
        plan = plan_of(record.parent, runs)
        if plan.planned is not None:
            lines.append(f"{relative_path(record.parent, root)}: {plan.planned} {plan.unit} planned, "
                         f"{plan.missing} not started")
    return lines


HEADER = ["state", "step", "val loss", "age", "optimizer", "error", "run"]


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(HEADER, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in [HEADER, *rows]]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orthonoise.status", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outputs_dir", nargs="?", type=Path, default=Path("outputs"))
    parser.add_argument("--stale-after", type=float, default=STALE_AFTER_S / 60, metavar="MINUTES",
                        help="a running job without writes for this long is shown as stale")
    args = parser.parse_args(argv)
    root = args.outputs_dir.resolve()
    if not root.is_dir():
        print(f"no output directory {root}", file=sys.stderr)
        return 1
    now = time.time()
    runs = load_runs(root)
    rows = status_rows(root, now, args.stale_after * 60, runs)
    if not rows:
        print(f"no runs under {root}")
        return 0
    print(format_table(rows))
    counts: dict[str, int] = {}
    for row in rows:
        counts[row[0]] = counts.get(row[0], 0) + 1
    print("\n" + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
    for line in planned_lines(root, runs):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
