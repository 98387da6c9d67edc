"""What a sweep can detect: minimum detectable effects and seeds needed, from the seed variance of earlier runs.

The one home of the power formula: the report's "what this sweep can detect" lines and the preflight's per-sweep
lines (orthonoise/sweep/design.py, `make plan-*`, the sweep files' "Can detect" headers) all come from here.

Inputs are σ (the seed std of one run, % of the loss) and ρ (the share of it that is a seed block, the same in
every arm). The analysis it sizes is the report's primary one (engine.many_to_one): k configs run seeds 1..n, the
baseline they share runs seeds 1..n_base (every sweep file lays its seeds out so), and each config is compared
with the baseline on the m = min(n, n_base) seeds they share: paired log differences with SE = σ·√(1−ρ)·√(2/m)
and df = m − 1 (a seed only one arm runs tells nothing about the pair). The decision's own multiplier q is the
Šidák quantile of k simultaneous two-sided intervals (engine.sidak_quantile), the two-sided t quantile of a
paired interval, or the one-sided one for phase 4. The minimum detectable effect (MDE) at 80% power is exact:
the δ at which a noncentral t with df m − 1 and noncentrality δ/SE exceeds q with probability 0.8. For an
equivalence claim (TOST at 90%, df m − 1 as the test uses) it is the narrowest margin M shown with at least 80%
power when the truth is 0: 1 − 2·P(T(df, M/SE) ≤ t₀.₉₅) = 0.8, a lower bound on the TOST's power. A claim
"beats by > m" passes with 80% power only when the true gain is ≥ m + MDE. Seeds needed: the fewest seeds per
arm whose MDE is ≤ the plan's margin (the baseline keeps its n_base seeds if it has more). Without a measurement
the defaults are σ = 1% and ρ = 0.5 (the design values of the report's operating-characteristics test); measure
them with `--from <earlier sweep dir>`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from scipy import optimize, stats

from . import criteria, engine

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


# The claims of each phase whose noise is the final loss's seed noise (rank and speed have their own); the first
# is the phase's primary claim, the one the preflight sizes each sweep for. Phase 4's claim has no margin (better
# at all): it is sized for the advantage 3.3 asks to replicate.
PHASE_CLAIMS = {
    "3.1": [Claim(f"final loss within {criteria.SANITY_TOLERANCE_PCT:g}% of baseline (TOST)", EQUIVALENCE,
                  criteria.SANITY_TOLERANCE_PCT)],
    "3.2": [Claim(f"a config beats baseline by >{criteria.SIGNAL_MARGIN_PCT:g}%", MANY_TO_ONE,
                  criteria.SIGNAL_MARGIN_PCT),
            Claim("isotropic underperforms the matched OrthoNoise config", PAIRED, criteria.SIGNAL_MARGIN_PCT)],
    "3.3": [Claim(f"advantage >{criteria.REPLICATION_MARGIN_PCT:g}% replicates", PAIRED,
                  criteria.REPLICATION_MARGIN_PCT),
            Claim(f"early training stable (within {criteria.EARLY_TOLERANCE_PCT:g}% at step 100; final-loss noise "
                  "as proxy)", PAIRED, criteria.EARLY_TOLERANCE_PCT)],
    "4": [Claim("OrthoNoise better than baseline", ONE_SIDED, criteria.REPLICATION_MARGIN_PCT)],
}


def contrast_design(n: int, n_base: int) -> tuple[float, int]:
    """A config on seeds 1..n against a baseline on 1..n_base, compared on their shared seeds: (SE of the
    config − baseline estimate in units of one arm's residual std, df)."""
    shared = min(n, n_base)
    return (math.sqrt(2 / shared), shared - 1) if shared >= 2 else (math.inf, 0)


def _multiplier(design: str, k: int, df: float) -> float:
    if design == MANY_TO_ONE:
        return engine.sidak_quantile(k, df)
    if design in (ONE_SIDED, EQUIVALENCE):
        return float(stats.t.ppf(engine.CONFIDENCE, df))
    return float(stats.t.ppf(0.5 + engine.CONFIDENCE / 2, df))


def detection_power(effect_se: float, design: str, k: int, df: float) -> float:
    """Exact probability that the decision shows a true effect of `effect_se` standard errors: the noncentral
    t's chance of clearing the multiplier (for EQUIVALENCE: the margin in SEs, truth 0, a lower bound)."""
    q = _multiplier(design, k, df)
    if design == EQUIVALENCE:
        return 1 - 2 * float(stats.nct.cdf(q, df, effect_se))
    return float(stats.nct.sf(q, df, effect_se))


@lru_cache(maxsize=1024)
def _mde_se(design: str, k: int, df: int, power: float) -> float:
    """The effect, in standard errors, detected with exactly `power` (bisection on the exact power)."""
    low, high = 0.0, 1.0
    while detection_power(high, design, k, df) < power:
        low, high = high, 2 * high
    return float(optimize.brentq(lambda x: detection_power(x, design, k, df) - power, low, high, xtol=1e-6))


def mde_pct(sigma_pct: float, rho: float, n: int, design: str, k: int = 1, n_base: int | None = None,
            power: float = POWER) -> float:
    """The smallest true difference (% of the loss) the decision detects with `power`: n seeds per config,
    n_base (default n) for the baseline, k configs against it (only MANY_TO_ONE shares its error rate)."""
    n_base = n if n_base is None else n_base
    if min(n, n_base) < 2 or not math.isfinite(sigma_pct):
        return math.inf
    se_unit, df = contrast_design(n, n_base)
    se = sigma_pct * math.sqrt(max(0.0, 1 - (rho if math.isfinite(rho) else 0.0))) * se_unit
    return _mde_se(design, k if design == MANY_TO_ONE else 1, df, power) * se


def seeds_needed(sigma_pct: float, rho: float, margin_pct: float, design: str, k: int = 1,
                 n_base: int | None = None, power: float = POWER) -> int | None:
    """Fewest seeds per arm whose MDE is at most `margin_pct` (a baseline with more than that keeps its n_base);
    None beyond MAX_SEEDS (bisection: the MDE falls as seeds are added)."""
    def enough(n: int) -> bool:
        return mde_pct(sigma_pct, rho, n, design, k, max(n, n_base or n), power) <= margin_pct

    if not enough(MAX_SEEDS):
        return None
    low, high = 1, MAX_SEEDS  # enough(high); not enough(low)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid, high)
    return high


def claim_line(claim: Claim, sigma_pct: float, rho: float, n: int, k: int, n_base: int | None = None) -> str:
    mde = mde_pct(sigma_pct, rho, n, claim.design, k, n_base)
    need = seeds_needed(sigma_pct, rho, claim.margin_pct, claim.design, k, n_base)
    need_text = f"≥ {need} seeds per arm" if need else f"more than {MAX_SEEDS} seeds per arm"
    scope = f"{k} configs vs one baseline, simultaneous" if claim.design == MANY_TO_ONE else claim.design
    seeds = f"{n} seeds" + (f" (baseline {n_base})" if n_base not in (None, n) else "")
    if claim.design == EQUIVALENCE:
        return (f"{claim.name} [{scope}]: with {seeds} equivalence is shown with 80% power within ±{mde:.2f}%; "
                f"±{claim.margin_pct:g}% needs {need_text}")
    line = f"{claim.name} [{scope}]: with {seeds} detects a true difference ≥ {mde:.2f}% at 80% power"
    if claim.design == MANY_TO_ONE:
        line += f" (a PASS of '>{claim.margin_pct:g}%' needs a true gain ≥ {claim.margin_pct + mde:.2f}%)"
    return line + f"; detecting {claim.margin_pct:g}% needs {need_text}"


def noise_text(sigma_pct: float, rho: float, source: str) -> str:
    return f"seed std σ̂ = {sigma_pct:.2f}% of the loss, seed-block share ρ̂ = {rho:.2f}; {source}"


def power_lines(phase: str | None, n: int, k: int, sigma_pct: float, rho: float, source: str,
                n_base: int | None = None) -> list[str]:
    """The MDE / seeds-needed lines of the phase's claims at n seeds per config (n_base for the baseline) and
    k configs."""
    claims = PHASE_CLAIMS.get(str(phase), [])
    if not claims:
        return []
    head = f"Power ({noise_text(sigma_pct, rho, source)}):"
    return [head] + [f"  {claim_line(c, sigma_pct, rho, n, k, n_base)}" for c in claims]


def measured_noise(families) -> tuple[float, float, int] | None:
    """σ̂ and ρ̂ of the family with the most error degrees of freedom, and those df; None when none has any."""
    usable = [f for f in families if math.isfinite(f.sigma_pct) and math.isfinite(f.df) and f.df > 0]
    if not usable:
        return None
    best = max(usable, key=lambda f: f.df)
    return best.sigma_pct, (best.rho if math.isfinite(best.rho) else 0.0), int(best.df)


def noise_of(sweep_dir) -> tuple[float, float, str] | None:
    """(σ̂, ρ̂, where from) measured by the report engine in an earlier sweep dir; None when it has nothing
    measurable."""
    from .analysis import analyse

    measured = measured_noise(list(analyse(Path(sweep_dir).resolve()).families.values()))
    if measured is None:
        return None
    return measured[0], measured[1], f"measured in {sweep_dir}, {measured[2]} error df"
