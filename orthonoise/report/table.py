"""The report's tables, each declared once as a list of columns: a column is its name and the function that
reads its value from one item (a `GroupRow` for the group tables, a `RunItem` for the runs table). A new metric
is one `Column(...)` line in the table that shows it; formatting only (the numbers come from groupstats.py).

A column name may hold `{early}`: the eval step the early-loss columns read (`early_step_name`), so the column
says the step it really used ("loss @10" in a 10-step rehearsal, "loss @100" in the plan's runs).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .collect import age_text, relative_path
from .engine import Comparison
from .groups import Group
from .groupstats import GroupRow
from .measures import EARLY_STEP
from .stats import Sample


@dataclass(frozen=True)
class Column:
    name: str        # may hold {early} (module docstring)
    value: Callable  # item -> the cell's value (None: empty)


@dataclass(frozen=True)
class RunItem:
    """One job of the runs table: the run, its group, whether it stands for its seed, and the report's root."""
    run: object
    group: Group
    counted: bool
    root: Path


def _sim_bounds(r: GroupRow) -> tuple[float, float]:
    return r.comparison.bounds_pct() if r.comparison else (math.nan, math.nan)


def _of_comparison(attribute: str) -> Callable:
    return lambda r: getattr(r.comparison, attribute) if r.comparison else math.nan


def _summary_columns(name: str, summary: Callable) -> list[Column]:
    """<name>_mean, _std, _ci_low, _ci_high of the seed summary `summary` picks from a row."""
    return [Column(f"{name}_{stat}", lambda r, stat=stat: getattr(summary(r), stat))
            for stat in ("mean", "std", "ci_low", "ci_high")]


def _baseline_name(g: Group) -> str:
    return "(baseline)" if g.is_baseline else (g.baseline.label if g.baseline else "")


GROUP_CSV = [
    Column("group", lambda r: r.group.label),
    Column("optimizer", lambda r: r.group.kind),
    Column("setting", lambda r: r.group.setting_label),
    Column("baseline", lambda r: _baseline_name(r.group)),
    Column("n_completed", lambda r: len(r.group.completed)),
    Column("n_seeds", lambda r: len(r.group.replicates)),
    Column("n_jobs", lambda r: len(r.group.runs)),
    Column("seeds", lambda r: " ".join(str(run.seed) for run in r.group.completed)),
    Column("seed_states", lambda r: r.group.seed_counts()),
    Column("primary_analysis", lambda r: r.method),
    Column("delta_final_pct_model", _of_comparison("delta_pct")),
    Column("sim95_low_pct", lambda r: _sim_bounds(r)[0]),
    Column("sim95_high_pct", lambda r: _sim_bounds(r)[1]),
    Column("adjusted_p", _of_comparison("p_adjusted")),
    *_summary_columns("final_val_loss", lambda r: r.final),
    *_summary_columns("best_val_loss", lambda r: r.best),
    Column("delta_final_pct", lambda r: r.delta_final_pct),
    Column("delta_best_pct", lambda r: r.delta_best_pct),
    Column("welch_t", lambda r: r.welch_final.statistic),
    Column("welch_p", lambda r: r.welch_final.pvalue),
    Column("paired_t", lambda r: r.paired_final.statistic),
    Column("paired_p", lambda r: r.paired_final.pvalue),
    Column("loss_step{early}_mean", lambda r: r.early.mean),
    Column("loss_step{early}_std", lambda r: r.early.std),
    Column("loss_step{early}_at_steps", lambda r: " ".join(map(str, r.early_steps))),
    Column("delta_step{early}_pct", lambda r: r.delta_early_pct),
    Column("steps_to_1pct_of_best_mean", lambda r: r.steps_to_1pct.mean),
    Column("eff_rank_last_mean", lambda r: r.eff_rank.mean),
    Column("eff_rank_last_std", lambda r: r.eff_rank.std),
    Column("tokens_per_s_mean", lambda r: r.tokens_per_s.mean),
    Column("gpu_hours_total", lambda r: r.gpu_hours),
]

