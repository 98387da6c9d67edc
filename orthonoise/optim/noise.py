"""Noise samplers and the effective rank, as plain batched functions (all return float32).

`orthogonal_noise` draws Q with orthonormal columns (rows, if wide), Haar-distributed, from a Gaussian matrix G.
"qr" and "cholesky" compute the same Q, G's QR factor with a positive-diagonal R; "polar" its polar factor:
- "qr": Householder QR, then flip Q's columns by sign(diag R) (Mezzadri 2007). Exact, but per-matrix and
  sequential on a GPU.
- "cholesky" (default): Cholesky-QR, Q = G R⁻¹ with R = chol(GᵀG). Two GEMMs, a small Cholesky and a
  triangular inverse per pass, all batched. Its R has a positive diagonal by construction, so it is the same Q
  as sign-corrected QR (and Haar for the same reason). One pass loses orthogonality as cond(G)²·u, so it runs
  twice (CholeskyQR2; the first pass may use TF32, the last is IEEE float32); a Gaussian with rows ≥ 2·cols
  has cond ≲ 6 and that is float32-exact. Near-square Gaussians are ill-conditioned (cond ~ n, unbounded
  tail), so those run in float64 with a shifted first pass (shifted CholeskyQR3, Fukaya et al. 2020), which
  never fails. See docs/optimizers.md for timings.
- "polar": the polar factor Q = G (GᵀG)^-½ instead, Haar as well (Q(HG) = H·Q(G) for every orthogonal H, and
  the Haar measure is the only distribution on orthonormal frames with that invariance). Built from GEMMs
  alone, which TF32 tensor cores run fast, where "cholesky" spends most of its time in small triangular solves
  and Cholesky factorisations: scaled coupled Newton–Schulz steps on the n×n Gram matrix, then one polish
  whose Gram is split so that TF32 GEMMs give it float32 accuracy. The steps follow from the shape (Gaussian
  concentration bounds on the singular values), so they are the same for every draw; shapes too small or too
  square for those bounds to hold with probability 1 − 1e-9 fall back to "cholesky".
"""
import contextlib
import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

SAMPLERS = ("cholesky", "polar", "qr")
# t in P(σ outside √m ± √n ± t) ≤ 2·exp(−t²/2): 2·exp(−21) < 1e-9
_TAIL = 6.5


def orthogonal_noise(shape, *, generator: torch.Generator | None = None, device=None, seeds=None,
                     method: str = "cholesky") -> Tensor:
    """A batch (..., m, n) of Haar-distributed matrices with QᵀQ = I (m ≥ n) or QQᵀ = I (m < n).
    seeds: see `gaussian`."""
    return haar_from_gaussian(gaussian(shape, generator=generator, device=device, seeds=seeds), method)


def isotropic_noise(shape, *, generator: torch.Generator | None = None, device=None, seeds=None) -> Tensor:
    """Gaussian direction scaled to ‖N‖_F = sqrt(min(m, n)) = ‖Q‖_F, the norm an orthogonal Q has.
    seeds: see `gaussian`."""
    return rescale_isotropic(gaussian(shape, generator=generator, device=device, seeds=seeds))


def gaussian(shape, *, generator: torch.Generator | None = None, device=None, seeds=None) -> Tensor:
    """Standard Gaussian float32 (k, m, n). With `seeds` (k integers), matrix i is drawn from `generator` (or a
    fresh one) seeded with seeds[i]: each matrix is the same whatever else is drawn in the batch, on any rank."""
    if seeds is None:
        return torch.randn(shape, generator=generator, device=device, dtype=torch.float32)
    G = torch.empty(shape, dtype=torch.float32, device=device)
    generator = generator or torch.Generator(device=G.device)
    for matrix, seed in zip(G, seeds, strict=True):
        generator.manual_seed(seed)
        matrix.normal_(generator=generator)
    return G


@dataclass(frozen=True)
class Distribution:
    """A unit-noise distribution for the noise variants (‖N‖_F = sqrt(min(m, n)) for every one, so variants
    differ only in direction). `sample(shape, *, generator, device, seeds, **options)`; `options` pairs each
    extra keyword of `sample` with the optimizer setting it comes from."""
    sample: Callable[..., Tensor]
    options: tuple[tuple[str, str], ...] = ()


