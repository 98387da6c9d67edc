"""What a sweep can detect: minimum detectable effects and seeds needed, from the seed variance of earlier runs.

Inputs are σ (the seed std of one run, % of the loss) and ρ (the share of it that is a seed block, the same in
every arm); the blocked analysis removes the block, so a config − baseline difference over n seeds a side has
standard error SE = σ·√(1−ρ)·√(2/n). The minimum detectable effect (MDE) at 80% power is (q + t₀.₈)·SE with q the
decision's own multiplier: Dunnett's simultaneous quantile for k configs against one baseline (df = k(n−1)), the
t quantile of a paired interval (df = n−1), one-sided for phase 4; for an equivalence claim (TOST) the narrowest
margin shown with 80% power when the truth is 0 is (t₀.₉₅ + t₀.₉)·SE. A claim "beats by > m" passes with 80%
power only when the true gain is ≥ m + MDE. Seeds needed: the fewest seeds per arm whose MDE is ≤ the plan's
margin. Without a measured sweep the defaults are σ = 1% and ρ = 0.5 (the design values of the report's
operating-characteristics test); measure them with `--from <earlier sweep dir>`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from . import engine

POWER = 0.80
DEFAULT_SIGMA_PCT = 1.0
DEFAULT_RHO = 0.5
MAX_SEEDS = 50

MANY_TO_ONE, PAIRED, ONE_SIDED, EQUIVALENCE = "many-to-one", "paired", "one-sided", "equivalence"


@dataclass(frozen=True)
class Claim:
    name: str
    design: str  # MANY_TO_ONE, PAIRED, ONE_SIDED or EQUIVALENCE
    margin_pct: float  # the plan's margin the seeds-needed line is sized for


# The claims of each phase whose noise is the final loss's seed noise (rank and speed have their own).
PHASE_CLAIMS = {
    "3.1": [Claim("final loss within 5% of baseline (TOST)", EQUIVALENCE, 5.0)],
    "3.2": [Claim("a config beats baseline by >1%", MANY_TO_ONE, 1.0),
            Claim("isotropic underperforms the matched OrthoNoise config", PAIRED, 1.0)],
    "3.3": [Claim("advantage >0.5% replicates", PAIRED, 0.5),
            Claim("early training stable (within 2% at step 100; final-loss noise as proxy)", PAIRED, 2.0)],
    "4": [Claim("OrthoNoise better than baseline", ONE_SIDED, 0.5)],
}


def _multiplier(design: str, k: int, df: float) -> float:
    if design == MANY_TO_ONE and k > 1:
        corr = np.full((k, k), 0.5)
        np.fill_diagonal(corr, 1.0)
        return engine.dunnett_quantile(corr, df)
    if design == ONE_SIDED:
        return float(stats.t.ppf(engine.CONFIDENCE, df))
    if design == EQUIVALENCE:
        return float(stats.t.ppf(engine.CONFIDENCE, df))
    return float(stats.t.ppf(0.5 + engine.CONFIDENCE / 2, df))


def mde_pct(sigma_pct: float, rho: float, n: int, design: str, k: int = 1, power: float = POWER) -> float:
    """The smallest true difference (% of the loss) the decision detects with `power`, n seeds per arm."""
    if n < 2 or not math.isfinite(sigma_pct):
        return math.inf
    df = k * (n - 1) if design == MANY_TO_ONE else n - 1
    se = sigma_pct * math.sqrt(max(0.0, 1 - (rho if math.isfinite(rho) else 0.0))) * math.sqrt(2 / n)
    beta_quantile = (1 + power) / 2 if design == EQUIVALENCE else power  # TOST: both sides at once
    return (_multiplier(design, k, df) + float(stats.t.ppf(beta_quantile, df))) * se


def seeds_needed(sigma_pct: float, rho: float, margin_pct: float, design: str, k: int = 1,
                 power: float = POWER) -> int | None:
    """Fewest seeds per arm whose MDE is at most `margin_pct`; None beyond MAX_SEEDS (bisection: the MDE falls
    as seeds are added)."""
    def enough(n: int) -> bool:
        return mde_pct(sigma_pct, rho, n, design, k, power) <= margin_pct

    if not enough(MAX_SEEDS):
        return None
    low, high = 1, MAX_SEEDS  # enough(high); not enough(low)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid, high)
    return high


def claim_line(claim: Claim, sigma_pct: float, rho: float, n: int, k: int) -> str:
    mde = mde_pct(sigma_pct, rho, n, claim.design, k)
    need = seeds_needed(sigma_pct, rho, claim.margin_pct, claim.design, k)
    need_text = f"{need} seeds per arm" if need else f"more than {MAX_SEEDS} seeds per arm"
    scope = f"{k} configs vs one baseline, simultaneous" if claim.design == MANY_TO_ONE else claim.design
    if claim.design == EQUIVALENCE:
        return (f"{claim.name} [{scope}]: with {n} seeds equivalence is shown with 80% power within ±{mde:.2f}%; "
                f"±{claim.margin_pct:g}% needs {need_text}")
    line = f"{claim.name} [{scope}]: with {n} seeds detects a true difference ≥ {mde:.2f}% at 80% power"
    if claim.design == MANY_TO_ONE:
        line += f" (a PASS of '>{claim.margin_pct:g}%' needs a true gain ≥ {claim.margin_pct + mde:.2f}%)"
    return line + f"; detecting {claim.margin_pct:g}% needs {need_text}"


def power_lines(phase: str | None, n: int, k: int, sigma_pct: float, rho: float, source: str) -> list[str]:
    """The MDE / seeds-needed lines of the phase's claims at n seeds per arm and k configs."""
    claims = PHASE_CLAIMS.get(str(phase), [])
    if not claims:
        return []
    head = f"Power (seed std σ̂ = {sigma_pct:.2f}% of the loss, seed-block share ρ̂ = {rho:.2f}; {source}):"
    return [head] + [f"  {claim_line(c, sigma_pct, rho, n, k)}" for c in claims]


