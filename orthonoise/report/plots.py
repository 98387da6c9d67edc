"""PNG plots of a sweep (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from .groups import Group  # noqa: E402
from .table import final_losses  # noqa: E402


def _by_setting(groups: list[Group]) -> dict[str, list[Group]]:
    settings: dict[str, list[Group]] = {}
    for g in groups:
        settings.setdefault(g.setting, []).append(g)
    return settings


def _subplots(n: int, title: str):
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(8 * cols, 5 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    fig.suptitle(title)
    return fig, list(axes.flat[:n])


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


def seed_band(group: Group, key: str) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
    """Steps, mean, min and max of `key` over the group's completed seeds at each logged step."""
    by_step: dict[int, list[float]] = {}
    for run in group.completed:
        for step, value in run.evals(key):
            by_step.setdefault(step, []).append(value)
    steps = sorted(by_step)
    values = [by_step[s] for s in steps]
    return (steps, np.array([np.mean(v) for v in values]), np.array([min(v) for v in values]),
            np.array([max(v) for v in values]))


def _curves(groups: list[Group], key: str, ylabel: str, title: str, path: Path) -> Path | None:
    settings = {s: gs for s, gs in _by_setting(groups).items() if any(seed_band(g, key)[0] for g in gs)}
    if not settings:
        return None
    fig, axes = _subplots(len(settings), title)
    for ax, members in zip(axes, settings.values()):
        labels = legend_labels(members)
        for group, color in zip(members, _colors(len(members))):
            steps, mean, low, high = seed_band(group, key)
            if not steps:
                continue
            style = {"color": "black", "linewidth": 2.2, "zorder": 3} if group.is_baseline else {"color": color}
            ax.plot(steps, mean, label=f"{labels[id(group)]} (n={len(group.completed)})", **style)
            ax.fill_between(steps, low, high, color=style["color"], alpha=0.15, linewidth=0)
        ax.set_title(members[0].setting_label)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def val_loss_curves(groups: list[Group], path: Path) -> Path | None:
    return _curves(groups, "val_loss", "validation loss",
                   "Validation loss: mean over seeds, band = min–max", path)


def eff_rank_curves(groups: list[Group], path: Path) -> Path | None:
    return _curves(groups, "eff_rank", "effective rank (entropy)",
                   "Effective rank of momentum: mean over seeds, band = min–max", path)


def _alpha(group: Group) -> float | None:
    alpha = group.config.get("optimizer.alpha")
    return float(alpha) if isinstance(alpha, (int, float)) and alpha > 0 else None


def final_loss_vs_alpha(groups: list[Group], path: Path) -> Path | None:
    """Mean final loss (error bar = std over seeds) against alpha, one line per optimizer,
    schedule and rank threshold; the baseline as a horizontal line with a ±std band."""
    settings = {s: gs for s, gs in _by_setting(groups).items()
                if any(_alpha(g) and final_losses(g) for g in gs)}
    if not settings:
        return None
    fig, axes = _subplots(len(settings), "Final validation loss vs alpha (error bars: std over seeds)")
    for ax, members in zip(axes, settings.values()):
        series: dict[str, list[tuple[float, list[float]]]] = {}
        for g in members:
            if _alpha(g) and final_losses(g):
                name = f"{g.kind} schedule={g.config.get('noise.schedule', '?')}"
                if g.config.get("optimizer.rank_threshold") is not None:
                    name += f" rank_threshold={g.config['optimizer.rank_threshold']}"
                series.setdefault(name, []).append((_alpha(g), list(final_losses(g).values())))
        for (name, points), color in zip(sorted(series.items()), _colors(len(series))):
            points.sort()
            x = [a for a, _ in points]
            mean = [np.mean(v) for _, v in points]
            std = [np.std(v, ddof=1) if len(v) > 1 else 0.0 for _, v in points]
            ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, color=color, label=name)
        for base in {id(g.baseline): g.baseline for g in members if g.baseline is not None}.values():
            values = list(final_losses(base).values())
            if values:
                mean, std = np.mean(values), (np.std(values, ddof=1) if len(values) > 1 else 0.0)
                ax.axhline(mean, color="black", linestyle="--", label=f"baseline (n={len(values)})")
                ax.axhspan(mean - std, mean + std, color="black", alpha=0.08)
        ax.set_xscale("log")
        ax.set_xlabel("alpha")
        ax.set_ylabel("final validation loss")
        ax.set_title(members[0].setting_label)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(groups: list[Group], out_dir: Path) -> dict[str, Path]:
    """Write every plot that has data; returns title -> file."""
    out_dir = Path(out_dir)
    made = {
        "Validation loss curves": val_loss_curves(groups, out_dir / "val_loss_curves.png"),
        "Final loss vs alpha": final_loss_vs_alpha(groups, out_dir / "final_loss_vs_alpha.png"),
        "Effective rank over steps": eff_rank_curves(groups, out_dir / "eff_rank.png"),
    }
    return {title: path for title, path in made.items() if path is not None}
