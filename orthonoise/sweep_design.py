"""What a sweep's comparisons can detect, before it runs (the preflight's power lines and the sweep files' headers).

One formula, a normal approximation for two independent means (it ignores the seed-block correlation, which can
only help, and the t-distribution's heavier tails at few seeds, which hurt):

    MDE% = (z[1 − a/(2k)] + z[power]) · σ% · sqrt(1/n + 1/n_base)

n seeds per config, n_base for the baseline every config is compared with, k comparisons sharing the family-wise
two-sided error a = 5% (Bonferroni, a little conservative next to Dunnett), power 80%, σ% the seed-to-seed standard
deviation of the final validation loss as a percentage of the loss. σ is measured from completed runs of the same
setting (model, pretrained or not, steps) under outputs/ once any config has ≥ 2 seeds; until then it is the
planning value ASSUMED_SEED_STD_PCT. "Seeds needed" is the smallest n (baseline seeds scaled in the same ratio)
whose MDE is at most the plan's margin for the phase.
"""
from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from statistics import NormalDist

from omegaconf import DictConfig, OmegaConf

from orthonoise.rundir import HYDRA_DIR, SUMMARY_FILE, Status, read_summary

# Planning value until phase 3.1 measures σ: the seed std at which the project's report engine was checked
# (2 seeds per arm then detected only effects ≥ 2.8%). Seeds needed scale with σ².
ASSUMED_SEED_STD_PCT = 1.0
FAMILY_ALPHA = 0.05
POWER = 0.8
BASELINE_OPTIMIZER = "muon"  # the conf/optimizer choice every other arm of a setting is compared with
NOT_PART_OF_AN_ARM = ("hydra", "seed", "phase", "tags")  # a job's config minus these names its arm


def detectable_effect_pct(n: int, n_base: int, comparisons: int = 1, sigma_pct: float = ASSUMED_SEED_STD_PCT,
                          alpha: float = FAMILY_ALPHA, power: float = POWER) -> float:
    """Smallest true difference (% of the loss) found with `power` by k two-sided tests sharing `alpha`."""
    z = NormalDist().inv_cdf(1 - alpha / (2 * max(1, comparisons))) + NormalDist().inv_cdf(power)
    return z * sigma_pct * math.sqrt(1 / n + 1 / n_base)


def seeds_needed(margin_pct: float, base_ratio: float = 1.0, comparisons: int = 1,
                 sigma_pct: float = ASSUMED_SEED_STD_PCT) -> int:
    """Seeds per config (the baseline gets base_ratio times as many) for an MDE at most `margin_pct`."""
    z = NormalDist().inv_cdf(1 - FAMILY_ALPHA / (2 * max(1, comparisons))) + NormalDist().inv_cdf(POWER)
    return max(2, math.ceil((z * sigma_pct / margin_pct) ** 2 * (1 + 1 / base_ratio)))


def arm_digest(cfg: DictConfig) -> str:
    """A job's settings without its seed and labels (phase, tags), as a short digest: its arm's identity."""
    settings = {k: v for k, v in OmegaConf.to_container(cfg, resolve=False).items() if k not in NOT_PART_OF_AN_ARM}
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


def setting_of(cfg: DictConfig) -> tuple:
    """What comparable runs share: (model preset, pretrained, max_steps)."""
    return cfg.model.preset, bool(cfg.model.pretrained), int(cfg.trainer.max_steps)


def measured_seed_std(history: Path) -> dict[tuple, tuple[float, str]]:
    """Pooled seed std (% of the loss) of completed runs under `history`, by setting: (σ%, where from)."""
    losses: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for summary_path in Path(history).rglob(SUMMARY_FILE) if Path(history).exists() else []:
        summary = read_summary(summary_path.parent)
        if not summary or summary.get("status") != Status.COMPLETED or summary.get("final_val_loss") is None:
            continue
        try:
            cfg = OmegaConf.load(summary_path.parent / HYDRA_DIR / "config.yaml")
            losses[setting_of(cfg)][arm_digest(cfg)].append(float(summary["final_val_loss"]))
        except Exception:  # a foreign or half-written directory is no evidence
            continue
    pooled = {}
    for setting, arms in losses.items():
        spread = [(len(v) - 1, statistics.stdev(v) / statistics.mean(v) * 100) for v in arms.values() if len(v) > 1]
        dof = sum(d for d, _ in spread)
        if dof:
            sigma = math.sqrt(sum(d * s * s for d, s in spread) / dof)
            pooled[setting] = (sigma, f"measured: {len(spread)} configs, {dof + len(spread)} runs under {history}")
    return pooled


