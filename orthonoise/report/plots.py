"""PNG plots of a sweep (matplotlib, Agg backend: no display needed). The Δ plots draw the phase's own pass criterion
(3.1: the equivalence band; 3.2, 3.3: the margin; 4: zero); every plot of a rehearsal says so under its title."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from orthonoise.run.rundir import EFF_RANK, VAL_LOSS

from . import criteria, measures
from .groups import Group
from .measures import mean_band


def _by_setting(groups: list[Group]) -> dict[str, list[Group]]:
    settings: dict[str, list[Group]] = {}
    for g in groups:
        settings.setdefault(g.setting, []).append(g)
    return settings


def _subplots(n: int, title: str, subtitle: str = "", cols: int = 1, size=(9, 4.5)):
    cols = min(n, cols)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    fig.suptitle(title + (f"\n{subtitle}" if subtitle else ""), color="black")
    return fig, list(axes.flat[:n])


def criterion_marks(phase: str | None) -> list[tuple[float, float, str]]:
    """(low, high, legend) of what the phase's pass criterion asks of Δ%: a band (3.1's equivalence) or a line
    (low == high); none without a phase."""
    if phase == "3.1":
        tol = criteria.SANITY_TOLERANCE_PCT
        return [(-tol, tol, f"equivalence band ±{tol:g}% (PASS: 90% interval inside, TOST)")]
    margins = {"3.2": (criteria.SIGNAL_MARGIN_PCT, "simultaneous 95% interval wholly below"),
               "3.3": (criteria.REPLICATION_MARGIN_PCT, "paired 95% upper bound below"),
               "4": (0.0, "paired one-sided 95% upper bound below")}
    if phase not in margins:
        return []
    margin, rule = margins[phase]
    return [(-margin, -margin, f"phase {phase} margin −{margin:g}% (PASS: {rule})")]


def _draw_criterion(ax, phase: str | None) -> None:
    for low, high, legend in criterion_marks(phase):
        if low == high:
            ax.axhline(low, color="tab:red", linestyle="--", linewidth=1, label=legend)
        else:
            ax.axhspan(low, high, color="tab:green", alpha=0.12, linewidth=0, label=legend)
            for bound in (low, high):
                ax.axhline(bound, color="tab:green", linestyle="--", linewidth=1)


def legend_labels(members: list[Group]) -> dict[int, str]:
    """id(group) -> its label without the `key=value` parts that all groups of one panel share,
    wrapped: a panel's groups share a setting, so the labels' setting parts are noise there."""
    parts = {id(g): g.label.split(" ") for g in members}
    shared = set.intersection(*(set(p) for p in parts.values())) if len(members) > 1 else set()
    return {key: textwrap.fill(" ".join(p for p in words if p not in shared) or members[0].kind, 60)
            for key, words in parts.items()}


def _colors(n: int):
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def _curves(groups: list[Group], key: str, ylabel: str, title: str, path: Path, subtitle: str) -> Path | None:
    settings = {s: gs for s, gs in _by_setting(groups).items() if any(measures.seed_band(g, key)[0] for g in gs)}
    if not settings:
        return None
    fig, axes = _subplots(len(settings), title, subtitle)
    for ax, members in zip(axes, settings.values()):
        labels = legend_labels(members)
        for group, color in zip(members, _colors(len(members))):
            steps, mean, low, high = measures.seed_band(group, key)
            if not steps:
                continue
            style = {"color": "black", "linewidth": 2.2, "zorder": 3} if group.is_baseline else {"color": color}
            ax.plot(steps, mean, label=f"{labels[id(group)]} (n={len(group.completed)})", marker=".", **style)
            ax.fill_between(steps, low, high, color=style["color"], alpha=0.15, linewidth=0)
        ax.set_title(members[0].setting_label)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        _legend_outside(ax)
    return _save(fig, path)


def val_loss_curves(groups: list[Group], path: Path, subtitle: str = "") -> Path | None:
    return _curves(groups, VAL_LOSS, "validation loss",
                   "Validation loss: mean over seeds, band = min–max", path, subtitle)


def eff_rank_curves(groups: list[Group], path: Path, subtitle: str = "") -> Path | None:
    return _curves(groups, EFF_RANK, "effective rank (entropy)",
                   "Effective rank of momentum: mean over seeds, band = min–max", path, subtitle)


def _alpha(group: Group) -> float | None:
    alpha = group.config.get("optimizer.alpha")
    return float(alpha) if isinstance(alpha, (int, float)) and alpha > 0 else None


def _legend_outside(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _series_name(group: Group) -> str:
    name = f"{group.kind} schedule={group.config.get('noise.schedule', '?')}"
    if group.config.get("optimizer.rank_threshold") is not None:
        name += f" rank_threshold={group.config['optimizer.rank_threshold']}"
    return name


def delta_vs_alpha(analysis, path: Path, phase: str | None = None, subtitle: str = "") -> Path | None:
    """Δ% of final loss vs the baseline against alpha, with the simultaneous 95% intervals of the primary
    analysis; series that share an alpha are dodged sideways; 0 and the phase's criterion drawn."""
    panels = []
    for base_id, family in analysis.families.items():
        members = [g for g in analysis.groups if id(g.baseline) == base_id and not g.is_baseline
                   and _alpha(g) and g.label in family.comparisons]
        if members:
            panels.append((members, family))
    if not panels:
        return None
    fig, axes = _subplots(len(panels), "Final val loss vs baseline: Δ% with simultaneous 95% intervals (Dunnett)",
                          subtitle)
    for ax, (members, family) in zip(axes, panels):
        series: dict[str, list[Group]] = {}
        for g in members:
            series.setdefault(_series_name(g), []).append(g)
        names = sorted(series)
        for i, (name, color) in enumerate(zip(names, _colors(len(names)))):
            dodge = 1.12 ** (i - (len(names) - 1) / 2)  # the same factor on a log axis: even spacing
            points = sorted(((_alpha(g) * dodge, family.comparisons[g.label], g) for g in series[name]),
                            key=lambda point: point[0])
            x = [a for a, _, _ in points]
            y = [c.delta_pct for _, c, _ in points]
            err = [[c.delta_pct - c.low_pct for _, c, _ in points], [c.high_pct - c.delta_pct for _, c, _ in points]]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, linestyle="none", color=color, alpha=0.85,
                        label=f"{name} (n={min(c.n for _, c, _ in points)})")
            for a, c, g in points:
                if g.final_alphas:  # annealed: x is the alpha it started at; say where it ended
                    ax.annotate("→" + "/".join(f"{end:g}" for end in g.final_alphas), (a, c.delta_pct),
                                textcoords="offset points", xytext=(4, 4), fontsize=6, color=color)
        ax.axhline(0, color="black", linewidth=1, label=f"baseline {members[0].baseline.label}")
        _draw_criterion(ax, phase)
        ax.set_xscale("log")
        ax.set_xlabel("alpha at the start (→ where an annealed run ended; series dodged sideways)")
        ax.set_ylabel("Δ final val loss vs baseline (%)")
        ax.set_title(f"{members[0].setting_label}: {family.method}, σ̂ {family.sigma_pct:.2f}%")
        ax.grid(alpha=0.3, which="both")
        _legend_outside(ax)
    return _save(fig, path)