# name → distribution; the noise variants' `distribution` argument (docs/where-to-change-what.md: adding one)
DISTRIBUTIONS = {
    "orthogonal": Distribution(orthogonal_noise, options=(("method", "sampler"),)),
    "isotropic": Distribution(isotropic_noise),
}
DEFAULT_DISTRIBUTION = "orthogonal"  # NoisyMuon's, when a config names none


def rescale_isotropic(G: Tensor) -> Tensor:
    return G * (math.sqrt(min(G.shape[-2:])) / G.norm(dim=(-2, -1), keepdim=True))


def haar_from_gaussian(G: Tensor, method: str = "cholesky") -> Tensor:
    """Haar-distributed orthonormal frames from a batch of Gaussian matrices (float32): the positive-diagonal QR
    factor ("cholesky", "qr") or the polar factor ("polar") of each."""
    wide = G.size(-2) < G.size(-1)
    X = G.mT if wide else G
    if method == "qr":
        Q, R = torch.linalg.qr(X.float())
        Q = Q * torch.sgn(R.diagonal(dim1=-2, dim2=-1)).unsqueeze(-2)
    elif method == "cholesky":
        Q = _cholesky_haar(X)
    elif method == "polar":
        schedule = polar_schedule(*X.shape[-2:])
        Q = _cholesky_haar(X) if schedule is None else _polar_haar(X.float(), schedule)
    else:
        raise ValueError(f"unknown noise sampler {method!r}; choose one of {SAMPLERS}")
    return Q.mT if wide else Q


def _cholesky_haar(X: Tensor) -> Tensor:
    """The positive-diagonal QR factor of tall X: CholeskyQR2, or shifted CholeskyQR3 in float64 if near-square."""
    m, n = X.shape[-2:]
    well_conditioned = m >= 2 * n
    if well_conditioned:
        # A sloppy first pass (TF32 GEMMs where the GPU allows them) still leaves the exact QR factor: any
        # upper-triangular R₁ with a positive diagonal gives G = Q·(R₂R₁), the unique such factorisation.
        X = _cholesky_qr_pass(X.float())
    else:
        X = X.double()
    with _matmul_precision("highest"):  # a TF32 last pass would leave QᵀQ - I at ~1e-3
        if not well_conditioned:
            X = _cholesky_qr_pass(_cholesky_qr_pass(X, shift=True))
        X = _cholesky_qr_pass(X)
    return X.float()


def polar_schedule(m: int, n: int, tol: float = 1e-4) -> list[tuple[float, float]] | None:
    """Per-step (a, b) of `_polar_haar`'s Newton–Schulz steps T = a·I + b·ZY for an m×n Gaussian (m ≥ n): each
    the best odd cubic σ(a + bσ²) on the current bounds of the singular values of G·Z (Chen & Chow 2014; degree 3
    of Polar Express), until every one is within `tol` of 1 — outside an event of probability < 1e-9. None where
    that bound gives no positive σ_min."""
    low = math.sqrt(m) - math.sqrt(n) - _TAIL
    if low <= 0:
        return None
    lo, hi = low / (math.sqrt(m) + math.sqrt(n) + _TAIL), 1.0  # bounds on σ(G)/√c, c = (√m + √n + t)²
    schedule = []
    while max(1 - lo, hi - 1) > tol:
        r = lo / hi
        # σ → σ/hi puts the bounds at [r, 1]. The best cubic there, s·(σ(1 + r + r²) − σ³), is 1 − E at σ = r and
        # σ = 1, and 1 + E at its peak σ = √((1 + r + r²)/3): those two values are the next bounds.
        peak = math.sqrt((1 + r + r * r) / 3)
        s = 2 / (r + r * r + 2 * peak**3)
        schedule.append((s * (1 + r + r * r) / hi, -s / hi**3))
        lo, hi = s * (r + r * r), 2 * s * peak**3
    return schedule


