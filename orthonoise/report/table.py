"""The group and run tables as Markdown and CSV: formatting only (the numbers come from groupstats.py)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from .collect import relative_path
from .engine import Comparison
from .groups import Group
from .groupstats import GroupRow
from .stats import Sample

GROUP_CSV_HEADER = [
    "group", "optimizer", "setting", "baseline", "n_completed", "n_seeds", "n_jobs", "seeds", "seed_states",
    "primary_analysis", "delta_final_pct_model", "sim95_low_pct", "sim95_high_pct", "adjusted_p",
    "final_val_loss_mean", "final_val_loss_std", "final_val_loss_ci_low", "final_val_loss_ci_high",
    "best_val_loss_mean", "best_val_loss_std", "best_val_loss_ci_low", "best_val_loss_ci_high",
    "delta_final_pct", "delta_best_pct", "welch_t", "welch_p", "paired_t", "paired_p",
    "loss_step100_mean", "loss_step100_std", "loss_step100_at_steps", "delta_step100_pct",
    "steps_to_1pct_of_best_mean", "eff_rank_last_mean", "eff_rank_last_std",
    "tokens_per_s_mean", "gpu_hours_total",
]


def group_csv_rows(rows: list[GroupRow]) -> list[list]:
    out = []
    for r in rows:
        g = r.group
        comp = r.comparison
        low, high = comp.bounds_pct() if comp else (math.nan, math.nan)
        out.append([
            g.label, g.kind, g.setting_label,
            "(baseline)" if g.is_baseline else (g.baseline.label if g.baseline else ""),
            len(g.completed), len(g.replicates), len(g.runs), " ".join(str(run.seed) for run in g.completed),
            g.seed_counts(), r.method, comp.delta_pct if comp else math.nan, low, high,
            comp.p_adjusted if comp else math.nan,
            r.final.mean, r.final.std, r.final.ci_low, r.final.ci_high,
            r.best.mean, r.best.std, r.best.ci_low, r.best.ci_high,
            r.delta_final_pct, r.delta_best_pct, r.welch_final.statistic, r.welch_final.pvalue,
            r.paired_final.statistic, r.paired_final.pvalue,
            r.early.mean, r.early.std, " ".join(map(str, r.early_steps)), r.delta_early_pct,
            r.steps_to_1pct.mean, r.eff_rank.mean, r.eff_rank.std,
            r.tokens_per_s.mean, r.gpu_hours,
        ])
    return out


GROUP_MD_HEADER = [
    "group", "seeds", "final val loss (mean ± std)", "Δ final vs base [simultaneous 95%]",
    "loss @100 (step)", "Δ @100", "steps to 1% of best", "eff. rank (last)", "tokens/s", "GPU-h",
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


def group_md_rows(rows: list[GroupRow]) -> list[list]:
    out = []
    for r in rows:
        g = r.group
        name = f"**{g.label}** (baseline)" if g.is_baseline else g.label
        out.append([
            name, g.seed_counts() or "–", fmt_sample(r.final),
            "–" if g.is_baseline else fmt_comparison(r.comparison),
            f"{fmt(r.early.mean)} ({', '.join(map(str, r.early_steps)) or '–'})",
            "–" if g.is_baseline else fmt_pct(r.delta_early_pct),
            fmt(r.steps_to_1pct.mean, ".0f"), fmt(r.eff_rank.mean, ".2f"),
            fmt(r.tokens_per_s.mean, ".0f"), fmt(r.gpu_hours, ".2f"),
        ])
    return out


RUN_HEADER = ["run", "group", "seed", "state", "counted", "steps", "max_steps", "final_val_loss", "best_val_loss",
              "final_alpha", "eff_rank_last", "gpu_hours", "error"]


def run_rows(groups: list[Group], root: Path) -> list[list]:
    """Every job, the repeats of a seed too (`counted` says which one stands for the seed)."""
    rows = []
    for g in groups:
        kept = {id(run) for run in g.replicates.values()}
        for run in g.runs:
            rows.append([
                relative_path(run.path, root), g.label, run.seed, run.state_text,
                "yes" if id(run) in kept else "no (repeated seed)", run.steps, run.max_steps,
                run.final_val_loss, run.best_val_loss, None if run.final_alpha is None else f"{run.final_alpha:g}",
                run.last_eff_rank, run.gpu_hours, run.error or "",
            ])
    return rows


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
