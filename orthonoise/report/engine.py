"""The statistics engine: many-to-one comparisons of seed results, knowing nothing of run directories.

Input is `{config: {seed: value}}` with one baseline config; values are losses (or any positive measure). The
analysis is on the log scale, so a difference of log values is a ratio and Δ% = 100·(exp(d) − 1) exactly; a
seed std "of 1% of the loss" is a log-scale std of 0.01.

Primary analysis (one per family, declared in `Family.method`):
- blocked: log value[config, seed] = μ + config + seed + ε when the configs share seeds (the same seed is the
  same init and data order in every arm), fitted by least squares;
- one-way: log value = μ + config + ε with the variance pooled over configs, when they do not;
- each config − baseline gets a two-sided simultaneous interval: Dunnett's many-to-one quantile of the
  multivariate t of the fitted contrasts (scipy.stats.multivariate_t);
- Brown–Forsythe (scipy.stats.levene, median-centred) checks that the configs share one variance; when it
  rejects at HOMOGENEITY_P the family falls back to per-config Welch intervals at the Bonferroni level
  (Holm-adjusted p-values reported beside them).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import optimize, stats

CONFIDENCE = 0.95
HOMOGENEITY_P = 0.05  # Brown–Forsythe p below this: the configs' variances differ, Welch + Holm instead
BLOCKED, ONE_WAY, WELCH = "blocked Dunnett", "one-way Dunnett", "Welch, Holm"
PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"
NAN = float("nan")


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
    se: float
    df: float
    quantile: float  # multiplier of se for the family's simultaneous two-sided CONFIDENCE interval
    p_adjusted: float = NAN  # Dunnett or Holm p of "no difference", a diagnostic

    @property
    def delta_pct(self) -> float:
        return pct(self.estimate)

    def bounds_pct(self, quantile: float | None = None) -> tuple[float, float]:
        q = self.quantile if quantile is None else quantile
        if not (math.isfinite(self.se) and math.isfinite(q)) or self.se <= 0:
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
    sigma_pct: float = NAN  # total seed std of one run, % of the value (block + residual)
    rho: float = NAN  # share of the seed variance that is a shared seed block (0 when not blocked)
    residual_sd: float = NAN  # log-scale residual std of the primary model
    df: float = NAN
    homogeneity_p: float = NAN
    note: str = ""
    _fit: LinearFit | None = None

    def contrast(self, a: str, b: str) -> Comparison | None:
        """a − b from the primary model's fit (a blocked contrast between two non-baseline configs)."""
        known = set(self._fit.counts) if self._fit else set()
        if a not in known or b not in known:
            return None
        vector = self._fit.contrast_vector(a) - self._fit.contrast_vector(b)
        est, se = self._fit.estimate(vector)
        q = float(stats.t.ppf(0.5 + CONFIDENCE / 2, self._fit.df)) if self._fit.df > 0 else NAN
        return Comparison(f"{a} − {b}", self._fit.n_of(a), self._fit.n_of(b), est, se, self._fit.df, q)


@dataclass
class LinearFit:
    """Least squares of log values on config (and seed) dummies."""
    columns: dict[str, int]  # config -> column of its effect (the baseline has none)
    beta: np.ndarray
    cov_unscaled: np.ndarray  # (XᵀX)⁻¹
    sigma2: float
    df: int
    counts: dict[str, int]

    def contrast_vector(self, config: str) -> np.ndarray:
        vector = np.zeros(len(self.beta))
        if config in self.columns:
            vector[self.columns[config]] = 1.0
        return vector

    def estimate(self, vector: np.ndarray) -> tuple[float, float]:
        var = float(vector @ self.cov_unscaled @ vector) * self.sigma2
        return float(vector @ self.beta), math.sqrt(var) if var > 0 else NAN

    def n_of(self, config: str) -> int:
        return self.counts.get(config, 0)

    def contrast_covariance(self, configs: list[str]) -> np.ndarray:
        """Covariance of the configs' − baseline estimates, in units of the residual variance."""
        vectors = [self.contrast_vector(c) for c in configs]
        return np.array([[u @ self.cov_unscaled @ v for v in vectors] for u in vectors])


def _finite_log(by_seed: dict) -> dict:
    return {s: math.log(v) for s, v in by_seed.items()
            if isinstance(v, (int, float)) and math.isfinite(v) and v > 0}


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
    cov = np.linalg.inv(x.T @ x)
    beta = cov @ x.T @ y
    resid = y - x @ beta
    return LinearFit(columns, beta, cov, float(resid @ resid) / df, df, {c: len(v) for c, v in logs.items()})


@lru_cache(maxsize=256)
def _dunnett_quantile_cached(corr_key: tuple, k: int, df: float, confidence: float) -> float:
    corr = np.array(corr_key).reshape(k, k)
    if k == 1:
        return float(stats.t.ppf(0.5 + confidence / 2, df))
    dist = stats.multivariate_t(shape=corr, df=df, allow_singular=True)

    def coverage(c: float) -> float:
        return dist.cdf(np.full(k, c), lower_limit=np.full(k, -c), random_state=12345) - confidence

    upper = float(stats.t.ppf(1 - (1 - confidence) / (2 * k), df))  # Bonferroni: never below Dunnett's
    return float(optimize.brentq(coverage, float(stats.t.ppf(0.5 + confidence / 2, df)), upper + 1e-6, xtol=1e-3))