def phase_margin_pct(phase: str | None, pretrained: bool) -> float | None:
    """The plan's margin for the phase's comparison of final losses (the report's criteria own the numbers);
    None where the plan asks something else (3.3 from scratch and phase 4: "faster")."""
    from orthonoise.report import criteria

    margins = {"3.1": criteria.SANITY_TOLERANCE_PCT, "3.2": criteria.SIGNAL_MARGIN_PCT,
               "3.3": criteria.REPLICATION_MARGIN_PCT if pretrained else None}
    return margins.get(phase)


def design_lines(by_sweep: dict, history: Path) -> str:
    """One line per sweep: its configs and seeds, the baseline they are compared with, what that can detect, and
    the seeds the phase's margin needs. Every sweep of one preflight with the same setting is one family."""
    sigma_by_setting = measured_seed_std(history)
    by_setting: dict[tuple, list] = defaultdict(list)
    for jobs in by_sweep.values():
        for job in jobs:
            by_setting[job.setting].append(job)
    lines = []
    for sweep, jobs in by_sweep.items():
        for setting in dict.fromkeys(job.setting for job in jobs):
            family = by_setting[setting]
            sigma, source = sigma_by_setting.get(setting, (ASSUMED_SEED_STD_PCT, "assumed: none measured yet"))
            mine = [job for job in jobs if job.setting == setting]
            lines.append(f"{sweep}: " + _design_text(mine, family, sigma, source))
    return "\n".join(lines)


def _seeds_by_arm(jobs: list) -> dict[str, set]:
    arms: dict[str, set] = defaultdict(set)
    for job in jobs:
        arms[job.arm].add(job.seed)
    return arms


def _design_text(mine: list, family: list, sigma: float, source: str) -> str:
    baselines = _seeds_by_arm([j for j in family if j.optimizer == BASELINE_OPTIMIZER])
    others = _seeds_by_arm([j for j in family if j.optimizer != BASELINE_OPTIMIZER])
    n_base = max((len(s) for s in baselines.values()), default=0)
    my_arms = _seeds_by_arm([j for j in mine if j.optimizer != BASELINE_OPTIMIZER])
    stats = f"seed std {sigma:.2f}% ({source}), 80% power, 5% two-sided"
    if not my_arms:  # a baseline-only sweep (the learning-rate arms): how far apart its arms must be
        n = min(len(s) for s in _seeds_by_arm(mine).values())
        mde = detectable_effect_pct(n, n, max(1, len(baselines) - 1), sigma)
        return (f"{len(baselines)} baseline arm(s) × {n} seeds, the reference of every comparison; arms differ "
                f"detectably at ≥ {mde:.2f}% ({stats})")
    n = min(len(s) for s in my_arms.values())
    k = len(others)
    reference = n_base or n
    mde = detectable_effect_pct(n, reference, k, sigma)
    text = (f"{len(my_arms)} config(s) × {n} seeds vs a baseline of {n_base or 'no'} seeds"
            + ("" if n_base else f" in this plan (priced as {n})")
            + f": detects Δ ≥ {mde:.2f}% of the loss ({stats}, shared by {k} comparison(s))")
    margin = phase_margin_pct(mine[0].phase, mine[0].setting[1])
    if margin is not None:
        text += (f"; the phase's {margin:g}% margin needs ≥ {seeds_needed(margin, reference / n, k, sigma)} "
                 f"seeds per config")
    return text
