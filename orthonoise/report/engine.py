"""The statistics engine: many-to-one comparisons of seed results, knowing nothing of run directories.

Input is `{config: {seed: value}}` with one baseline config; values are losses (or any positive measure). The
analysis is on the log scale, so a difference of log values is a ratio and Δ% = 100·(exp(d) − 1) exactly; a
seed std "of 1% of the loss" is a log-scale std of 0.01.

Primary analysis: every config − baseline contrast has its own variance, so an arm that scatters more than the
others (in this research: the high-alpha ones, or the baseline) widens only the intervals it is part of and
never borrows the quieter arms' precision.
- paired: a config sharing 2 or more seeds with the baseline (the same seed is the same init and data order in
  every arm) is compared on those seeds' log differences, SE = sd(d)/√m, df = m − 1;
- Welch: otherwise its own and the baseline's variances, SE = √(s²/n + s_b²/n_b), Satterthwaite df;
- the k intervals of a family are simultaneous by Šidák: each is a two-sided t interval at confidence
  0.95^(1/k) with its contrast's own df. The contrasts share the baseline, so they are positively correlated,
  and for such contrasts Šidák's product bound holds: the family-wise error is at most 5% whatever the arms'
  variances (tests/report/test_operating_characteristics.py measures it). The price is power: each contrast
  has only its own df (docs/report.md, "Primary analysis", has the figures).

Diagnostics, not decisions: the pooled least-squares fit log value = μ + config (+ seed) + ε measures the seed
std σ̂ and its seed-block share ρ̂ (the power lines use them), Brown–Forsythe on its residuals per config, and
Šidák-adjusted p-values.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
# a spread below this share of the values' own size (log scale) is round-off, not seed noise: no interval
SPREAD_RTOL = 1e-9
PAIRED, WELCH, MIXED = "paired, Šidák", "Welch, Šidák", "paired and Welch, Šidák"
PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"
NAN = float("nan")
NO_SPREAD = "no spread between seeds (equal within round-off): no interval"


def pct(log_ratio: float) -> float:
    """A log ratio as a % change: negative = lower (better) loss."""
    return 100.0 * math.expm1(log_ratio) if math.isfinite(log_ratio) else NAN


@dataclass
class Comparison:
    """config − baseline on the log scale; `quantile` makes its interval simultaneous over the family."""
    name: str
    n: int  # seeds of the config in the analysis
    n_base: int
    estimate: float  # log ratio
    se: float  # nan when there is no interval (`reason`)
    df: float
    quantile: float  # multiplier of se for the family's simultaneous two-sided CONFIDENCE interval
    p_adjusted: float = NAN  # Šidák-adjusted p of "no difference", a diagnostic
    paired: bool = False
    reason: str = ""  # why there is no interval

    @property
    def delta_pct(self) -> float:
        return pct(self.estimate)

    def bounds_pct(self, quantile: float | None = None) -> tuple[float, float]:
        q = self.quantile if quantile is None else quantile
        if not (math.isfinite(self.se) and math.isfinite(q) and self.se > 0):
            return NAN, NAN
        return pct(self.estimate - q * self.se), pct(self.estimate + q * self.se)

    @property
    def low_pct(self) -> float:
        return self.bounds_pct()[0]

    @property
    def high_pct(self) -> float:
        return self.bounds_pct()[1]

    def t_bounds_pct(self, confidence: float) -> tuple[float, float]:
        """A single (not simultaneous) two-sided interval: for TOST (confidence 0.90) and paired claims."""
        if not (math.isfinite(self.df) and self.df > 0):
            return NAN, NAN
        return self.bounds_pct(float(stats.t.ppf(0.5 + confidence / 2, self.df)))


@dataclass
class Family:
    baseline: str
    method: str
    comparisons: dict[str, Comparison] = field(default_factory=dict)
    sigma_pct: float = NAN  # total seed std of one run, % of the value (block + residual), pooled fit
    rho: float = NAN  # share of the seed variance that is a shared seed block (0 when not blocked)
    residual_sd: float = NAN  # log-scale residual std of the pooled fit
    df: float = NAN  # error df of the pooled fit (how well σ̂ is measured)
    homogeneity_p: float = NAN  # Brown–Forsythe on the pooled fit's residuals: a diagnostic, no gate
    note: str = ""
    _logs: dict = field(default_factory=dict)

    def contrast(self, a: str, b: str) -> Comparison | None:
        """a − b between two configs of the family, with their own variance (paired on shared seeds)."""
        if a not in self._logs or b not in self._logs:
            return None
        return _comparison(f"{a} − {b}", self._logs[a], self._logs[b], 1, CONFIDENCE)


@dataclass
class LinearFit:
    """Least squares of log values on config (and seed) dummies."""
    columns: dict[str, int]  # config -> column of its effect (the baseline has none)
    beta: np.ndarray
    sigma2: float
    df: int


def fit(logs: dict[str, dict], baseline: str, blocked: bool) -> LinearFit | None:
    configs = [baseline] + [c for c in logs if c != baseline]
    seeds = sorted({s for by_seed in logs.values() for s in by_seed}, key=str)
    columns = {c: i + 1 for i, c in enumerate(configs[1:])}
    seed_col = {s: len(configs) + i for i, s in enumerate(seeds[1:])} if blocked else {}
    rows, y = [], []
    for c in configs:
        for s, value in logs[c].items():
            row = np.zeros(len(configs) + len(seed_col))
            row[0] = 1.0
            if c in columns:
                row[columns[c]] = 1.0
            if s in seed_col:
                row[seed_col[s]] = 1.0
            rows.append(row)
            y.append(value)
    x, y = np.array(rows), np.array(y)
    if np.linalg.matrix_rank(x) < x.shape[1]:
        return None  # a config's effect is not estimable (no shared seeds to connect it)
    df = len(y) - x.shape[1]
    if df < 1:
        return None
    beta = np.linalg.lstsq(x, y, rcond=None)[0]
    resid = y - x @ beta
    return LinearFit(columns, beta, float(resid @ resid) / df, df)


def _finite_log(by_seed: dict) -> dict:
    return {s: math.log(v) for s, v in by_seed.items()
            if isinstance(v, (int, float)) and math.isfinite(v) and v > 0}


@lru_cache(maxsize=4096)
def sidak_quantile(k: int, df: float, confidence: float = CONFIDENCE) -> float:
    """The two-sided t multiplier at confidence^(1/k): k such intervals cover together with ≥ `confidence`."""
    if not (math.isfinite(df) and df > 0):
        return NAN
    return float(stats.t.ppf(0.5 + confidence ** (1 / k) / 2, df))


def _difference(a: dict, b: dict) -> tuple | None:
    """(estimate, se, df, n_a, n_b, paired) of mean log a − mean log b; paired on the shared seeds when there
    are 2 or more, else Welch; se is 0 when the spread is round-off. None with fewer than 2 values a side."""
    shared = sorted(a.keys() & b.keys(), key=str)
    if len(shared) >= 2:
        d = np.array([a[s] - b[s] for s in shared])
        scale = max(abs(v) for s in shared for v in (a[s], b[s]))
        spread = float(d.std(ddof=1))
        if spread <= SPREAD_RTOL * max(1.0, scale):
            spread = 0.0
        return float(d.mean()), spread / math.sqrt(len(d)), len(d) - 1, len(d), len(d), True
    if len(a) < 2 or len(b) < 2:
        return None
    xa, xb = np.array(list(a.values())), np.array(list(b.values()))
    scale = float(max(np.abs(xa).max(), np.abs(xb).max()))
    tol = SPREAD_RTOL * max(1.0, scale)
    va, vb = [float(x.var(ddof=1)) / len(x) if x.std(ddof=1) > tol else 0.0 for x in (xa, xb)]
    if va + vb == 0:
        return float(xa.mean() - xb.mean()), 0.0, len(xa) + len(xb) - 2, len(xa), len(xb), False
    df = (va + vb) ** 2 / (va ** 2 / (len(xa) - 1) + vb ** 2 / (len(xb) - 1))
    return float(xa.mean() - xb.mean()), math.sqrt(va + vb), df, len(xa), len(xb), False


def _comparison(name: str, a: dict, b: dict, k: int, confidence: float) -> Comparison | None:
    found = _difference(a, b)
    if found is None:
        return None
    est, se, df, n_a, n_b, paired = found
    if se == 0:
        return Comparison(name, n_a, n_b, est, NAN, df, NAN, paired=paired, reason=NO_SPREAD)
    return Comparison(name, n_a, n_b, est, se, df, sidak_quantile(k, df, confidence), paired=paired)


def many_to_one(values: dict[str, dict], baseline: str, confidence: float = CONFIDENCE,
                diagnostics: bool = True) -> Family:
    """Every config vs `baseline` with simultaneous intervals; configs with fewer than 2 finite positive values
    (or a baseline with fewer than 2) get no interval. `diagnostics`: also the pooled fit's σ̂, ρ̂, Brown–Forsythe
    and the adjusted p-values (a simulation of the decision rule leaves them out)."""
    logs = {c: _finite_log(v) for c, v in values.items()}
    if baseline not in logs or len(logs[baseline]) < 2:
        return Family(baseline, "none", note="baseline has fewer than 2 seeds")
    logs = {c: v for c, v in logs.items() if c == baseline or len(v) >= 2}
    others = [c for c in logs if c != baseline]
    if not others:
        return Family(baseline, "none", note="no config with 2 or more seeds")
    family = Family(baseline, "none", _logs=logs)
    for c in others:
        comp = _comparison(c, logs[c], logs[baseline], len(others), confidence)
        if comp is not None:
            family.comparisons[c] = comp
    kinds = {comp.paired for comp in family.comparisons.values()}
    family.method = PAIRED if kinds == {True} else WELCH if kinds == {False} else MIXED
    if any(comp.reason for comp in family.comparisons.values()):
        family.note = NO_SPREAD
    if diagnostics:
        _pooled_diagnostics(family, logs, baseline)
        for comp in family.comparisons.values():
            comp.p_adjusted = sidak_p(comp, len(others))
    return family


def sidak_p(comp: Comparison, k: int) -> float:
    """Šidák-adjusted p of "no difference": below 1 − confidence exactly when the interval excludes 0."""
    if not (math.isfinite(comp.se) and comp.se > 0):
        return NAN
    p = float(2 * stats.t.sf(abs(comp.estimate) / comp.se, comp.df))
    return float(-math.expm1(k * math.log1p(-min(p, 1.0)))) if p < 1 else 1.0


def _pooled_diagnostics(family: Family, logs: dict, baseline: str) -> None:
    """σ̂, ρ̂ (the power lines' noise), the pooled fit's df and Brown–Forsythe: measurements, not decisions."""
    blocked = _share_seeds(logs, baseline)
    model = fit(logs, baseline, blocked) if blocked else None
    if model is None:
        blocked, model = False, fit(logs, baseline, False)
    if model is None:
        return
    family.df, family.residual_sd = model.df, math.sqrt(model.sigma2)
    family.sigma_pct, family.rho = _seed_variance(logs, model, blocked)
    if not blocked or len(logs) > 2:  # blocked with two configs: their residuals mirror each other, nothing to test
        family.homogeneity_p = _homogeneity(_residuals_by_config(logs, model, blocked))


def _homogeneity(groups: list[np.ndarray]) -> float:
    usable = [g for g in groups if len(g) >= 2]
    if len(usable) < 2 or all(np.ptp(g) == 0 for g in usable):
        return NAN
    with np.errstate(divide="ignore", invalid="ignore"):  # all deviations equal: no test, not a rejection
        result = stats.levene(*usable, center="median")
    return float(result.pvalue) if math.isfinite(result.statistic) else NAN


def _share_seeds(logs: dict[str, dict], baseline: str) -> bool:
    base = set(logs[baseline])
    return all(len(set(v) & base) >= 1 for c, v in logs.items() if c != baseline) and len(base) >= 2


def _residuals_by_config(logs, model: LinearFit, blocked: bool) -> list[np.ndarray]:
    seeds = sorted({s for v in logs.values() for s in v}, key=str)
    seed_effect = {s: 0.0 for s in seeds}
    if blocked:
        for i, s in enumerate(seeds[1:]):
            seed_effect[s] = model.beta[len(logs) + i]
    out = []
    for c, by_seed in logs.items():
        mean = model.beta[0] + (model.beta[model.columns[c]] if c in model.columns else 0.0)
        out.append(np.array([v - mean - seed_effect[s] for s, v in by_seed.items()]))
    return out


def _seed_variance(logs, model: LinearFit, blocked: bool) -> tuple[float, float]:
    """Total seed std of one run (% of the value) and the block share ρ = σ²_seed / (σ²_seed + σ²_ε), from the
    seeds' mean square in the two-way layout (method of moments, truncated at 0)."""
    sigma2_e = model.sigma2
    if not blocked:
        return 100 * math.sqrt(sigma2_e), 0.0
    seeds = sorted({s for v in logs.values() for s in v}, key=str)
    effects = np.array([0.0] + [model.beta[len(logs) + i] for i in range(len(seeds) - 1)])
    k = len(logs)
    # var of seed effects ≈ σ²_seed + σ²_ε / k (each seed effect is an average over ~k configs)
    sigma2_seed = max(0.0, float(np.var(effects, ddof=1)) - sigma2_e / k) if len(seeds) > 1 else 0.0
    total = sigma2_seed + sigma2_e
    return 100 * math.sqrt(total), (sigma2_seed / total if total > 0 else NAN)


def pair(values: dict, base_values: dict, name: str = "config", confidence: float = CONFIDENCE) -> Comparison | None:
    """One config against its baseline, no multiplicity: the paired interval when they share seeds."""
    family = many_to_one({"__base__": base_values, name: values}, "__base__", confidence, diagnostics=False)
    return family.comparisons.get(name)


# ---- three-way verdicts ---------------------------------------------------------------------------

def below(low: float, high: float, margin_pct: float) -> str:
    """Claim "the value is below margin_pct": PASS when the whole interval is below it, FAIL when the whole
    interval is at or above it, INCONCLUSIVE otherwise (and when there is no interval)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return INCONCLUSIVE
    if high < margin_pct:
        return PASS
    return FAIL if low >= margin_pct else INCONCLUSIVE


def above(low: float, high: float, margin_pct: float) -> str:
    """Claim "the value is above margin_pct" (mirror of `below`)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return INCONCLUSIVE
    if low > margin_pct:
        return PASS
    return FAIL if high <= margin_pct else INCONCLUSIVE


def within(tost: tuple[float, float], simultaneous: tuple[float, float], margin_pct: float) -> str:
    """Equivalence |Δ| < margin by TOST: PASS when the 90% interval lies inside ±margin; FAIL when the
    simultaneous 95% interval lies wholly outside it; INCONCLUSIVE otherwise."""
    low, high = tost
    if not (math.isfinite(low) and math.isfinite(high)):
        return INCONCLUSIVE
    if -margin_pct < low and high < margin_pct:
        return PASS
    s_low, s_high = simultaneous
    outside = math.isfinite(s_low) and (s_low >= margin_pct or s_high <= -margin_pct)
    return FAIL if outside else INCONCLUSIVE