def dunnett_quantile(corr: np.ndarray, df: float, confidence: float = CONFIDENCE) -> float:
    """c with P(max_i |T_i| ≤ c) = confidence for T ~ multivariate t(df, corr): the simultaneous two-sided
    multiplier of many-to-one contrasts (Dunnett 1955), from scipy's multivariate t CDF."""
    k = len(corr)
    key = tuple(np.round(np.asarray(corr, dtype=float), 3).ravel())
    return _dunnett_quantile_cached(key, k, float(df), confidence)


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


def many_to_one(values: dict[str, dict], baseline: str, confidence: float = CONFIDENCE,
                adjusted_p: bool = True) -> Family:
    """Every config vs `baseline` with simultaneous intervals; configs with fewer than 2 finite values (or a
    baseline with fewer than 2) get no interval. `adjusted_p`: also the Dunnett p-values (a diagnostic for the
    CSVs; a simulation of the decision rule leaves them out)."""
    logs = {c: _finite_log(v) for c, v in values.items()}
    if baseline not in logs or len(logs[baseline]) < 2:
        return Family(baseline, "none", note="baseline has fewer than 2 seeds")
    logs = {c: v for c, v in logs.items() if c == baseline or len(v) >= 2}
    if len(logs) < 2:
        return Family(baseline, "none", note="no config with 2 or more seeds")
    blocked = _share_seeds(logs, baseline)
    model = fit(logs, baseline, blocked) if blocked else None
    if model is None:
        blocked, model = False, fit(logs, baseline, False)
    if model is None:
        return Family(baseline, "none", note="too few seeds for an error estimate")
    family = Family(baseline, BLOCKED if blocked else ONE_WAY, df=model.df, _fit=model)
    family.residual_sd = math.sqrt(model.sigma2)
    family.sigma_pct, family.rho = _seed_variance(logs, model, blocked)
    if not blocked or len(logs) > 2:  # blocked with two configs: their residuals mirror each other, nothing to test
        family.homogeneity_p = _homogeneity(_residuals_by_config(logs, model, blocked))
    others = [c for c in logs if c != baseline]
    if math.isfinite(family.homogeneity_p) and family.homogeneity_p < HOMOGENEITY_P and len(others) > 0:
        return _welch_family(logs, baseline, family, confidence)
    cov = model.contrast_covariance(others)
    sd = np.sqrt(np.diag(cov))
    if model.sigma2 <= 0:
        family.note = "no spread between seeds: no interval"
        q = NAN
    else:
        q = dunnett_quantile(cov / np.outer(sd, sd), model.df, confidence)
    for c in others:
        est, se = model.estimate(model.contrast_vector(c))
        family.comparisons[c] = Comparison(c, len(logs[c]), len(logs[baseline]), est, se, model.df, q)
    if adjusted_p and model.sigma2 > 0:
        _dunnett_p(family, cov / np.outer(sd, sd))
    return family


def _dunnett_p(family: Family, corr: np.ndarray) -> None:
    """Single-step Dunnett adjusted p of "no difference" per config (diagnostic: P(max|T| ≥ |t|))."""
    k = len(corr)
    dist = stats.multivariate_t(shape=corr, df=family.df, allow_singular=True) if k > 1 else None
    for comp in family.comparisons.values():
        t = abs(comp.estimate / comp.se) if comp.se and math.isfinite(comp.se) else NAN
        if not math.isfinite(t):
            continue
        if dist is None:
            comp.p_adjusted = float(2 * stats.t.sf(t, comp.df))
        else:
            inside = dist.cdf(np.full(k, t), lower_limit=np.full(k, -t), random_state=12345)
            comp.p_adjusted = float(min(1.0, max(0.0, 1 - inside)))


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


def _welch_family(logs, baseline: str, family: Family, confidence: float) -> Family:
    family.method = WELCH
    family.note = (f"Brown–Forsythe p={family.homogeneity_p:.3g} < {HOMOGENEITY_P}: the configs' seed variances "
                   "differ, so each config has its own Welch interval at the Bonferroni level")
    others = [c for c in logs if c != baseline]
    m = len(others)
    base = np.array(list(logs[baseline].values()))
    raw_p = {}
    for c in others:
        a = np.array(list(logs[c].values()))
        va, vb = a.var(ddof=1) / len(a), base.var(ddof=1) / len(base)
        se = math.sqrt(va + vb)
        df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(base) - 1)) if se > 0 else NAN
        q = float(stats.t.ppf(1 - (1 - confidence) / (2 * m), df)) if se > 0 else NAN
        est = float(a.mean() - base.mean())
        family.comparisons[c] = Comparison(c, len(a), len(base), est, se if se > 0 else NAN, df, q)
        raw_p[c] = float(2 * stats.t.sf(abs(est) / se, df)) if se > 0 else NAN
    for c, p in zip(others, holm([raw_p[c] for c in others])):
        family.comparisons[c].p_adjusted = p
    return family


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (nan stays nan and is not counted)."""
    finite = sorted((p, i) for i, p in enumerate(pvalues) if math.isfinite(p))
    out, running = [NAN] * len(pvalues), 0.0
    for rank, (p, i) in enumerate(finite):
        running = max(running, min(1.0, (len(finite) - rank) * p))
        out[i] = running
    return out


def pair(values: dict, base_values: dict, name: str = "config", confidence: float = CONFIDENCE) -> Comparison | None:
    """One config against its baseline, no multiplicity: the paired (blocked) interval when they share seeds."""
    family = many_to_one({"__base__": base_values, name: values}, "__base__", confidence, adjusted_p=False)
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
