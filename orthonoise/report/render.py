"""report.md: what can be claimed, the verdicts, the analysis behind them, tables, plots, unfinished jobs."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from . import criteria, fairness, power, provenance
from .analysis import Analysis
from .collect import COMPLETED, DIVERGED, FAILED
from .criteria import fmt_pct
from .table import (
    FAMILIES_MD,
    GROUP_MD,
    PROBLEMS_MD,
    VERDICTS_MD,
    FamilyItem,
    ProblemItem,
    criterion_items,
    group_table,
    markdown_table,
    relative_path,
    table,
)


def _family_name(analysis: Analysis, base_id: int) -> tuple[str, list]:
    base = next(g for g in analysis.groups if id(g) == base_id)
    return base.label, [g for g in analysis.groups if g.baseline is base and g is not base]


def power_for(analysis: Analysis, phase: str | None, noise: tuple[float, float, str] | None) -> list[str]:
    """The phase's MDE / seeds-needed lines at this sweep's seeds: σ̂, ρ̂ from `noise` (--from) or this sweep."""
    if noise is None:
        measured = power.measured_noise(list(analysis.families.values()))
        noise = ((measured[0], measured[1], f"measured in this sweep, {measured[2]} error df") if measured
                 else (power.DEFAULT_SIGMA_PCT, power.DEFAULT_RHO, "default: nothing measured"))
    compared = [g for g in analysis.groups if g.baseline is not None and not g.is_baseline]
    seeds = sorted(len(g.replicates) for g in compared) or [0]
    base_seeds = min((len(g.baseline.replicates) for g in compared), default=0)
    n = max(seeds[0], 2)
    return power.power_lines(phase, n, max(len(compared), 1), *noise, n_base=max(base_seeds, 2) if compared else n)


def claims_paragraph(analysis: Analysis, verdicts: list, power_text: list[str]) -> str:
    """Plain words with the numbers: what the intervals show, what they do not, what the sweep could detect."""
    sentences = []
    if analysis.interim:
        sentences.append(f"INTERIM: {_unfinished_text(analysis)}; every statement below may change.")
    for base_id, family in analysis.families.items():
        base_label, _ = _family_name(analysis, base_id)
        comps = list(family.comparisons.values())
        if not comps:
            sentences.append(f"Against {base_label}: nothing to compare ({family.note or 'too few seeds'}).")
            continue
        better = [c for c in comps if c.high_pct < 0]
        worse = [c for c in comps if c.low_pct > 0]
        sentences.append(
            f"Against {base_label} ({family.method}, σ̂ {family.sigma_pct:.2f}% of the loss, ρ̂ {family.rho:.2f}): "
            + (", ".join(f"{c.name} is better (Δ {fmt_pct(c.delta_pct)}, simultaneous upper bound "
                         f"{fmt_pct(c.high_pct)})" for c in better) or "no config is shown better")
            + ("; " + ", ".join(f"{c.name} is worse (lower bound {fmt_pct(c.low_pct)})" for c in worse)
               if worse else "")
            + f"; the other {len(comps) - len(better) - len(worse)} configs' intervals include 0.")
    plain = {"PASS": "Shown", "FAIL": "Shown not to hold", "INCONCLUSIVE": "Not shown either way"}
    for c in verdicts:
        sentences.append(f"{plain[c.verdict]}: {c.name[0].lower() + c.name[1:]} ({c.verdict}).")
    sentences += [f"Warning: {line}." for line in provenance.warnings(analysis.groups)]
    bad = [(g, g.count(DIVERGED, FAILED)) for g in analysis.groups if g.count(DIVERGED, FAILED)]
    if bad:
        sentences.append("Seeds lost: " + ", ".join(f"{g.label} {k}/{len(g.replicates)}" for g, k in bad) + ".")
    if power_text:
        sentences.append(power_text[0].rstrip(":") + ": " + "; ".join(line.strip() for line in power_text[1:]) + ".")
    return " ".join(sentences)


def _unfinished_text(analysis: Analysis) -> str:
    runs = [r for g in analysis.groups for r in g.replicates.values()]
    open_runs = [r for r in runs if not r.state.finished and r.state != FAILED]
    parts = [f"{len(open_runs)} of {len(runs)} jobs have no final result"]
    trials = sum(p.trials_not_started for p in analysis.plans)
    if trials:
        parts.append(f"{trials} planned Optuna trials have not started")
    return ", ".join(parts)


def analysis_section(analysis: Analysis) -> list[str]:
    lines = ["## Primary analysis", "",
             ("Per baseline (one per setting), the final val loss on the log scale: the additive model "
              "loss[config, seed] = μ + config + seed + ε when the configs share seeds (blocked), else one-way; "
              "Δ% = exp(difference) − 1 with two-sided 95% intervals simultaneous over the configs (Dunnett). "
              "This is the one primary test; Welch and paired t-tests and the Dunnett/Holm p-values are "
              "diagnostics in `groups.csv`."), ""]
    items = [FamilyItem(*_family_name(analysis, base_id), family) for base_id, family in analysis.families.items()]
    lines.append(markdown_table(*table(FAMILIES_MD, items)))
    return lines


def problems_section(analysis: Analysis, root: Path, now: float) -> str:
    """Every job that did not complete, with why, and every repeated seed: nothing is dropped silently."""
    items = [ProblemItem(run, g, root, now) for g in analysis.groups for run in g.runs if run.state != COMPLETED]
    text = "All jobs completed.\n" if not items else (
        f"{len(items)} job(s) did not complete; they are counted per arm in every criterion, never dropped.\n\n"
        + markdown_table(*table(PROBLEMS_MD, items)))
    for p in analysis.plans:
        if p.planned is None:
            text += f"\n`{relative_path(p.sweep_dir, root)}`: {p.unknown_because}, so its planned jobs are unknown.\n"
        else:
            text += (f"\n`{relative_path(p.sweep_dir, root)}`: {p.planned} {p.unit} planned, "
                     f"{p.missing} not started.\n")
    if analysis.warnings:
        text += "\nRepeated seeds (one replicate each):\n\n" + "".join(f"- {w}\n" for w in analysis.warnings)
    return text


def what_is_claimed(analysis: Analysis, verdicts: list, power_text: list[str]) -> str:
    """The claims paragraph, after what the runs are (a rehearsal) and every comparison of unlike arms."""
    rehearsal = ([f"{analysis.rehearsal.label}: these runs rehearse the plan's pipeline; no statement below is a "
                  "result of the plan."] if analysis.rehearsal else [])
    return " ".join([*rehearsal, *fairness.claims(analysis.groups), claims_paragraph(analysis, verdicts, power_text)])


def verdict_section(analysis: Analysis, phase, verdicts) -> list[str]:
    status = "INTERIM" if analysis.interim else "final"
    label = f"{analysis.rehearsal.label}; " if analysis.rehearsal else ""
    lines = [f"## Verdict ({label}{status}" + (f", phase {phase})" if phase else ")"), ""]
    if phase and not verdicts:
        lines.append(f"No pass criteria are defined for phase {phase} (known: {', '.join(criteria.PHASES)}).")
    elif phase:
        lines.append(markdown_table(*table(VERDICTS_MD, criterion_items(verdicts, phase, analysis))))
        lines.append("PASS: the whole interval clears the plan's margin; FAIL: the whole interval is on the wrong "
                     "side; INCONCLUSIVE otherwise. A diverged or failed seed stops its item from passing; so does "
                     "a setting the arms differ in that the plan does not declare (`unlike arms`).")
        unlike = list(dict.fromkeys(c.unlike for c in verdicts if c.unlike))
        if unlike:
            lines += ["", "Unlike arms (settings compared arms differ in beyond the comparison's own): "
                      + "; ".join(unlike) + "."]
    else:
        lines.append("No phase set (config `phase` is null and no `--phase`): pass criteria not evaluated.")
    return lines


def render(sweep_dirs: list[Path], root: Path, phase, analysis: Analysis, verdicts, plots, out_dir: Path,
           now: float, power_text: list[str]) -> str:
    n_runs = sum(len(g.replicates) for g in analysis.groups)
    n_done = sum(len(g.completed) for g in analysis.groups)
    status = "INTERIM" if analysis.interim else "final"
    rehearsal = analysis.rehearsal
    lines = [
        ("# REHEARSAL sweep report: " if rehearsal else "# Sweep report: ") + ", ".join(f"`{d}`" for d in sweep_dirs),
        "",
        (f"**{rehearsal.label}**: a rehearsal of the plan, not its result. " if rehearsal else "")
        + (f"Generated {datetime.fromtimestamp(now).isoformat(timespec='seconds')}: {n_runs} jobs "
           f"({n_done} completed) in {len(analysis.groups)} groups; phase {phase or 'not set'}; {status}. "
           "How to read this: `docs/report.md`."), "",
        "## What can be claimed", "", what_is_claimed(analysis, verdicts, power_text), "",
        *verdict_section(analysis, phase, verdicts),
    ]
    lines.append("")
    if power_text:
        lines += ["## What this sweep can detect", "", "```", *power_text, "```", ""]
    lines += [*analysis_section(analysis), "", *provenance.section(analysis.groups), "## Groups", "",
              ("Seeds counted once each (a repeated seed is one replicate). Δ = (group − baseline) / baseline "
               "from the primary analysis: negative = lower loss = better; brackets: simultaneous 95% interval."),
              "",
              markdown_table(*group_table(GROUP_MD, analysis.rows)),
              "Tables: `groups.csv` (with the diagnostics), `groups.md`, `runs.csv`, `runs.md`, `criteria.csv`.",
              "", "## Plots", ""]
    for title, path in plots.items():
        lines += [f"### {title}", "", f"![{title}]({path.relative_to(out_dir)})", ""]
    if not plots:
        lines += ["No evaluation data to plot yet.", ""]
    lines += ["## Jobs that did not complete", "", problems_section(analysis, root, now)]
    return "\n".join(lines)