def measured_noise(families) -> tuple[float, float, int] | None:
    """σ̂ and ρ̂ of the family with the most error degrees of freedom, and those df; None when none has any."""
    usable = [f for f in families if math.isfinite(f.sigma_pct) and math.isfinite(f.df) and f.df > 0]
    if not usable:
        return None
    best = max(usable, key=lambda f: f.df)
    return best.sigma_pct, (best.rho if math.isfinite(best.rho) else 0.0), int(best.df)


def measured_in(sweep_dir, shown_as=None) -> tuple[float, float, str] | None:
    """(σ̂, ρ̂, where from) measured in an earlier sweep dir (named `shown_as`, default itself); None when it has
    nothing measurable."""
    from .analysis import analyse

    measured = measured_noise(list(analyse(sweep_dir).families.values()))
    if measured is None:
        return None
    return measured[0], measured[1], f"measured in {shown_as or sweep_dir}, {measured[2]} error df"


def noise_of(sweep_dir) -> tuple[float, float, str]:
    """(σ̂, ρ̂, where from) measured in an earlier sweep dir, or the defaults when it has nothing measurable."""
    measured = measured_in(sweep_dir) if sweep_dir else None
    if measured is None:
        where = f"nothing measurable in {sweep_dir}; " if sweep_dir else ""
        return DEFAULT_SIGMA_PCT, DEFAULT_RHO, f"{where}default, measure with --from <earlier sweep dir>"
    return measured


def preflight_lines(sweeps: list[str], overrides: list[str], noise_from=None) -> list[str]:
    """`make plan-*`: the phase's power lines for the configs and seeds these sweeps will run (configs that
    several sweeps repeat counted once; the baseline kind not counted as a config)."""
    from omegaconf import OmegaConf

    from orthonoise.plan import expand

    from .collect import flatten
    from .groups import canonical, grouping_items
    from .kinds import BASELINE, optimizer_kind

    seeds: dict[str, set] = {}
    phase = None
    for sweep in sweeps:
        for _, cfg in expand(sweep, overrides):
            config = OmegaConf.to_container(cfg, resolve=False)
            config.pop("hydra", None)
            flat = flatten(config)
            phase = phase or (None if cfg.get("phase") is None else str(cfg.phase))
            if optimizer_kind(flat.get("optimizer._target_", "")) != BASELINE:
                seeds.setdefault(canonical(grouping_items(flat)), set()).add(cfg.seed)
    if not seeds:
        return []
    n = min(len(s) for s in seeds.values())
    return power_lines(phase, n, len(seeds), *noise_of(noise_from))
