"""Noise samplers and the effective rank, as plain batched functions (all return float32).

`orthogonal_noise` draws Q with orthonormal columns (rows, if wide), Haar-distributed: the Q factor, with a
positive-diagonal R, of a Gaussian matrix. Two ways to compute that same Q:
- "qr": Householder QR, then flip Q's columns by sign(diag R) (Mezzadri 2007). Exact, but per-matrix and
  sequential on a GPU.
- "cholesky" (default): Cholesky-QR, Q = G R⁻¹ with R = chol(GᵀG). Two GEMMs, a small Cholesky and a
  triangular inverse per pass, all batched. Its R has a positive diagonal by construction, so it is the same Q
  as sign-corrected QR (and Haar for the same reason). One pass loses orthogonality as cond(G)²·u, so it runs
  twice (CholeskyQR2; the first pass may use TF32, the last is IEEE float32); a Gaussian with rows ≥ 2·cols
  has cond ≲ 6 and that is float32-exact. Near-square
  Gaussians are ill-conditioned (cond ~ n, unbounded tail), so those run in float64 with a shifted first
  pass (shifted CholeskyQR3, Fukaya et al. 2020), which never fails. See docs/optimizers.md for timings.
"""
import contextlib
import math

import torch
from torch import Tensor

SAMPLERS = ("cholesky", "qr")


def orthogonal_noise(shape, *, generator: torch.Generator | None = None, device=None,
                     method: str = "cholesky") -> Tensor:
    """A batch (..., m, n) of Haar-distributed matrices with QᵀQ = I (m ≥ n) or QQᵀ = I (m < n)."""
    G = torch.randn(shape, generator=generator, device=device, dtype=torch.float32)
    return haar_from_gaussian(G, method)


def isotropic_noise(shape, *, generator: torch.Generator | None = None, device=None) -> Tensor:
    """Gaussian direction scaled to ‖N‖_F = sqrt(min(m, n)) = ‖Q‖_F, the norm an orthogonal Q has."""
    G = torch.randn(shape, generator=generator, device=device, dtype=torch.float32)
    return rescale_isotropic(G)


def rescale_isotropic(G: Tensor) -> Tensor:
    return G * (math.sqrt(min(G.shape[-2:])) / G.norm(dim=(-2, -1), keepdim=True))


def haar_from_gaussian(G: Tensor, method: str = "cholesky") -> Tensor:
    """The positive-diagonal QR factor Q of a batch of Gaussian matrices (float32)."""
    wide = G.size(-2) < G.size(-1)
    X = G.mT if wide else G
    if method == "qr":
        Q, R = torch.linalg.qr(X.float())
        Q = Q * torch.sgn(R.diagonal(dim1=-2, dim2=-1)).unsqueeze(-2)
    elif method == "cholesky":
        m, n = X.shape[-2:]
        well_conditioned = m >= 2 * n
        if well_conditioned:
            # A sloppy first pass (TF32 GEMMs where the GPU allows them) still leaves the exact QR factor: any
            # upper-triangular R₁ with a positive diagonal gives G = Q·(R₂R₁), the unique such factorisation.
            X = _cholesky_qr_pass(X.float())
        else:
            X = X.double()
        with _ieee_fp32_matmul():  # a TF32 last pass would leave QᵀQ - I at ~1e-3
            if not well_conditioned:
                X = _cholesky_qr_pass(_cholesky_qr_pass(X, shift=True))
            X = _cholesky_qr_pass(X)
        Q = X.float()
    else:
        raise ValueError(f"unknown noise sampler {method!r}; choose one of {SAMPLERS}")
    return Q.mT if wide else Q


def _cholesky_qr_pass(X: Tensor, shift: bool = False) -> Tensor:
    """X R⁻¹ with RᵀR = XᵀX (+ s·I when shifted, s from Fukaya et al.'s bound with ‖X‖_F² ≥ ‖X‖₂²)."""
    m, n = X.shape[-2:]
    gram = X.mT @ X
    if shift:
        s = 11 * (m * n + n * (n + 1)) * torch.finfo(X.dtype).eps * gram.diagonal(dim1=-2, dim2=-1).sum(-1)
        gram = gram + s[..., None, None] * torch.eye(n, dtype=X.dtype, device=X.device)
    L = torch.linalg.cholesky(gram)
    # R⁻¹ of the small n×n factor, then one GEMM: faster on a GPU than a triangular solve against all m rows
    R_inv = torch.linalg.solve_triangular(L.mT, torch.eye(n, dtype=X.dtype, device=X.device), upper=True)
    return X @ R_inv


@contextlib.contextmanager
def _ieee_fp32_matmul():
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def effective_rank(X: Tensor) -> Tensor:
    """Entropy effective rank exp(H(p)), p = σ/Σσ (Roy & Vetterli 2007) of a batch (..., m, n); 0 for a zero matrix."""
    s = torch.linalg.svdvals(X.float())
    total = s.sum(-1, keepdim=True)
    p = s / total.clamp(min=torch.finfo(s.dtype).tiny)
    H = -torch.xlogy(p, p).sum(-1)
    return torch.where(total.squeeze(-1) > 0, H.exp(), torch.zeros_like(H))