def delta_over_steps(groups: list[Group], path: Path, phase: str | None = None, subtitle: str = "") -> Path | None:
    """Per compared config: each shared seed's paired % difference of val loss vs the baseline over steps, and
    their mean with a pointwise 95% t band."""
    items = [(g, *measures.paired_differences(g)) for g in groups
             if g.baseline is not None and not g.is_baseline
             and g.registered and g.registered.muon_family]
    items = [(g, steps, d) for g, steps, d in items if steps]
    if not items:
        return None
    fig, axes = _subplots(len(items), "Δ val loss vs baseline over steps: paired per seed (thin), mean and 95% band",
                          subtitle, cols=3, size=(5, 3.2))
    for ax, (g, steps, diffs) in zip(axes, items):
        for row in diffs:
            ax.plot(steps, row, color="tab:gray", linewidth=0.8, alpha=0.6)
        mean, half = mean_band(diffs)
        ax.plot(steps, mean, color="tab:blue", linewidth=2, marker=".", label=f"mean of {len(diffs)} seeds")
        if half is not None:
            ax.fill_between(steps, mean - half, mean + half, color="tab:blue", alpha=0.2, linewidth=0)
        ax.axhline(0, color="black", linewidth=1)
        _draw_criterion(ax, phase)
        ax.set_title(textwrap.fill(g.label, 45), fontsize=8)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel("Δ vs baseline (%)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    return _save(fig, path)


def write_plots(analysis, out_dir: Path, phase: str | None = None) -> dict[str, Path]:
    """Write every plot that has data; returns title -> file."""
    out_dir = Path(out_dir)
    note = analysis.rehearsal.label if analysis.rehearsal else ""
    made = {
        "Final loss vs baseline (Δ%, simultaneous intervals)":
            delta_vs_alpha(analysis, out_dir / "delta_vs_alpha.png", phase, note),
        "Δ over steps (paired by seed)":
            delta_over_steps(analysis.groups, out_dir / "delta_over_steps.png", phase, note),
        "Validation loss curves": val_loss_curves(analysis.groups, out_dir / "val_loss_curves.png", note),
        "Effective rank over steps": eff_rank_curves(analysis.groups, out_dir / "eff_rank.png", note),
    }
    return {title: path for title, path in made.items() if path is not None}