def _polar_haar(X: Tensor, schedule: list[tuple[float, float]]) -> Tensor:
    """X (XᵀX)^-½ for a batch of tall Gaussian matrices, QᵀQ = I to float32 accuracy with TF32 GEMMs."""
    m, n = X.shape[-2:]
    c = (math.sqrt(m) + math.sqrt(n) + _TAIL) ** 2
    eye = torch.eye(n, device=X.device)
    # Coupled Newton–Schulz (Higham 2008, eq. 6.35) with scaled steps: Y → A^½, Z → A^-½ for A = XᵀX/c (the
    # singular values of X·Z are those of X/√c mapped by each step's cubic). TF32-accurate (~1e-3); the polish
    # does the rest.
    Y = _fast_matmul(X.mT, X) / c
    Z = eye.expand_as(Y)
    for a, b in schedule:
        T = a * eye + b * _fast_matmul(Z, Y)
        Y, Z = _fast_matmul(Y, T), _fast_matmul(T, Z)
    X = _fast_matmul(X, Z / math.sqrt(c))
    # One polish: X (I + F)^-½ ≈ X (I − F/2 + 3F²/8) for F = XᵀX − I ~ 1e-3 leaves O(F³), if F is float32
    # accurate (a TF32 Gram is off by ~1e-4). The correction X·P ~ 1e-3·X may be TF32: its error is ~1e-6.
    F = _accurate_gram(X) - eye
    P = 0.375 * _fast_matmul(F, F) - 0.5 * F
    return X + _fast_matmul(X, P)


def _accurate_gram(X: Tensor) -> Tensor:
    """XᵀX to float32 accuracy from two TF32 GEMMs: X = H + L with H the top 11 significant bits of X (exact in
    TF32), XᵀX ≈ HᵀH + HᵀL + (HᵀL)ᵀ (the dropped LᵀL is below 2⁻²² relative)."""
    H = _tf32_part(X)
    cross = _fast_matmul(H.mT, X - H)
    return _fast_matmul(H.mT, H) + (cross + cross.mT)


def _tf32_part(x: Tensor) -> Tensor:
    """x with the 13 low bits of its float32 significand cleared."""
    return (x.view(torch.int32) & -(1 << 13)).view(torch.float32)


def _fast_matmul(a: Tensor, b: Tensor) -> Tensor:
    """a @ b on TF32 tensor cores where the GPU has them (IEEE float32 elsewhere)."""
    with _matmul_precision("high"):
        return a @ b


def _cholesky_qr_pass(X: Tensor, shift: bool = False) -> Tensor:
    """X R⁻¹ with RᵀR = XᵀX (+ s·I when shifted, s from Fukaya et al.'s bound with ‖X‖_F² ≥ ‖X‖₂²)."""
    m, n = X.shape[-2:]
    gram = X.mT @ X
    if shift:
        s = 11 * (m * n + n * (n + 1)) * torch.finfo(X.dtype).eps * gram.diagonal(dim1=-2, dim2=-1).sum(-1)
        gram = gram + s[..., None, None] * torch.eye(n, dtype=X.dtype, device=X.device)
    L = torch.linalg.cholesky_ex(gram).L  # no error check: it would cost a host sync, and these Grams are SPD
    # R⁻¹ of the small n×n factor, then one GEMM: faster on a GPU than a triangular solve against all m rows
    R_inv = torch.linalg.solve_triangular(L.mT, torch.eye(n, dtype=X.dtype, device=X.device), upper=True)
    return X @ R_inv


@contextlib.contextmanager
def _matmul_precision(precision: str):
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


RANK_METHODS = ("svd", "gram")


def effective_rank(X: Tensor, method: str = "svd") -> Tensor:
    """Entropy effective rank exp(H(p)), p = σ/Σσ (Roy & Vetterli 2007) of a batch (..., m, n); 0 for a zero matrix.

    method: "svd" (float32 singular values) or "gram" (square roots of the float64 eigenvalues of the smaller
    Gram matrix: an n×n symmetric eigenproblem instead of an m×n SVD; float64 because float32 would blur every σ
    below ~3e-4·σ_max, which a low-rank matrix has hundreds of). The two agree to 1e-5 (tested); which is faster
    on a GPU is still to be measured (bench/optimizer.py).
    """
    if method == "svd":
        s = torch.linalg.svdvals(X.float())
    elif method == "gram":
        X = X.double()
        gram = X.mT @ X if X.size(-2) >= X.size(-1) else X @ X.mT
        s = torch.linalg.eigvalsh(gram).clamp(min=0).sqrt()
    else:
        raise ValueError(f"unknown effective-rank method {method!r}; choose one of {RANK_METHODS}")
    total = s.sum(-1, keepdim=True)
    p = s / total.clamp(min=torch.finfo(s.dtype).tiny)
    H = -torch.xlogy(p, p).sum(-1)
    return torch.where(total.squeeze(-1) > 0, H.exp(), torch.zeros_like(H)).float()
