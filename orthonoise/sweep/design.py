"""The preflight's design lines: per sweep, its configs, seeds and baseline, and what that can detect (`make plan-*`,
the sweep files' "Can detect" headers). Every number comes from orthonoise/report/power.py, the one power formula;
this module only says who is compared with whom and with which seed noise.

Every sweep of one preflight with the same setting (model, pretrained or not, steps) is one family: its baseline
arms (Muon) are the reference of its other arms, which share the family's error rate. σ and ρ, in this order:
`--from <sweep dir>` (σ̂ and ρ̂ measured there by the report engine); else completed runs of the same setting under
the history dir (σ pooled over their arms; ρ the default); else the defaults σ = 1%, ρ = 0.5. Each line says which.
"""
from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from orthonoise.optim.registry import Role, kinds
from orthonoise.report import power
from orthonoise.run.rundir import SUMMARY_FILE, Status, read_hydra_record, read_summary

# the conf/optimizer choices every other arm of a setting is compared with (orthonoise/optim/registry.py)
BASELINE_OPTIMIZERS = frozenset(kind.name for kind in kinds(Role.BASELINE))
NOT_PART_OF_AN_ARM = ("hydra", "seed", "phase", "tags", "plan")  # a job's config minus these names its arm


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
        cfg = read_hydra_record(summary_path.parent).composed()
        if cfg is None:
            continue
        try:
            losses[setting_of(cfg)][arm_digest(cfg)].append(float(summary["final_val_loss"]))
        except Exception:  # a foreign or half-written directory is no evidence
            continue
    pooled = {}
    for setting, arms in losses.items():
        spread = [(len(v) - 1, statistics.stdev(v) / statistics.mean(v) * 100) for v in arms.values() if len(v) > 1]
        dof = sum(d for d, _ in spread)
        if dof:
            sigma = math.sqrt(sum(d * s * s for d, s in spread) / dof)
            pooled[setting] = (sigma, f"{len(spread)} configs, {dof + len(spread)} runs under {history}")
    return pooled




def noise_by_setting(settings, history: Path, noise_from: Path | None = None) -> dict[tuple, tuple[float, float, str]]:
    """(σ%, ρ, where from) per setting: `--from` first, then completed runs under `history`, then the defaults."""
    measured = power.noise_of(noise_from) if noise_from else None
    if measured:
        return dict.fromkeys(settings, measured)
    missing = f"nothing measurable in {noise_from}; " if noise_from else ""
    pooled = measured_seed_std(history)
    noise = {}
    for setting in settings:
        if setting in pooled:
            sigma, where = pooled[setting]
            noise[setting] = (sigma, power.DEFAULT_RHO, f"{missing}σ from {where}, ρ default")
        else:
            noise[setting] = (power.DEFAULT_SIGMA_PCT, power.DEFAULT_RHO,
                              f"{missing}defaults; --from <sweep dir> measures both")
    return noise


def design_lines(by_sweep: dict, history: Path, noise_from: Path | None = None) -> str:
    """One line per sweep: its configs and seeds, the baseline they are compared with, what that can detect for
    the phase's primary claim, and the seeds the claim's margin needs. Every sweep of one preflight with the same
    setting is one family."""
    by_setting: dict[tuple, list] = defaultdict(list)
    for jobs in by_sweep.values():
        for job in jobs:
            by_setting[job.setting].append(job)
    noise = noise_by_setting(list(by_setting), history, noise_from)
    lines = []
    for sweep, jobs in by_sweep.items():
        for setting in dict.fromkeys(job.setting for job in jobs):
            mine = [job for job in jobs if job.setting == setting]
            lines.append(f"{sweep} " + _design_text(mine, by_setting[setting], *noise[setting]))
    return "\n".join(lines)


def _seeds_by_arm(jobs: list) -> dict[str, set]:
    arms: dict[str, set] = defaultdict(set)
    for job in jobs:
        arms[job.arm].add(job.seed)
    return arms


def _design_text(mine: list, family: list, sigma: float, rho: float, source: str) -> str:
    baselines = _seeds_by_arm([j for j in family if j.optimizer in BASELINE_OPTIMIZERS])
    others = _seeds_by_arm([j for j in family if j.optimizer not in BASELINE_OPTIMIZERS])
    my_arms = _seeds_by_arm([j for j in mine if j.optimizer not in BASELINE_OPTIMIZERS])
    noise = f" [σ {sigma:.2f}%, ρ {rho:.2f}: {source}]"
    if not my_arms:  # a baseline-only sweep (the learning-rate arms): how far apart its arms must be
        n = min(len(s) for s in _seeds_by_arm(mine).values())
        k = max(1, len(baselines) - 1)
        mde = power.mde_pct(sigma, rho, n, power.MANY_TO_ONE, k)
        return (f"({len(baselines)} baseline arms × {n} seeds, the reference of every comparison): the arms differ "
                f"detectably when ≥ {mde:.2f}% apart [{k} simultaneous comparison(s)] at 80% power" + noise)
    n = min(len(s) for s in my_arms.values())
    n_base = max((len(s) for s in baselines.values()), default=0)
    text = f"({len(my_arms)} configs" + ("): " if n_base else f"; no baseline in this plan, priced as {n} seeds): ")
    claims = power.PHASE_CLAIMS.get(str(mine[0].phase))
    if not claims:  # no phase, no claim: how far a config must be from the baseline
        mde = power.mde_pct(sigma, rho, n, power.MANY_TO_ONE, len(others), n_base or n)
        return text + f"with {n} seeds detects a true difference ≥ {mde:.2f}% at 80% power" + noise
    return text + power.claim_line(claims[0], sigma, rho, n, len(others), n_base or n) + noise
