"""Orthogonalisers: map a batch of matrices X (..., m, n) to (approximately) their polar factor U Vᵀ.

`newton_schulz` is the field's standard (bf16, quintic iteration, as torch.optim.Muon and KellerJordan/Muon);
`svd` is the exact polar factor in float32 (what the original scripts used, ~100x slower on a GPU).
Newton–Schulz's two symmetric products (X Xᵀ and b·A + c·A·A) come from torch's batched GEMMs (`ns_kernel:
torch`) or from Triton kernels that compute one triangle of each (`triton_symmetric`, symmetric_kernels.py).
"""
import torch
from torch import Tensor

MUON_COEFFICIENTS = (3.4445, -4.7750, 2.0315)

# Polar Express (Amsel et al. 2025, arXiv 2505.16932, Algorithm 1): one optimal quintic per step,
# divided by a 1.01 safety factor (all but the last) so bf16 rounding cannot push singular values past 1.
_PE = [
    (8.28721201814563, -23.595886519098837, 17.300387312530933),
    (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
    (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
    (3.3184196573706015, -2.488488024314874, 0.51004894012372),
    (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
    (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
    (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
]
POLAR_EXPRESS_COEFFICIENTS = [(a / 1.01, b / 1.01**3, c / 1.01**5) for a, b, c in _PE] + [(1.875, -1.25, 0.375)]

ORTHOGONALIZERS = ("newton_schulz", "svd")
NS_KERNELS = ("torch", "triton_symmetric")


def _torch_gram(X: Tensor) -> Tensor:
    return X @ X.mT


def _torch_gram_polynomial(A: Tensor, b: float, c: float) -> Tensor:
    return torch.baddbmm(A, A, A, beta=b, alpha=c)


def symmetric_products(ns_kernel: str):
    """Newton–Schulz's (X ↦ X Xᵀ, (A, b, c) ↦ b·A + c·A·A) for an entry of NS_KERNELS. The Triton module is
    imported only when asked for, so the default path needs nothing but torch."""
    if ns_kernel == "torch":
        return _torch_gram, _torch_gram_polynomial
    if ns_kernel == "triton_symmetric":
        from orthonoise.optim import symmetric_kernels
        return symmetric_kernels.gram, symmetric_kernels.gram_polynomial
    raise ValueError(f"ns_kernel must be one of {NS_KERNELS}, not {ns_kernel!r}")


def coefficient_schedule(ns_coefficients, steps: int) -> list[tuple[float, float, float]]:
    """Per-step (a, b, c): one triple repeated, a per-step list (its last entry repeated), or "polar_express"."""
    if isinstance(ns_coefficients, str):
        if ns_coefficients != "polar_express":
            raise ValueError(f"ns_coefficients must be 3 numbers, a list of triples or 'polar_express', "
                             f"not {ns_coefficients!r}")
        ns_coefficients = POLAR_EXPRESS_COEFFICIENTS
    nested = len(ns_coefficients) > 0 and not isinstance(ns_coefficients[0], (int, float))
    coeffs = [tuple(float(x) for x in c) for c in (ns_coefficients if nested else [ns_coefficients])]
    if not coeffs or any(len(c) != 3 for c in coeffs):
        raise ValueError(f"ns_coefficients must be (a, b, c) triples, got {ns_coefficients!r}")
    return (coeffs + [coeffs[-1]] * steps)[:steps]


def newton_schulz(X: Tensor, coefficients: list[tuple[float, float, float]], eps: float = 1e-7,
                  safety: float = 1.0, ns_kernel: str = "torch") -> Tensor:
    """Quintic Newton–Schulz in bf16 on a batch (..., m, n); one step per (a, b, c) in `coefficients`.

    Same arithmetic as torch.optim.Muon (Frobenius normalisation, the wide orientation so the Gram matrix is
    the small one), batched with baddbmm so all same-shape matrices of a model cost one kernel per product.
    `safety` (1.01 for Polar Express) divides the normalised input so its spectral norm is safely below 1.
    `ns_kernel` picks who computes the symmetric products A and B (`symmetric_products`); B·X is torch's.
    """
    gram, gram_polynomial = symmetric_products(ns_kernel)
    X = X.bfloat16()
    tall = X.size(-2) > X.size(-1)
    if tall:
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) * safety).clamp(min=eps)
    batch = X.shape[:-2]
    X = X.reshape(-1, *X.shape[-2:])
    for a, b, c in coefficients:
        A = gram(X)
        B = gram_polynomial(A, b, c)
        X = torch.baddbmm(X, B, X, beta=a)
    X = X.reshape(*batch, *X.shape[-2:])
    return X.mT if tall else X


def svd_polar(X: Tensor, eps: float = 1e-7) -> Tensor:
    """Exact polar factor U Vᵀ in float32 (CUDA SVD has no bf16); directions with σ ≤ eps·‖X‖_F are dropped,
    so a zero matrix maps to zero like Newton–Schulz does."""
    X = X.float()
    X = X / X.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)
    U, S, Vh = torch.linalg.svd(X, full_matrices=False)
    return (U * (S > eps).unsqueeze(-2)) @ Vh


# The quintic with σ = 1 as a fixed point of zero slope and curvature: σ(15 − 10σ² + 3σ⁴)/8 (the last Polar
# Express step). It takes every σ in (0, sqrt(7/3)) to 1, and a σ within e of 1 to within ~2.5e³.
REORTHOGONALIZE_COEFFICIENTS = (1.875, -1.25, 0.375)


def reorthogonalize(X: Tensor, steps: int, squarings: int = 3, eps: float = 1e-7) -> Tensor:
    """The polar factor of a batch of near-orthogonal matrices (an orthogonalised update plus a small
    perturbation), float32. Newton–Schulz normalises by the Frobenius norm, which would shrink singular values
    near 1 to ~1/sqrt(n) and waste the head start; this divides by an upper bound on the spectral norm instead
    (`spectral_norm_bound`, at most n^(1/2^(squarings+2)) too large: 1.23 for n = 768), so every σ lands in (0, 1],
    then applies `steps` fixed-point quintic steps."""
    X = X.float()
    tall = X.size(-2) > X.size(-1)
    if tall:
        X = X.mT
    X = X / spectral_norm_bound(X @ X.mT, squarings).clamp(min=eps)[..., None, None]
    a, b, c = REORTHOGONALIZE_COEFFICIENTS
    for _ in range(steps):
        A = X @ X.mT
        X = a * X + (b * A + c * (A @ A)) @ X
    return X.mT if tall else X


def spectral_norm_bound(gram: Tensor, squarings: int = 3) -> Tensor:
    """An upper bound on σ_max(X) from X's Gram matrix A = XXᵀ: λ_max(A)^p ≤ ‖A^p‖_F for p = 2^squarings, and
    ‖A^p‖_F ≤ sqrt(n)·λ_max^p, so the bound is at most n^(1/4p) times σ_max. A^p by repeated squaring, renormalised
    each time (log scale) so that neither large nor tiny matrices overflow."""
    tiny = torch.finfo(gram.dtype).tiny
    log_norm = torch.zeros(gram.shape[:-2], dtype=gram.dtype, device=gram.device)
    B = gram
    for _ in range(squarings):
        f = B.norm(dim=(-2, -1)).clamp(min=tiny)
        B = B / f[..., None, None]
        log_norm = 2 * (log_norm + f.log())
        B = B @ B
    log_norm = log_norm + B.norm(dim=(-2, -1)).clamp(min=tiny).log()
    return torch.exp(log_norm / 2 ** (squarings + 1))


def orthogonalize(U: Tensor, steps: list[int], orthogonalizer: str, coefficients, eps: float,
                  ns_kernel: str = "torch") -> Tensor:
    """Muon's orthogonalisation of a stack U (k, m, n): the exact polar factor ("svd", float32), or Newton–Schulz
    (bf16, its symmetric products by `ns_kernel`) with steps[i] steps for matrix i (matrices with equal step counts
    share one batched call)."""
    if orthogonalizer == "svd":
        return svd_polar(U, eps)
    safety = 1.01 if coefficients == "polar_express" else 1.0
    if len(set(steps)) == 1:
        return newton_schulz(U, coefficient_schedule(coefficients, steps[0]), eps, safety, ns_kernel)
    O = torch.empty(U.shape, dtype=torch.bfloat16, device=U.device)
    for n in set(steps):
        rows = [i for i, s in enumerate(steps) if s == n]
        O[rows] = newton_schulz(U[rows], coefficient_schedule(coefficients, n), eps, safety, ns_kernel)
    return O