def fmt(value, spec: str = ".4f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return format(value, spec)


def fmt_sample(sample: Sample, spec: str = ".4f") -> str:
    if sample.n == 0:
        return "–"
    text = fmt(sample.mean, spec)
    if sample.n >= 2:
        text += f" ± {fmt(sample.std, spec)}"
    return text


def fmt_comparison(comp: Comparison | None) -> str:
    if comp is None:
        return "–"
    low, high = comp.bounds_pct()
    return f"{fmt_pct(comp.delta_pct)} [{fmt_pct(low)}, {fmt_pct(high)}]"


def fmt_pct(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{value:+.2f}%"


GROUP_MD = [
    Column("group", lambda r: f"**{r.group.label}** (baseline)" if r.group.is_baseline else r.group.label),
    Column("seeds", lambda r: r.group.seed_counts() or "–"),
    Column("final val loss (mean ± std)", lambda r: fmt_sample(r.final)),
    Column("Δ final vs base [simultaneous 95%]",
           lambda r: "–" if r.group.is_baseline else fmt_comparison(r.comparison)),
    Column("loss @{early} (step)", lambda r: f"{fmt(r.early.mean)} ({', '.join(map(str, r.early_steps)) or '–'})"),
    Column("Δ @{early}", lambda r: "–" if r.group.is_baseline else fmt_pct(r.delta_early_pct)),
    Column("steps to 1% of best", lambda r: fmt(r.steps_to_1pct.mean, ".0f")),
    Column("eff. rank (last)", lambda r: fmt(r.eff_rank.mean, ".2f")),
    Column("tokens/s", lambda r: fmt(r.tokens_per_s.mean, ".0f")),
    Column("GPU-h", lambda r: fmt(r.gpu_hours, ".2f")),
]


# Every job, the repeats of a seed too (`counted` says which one stands for the seed).
RUNS = [
    Column("run", lambda i: relative_path(i.run.path, i.root)),
    Column("group", lambda i: i.group.label),
    Column("seed", lambda i: i.run.seed),
    Column("state", lambda i: i.run.state_text),
    Column("counted", lambda i: "yes" if i.counted else "no (repeated seed)"),
    Column("steps", lambda i: i.run.steps),
    Column("max_steps", lambda i: i.run.max_steps),
    Column("final_val_loss", lambda i: i.run.final_val_loss),
    Column("best_val_loss", lambda i: i.run.best_val_loss),
    Column("final_alpha", lambda i: None if i.run.final_alpha is None else f"{i.run.final_alpha:g}"),
    Column("eff_rank_last", lambda i: i.run.last_eff_rank),
    Column("gpu_hours", lambda i: i.run.gpu_hours),
    Column("error", lambda i: i.run.error or ""),
]


@dataclass(frozen=True)
class CriterionItem:
    """One pass criterion of the report, with what the whole report is: its phase, interim or final, rehearsal."""
    criterion: object  # criteria.Criterion
    phase: str | None
    interim: bool
    rehearsal: str  # the rehearsal's label (rehearsal.py), empty for runs of the plan


CRITERIA = [
    Column("phase", lambda i: i.phase),
    Column("criterion", lambda i: i.criterion.name),
    Column("verdict", lambda i: i.criterion.verdict),
    Column("interim", lambda i: i.interim),
    Column("rehearsal", lambda i: i.rehearsal),
    Column("unlike_settings", lambda i: i.criterion.unlike),
    Column("numbers", lambda i: i.criterion.numbers),
]

VERDICTS_MD = [
    Column("criterion", lambda i: i.criterion.name),
    Column("verdict", lambda i: f"**{i.criterion.verdict}**"),
    Column("numbers", lambda i: i.criterion.numbers),
]


def criterion_items(verdicts: list, phase: str | None, analysis) -> list[CriterionItem]:
    label = analysis.rehearsal.label if analysis.rehearsal else ""
    return [CriterionItem(c, phase, analysis.interim, label) for c in verdicts]


@dataclass(frozen=True)
class FamilyItem:
    """One baseline's primary analysis: its label, the groups compared with it, the engine's family."""
    baseline: str
    members: list
    family: object  # engine.Family


FAMILIES_MD = [
    Column("baseline", lambda i: i.baseline),
    Column("analysis", lambda i: i.family.method),
    Column("configs", lambda i: len(i.members)),
    Column("σ̂ (seed std, % of loss)", lambda i: fmt(i.family.sigma_pct, ".2f") + "%"),
    Column("ρ̂ (seed-block share)", lambda i: fmt(i.family.rho, ".2f")),
    Column("error df", lambda i: fmt(i.family.df, ".0f")),
    Column("Brown–Forsythe p", lambda i: fmt(i.family.homogeneity_p, ".3g")),
    Column("note", lambda i: i.family.note or "–"),
]


@dataclass(frozen=True)
class ProblemItem:
    """A job that did not complete, as of `now`."""
    run: object
    group: Group
    root: Path
    now: float


def _why_not_completed(run) -> str:
    return run.error or ("planned in multirun.yaml, no run directory" if run.never_started else
                         "no summary.json or metrics.jsonl: crashed before writing output"
                         if run.state == "missing" else "")


PROBLEMS_MD = [
    Column("run", lambda i: relative_path(i.run.path, i.root)),
    Column("group", lambda i: i.group.label),
    Column("seed", lambda i: i.run.seed),
    Column("state", lambda i: i.run.state_text + (" (stale)" if i.run.is_stale(i.now) else "")),
    Column("step", lambda i: f"{i.run.steps if i.run.steps is not None else '–'}/{i.run.max_steps or '–'}"),
    Column("last activity", lambda i: age_text(i.now - i.run.last_activity)),
    Column("error", lambda i: _why_not_completed(i.run)),
]


def run_items(groups: list[Group], root: Path) -> list[RunItem]:
    items = []
    for g in groups:
        kept = {id(run) for run in g.replicates.values()}
        items += [RunItem(run, g, id(run) in kept, root) for run in g.runs]
    return items


def early_step_name(rows: list[GroupRow]) -> str:
    """The eval step the early-loss columns read: "100", "10" when every run's last eval at or before step 100 was
    step 10, "≤100" when the runs read different steps (the step column lists them)."""
    steps = {step for r in rows for step in r.early_steps}
    return str(steps.pop()) if len(steps) == 1 else f"≤{EARLY_STEP}"


def table(columns: list[Column], items: list, **names) -> tuple[list[str], list[list]]:
    """(header, rows) of a declared table; `names` fill the column names' placeholders."""
    return [c.name.format(**names) for c in columns], [[c.value(item) for c in columns] for item in items]


def group_table(columns: list[Column], rows: list[GroupRow]) -> tuple[list[str], list[list]]:
    """A group table, its early-loss columns named by the step they read."""
    return table(columns, rows, early=early_step_name(rows))


def markdown_table(header: list[str], rows: list[list]) -> str:
    def cell(value) -> str:
        text = fmt(value, ".4f") if isinstance(value, float) else ("–" if value is None else str(value))
        return text.replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows([["" if v is None else v for v in row] for row in rows])
