"""The Muon family's update math as free functions on tensors (stacks of same-shape matrices, or lists for
torch's fused foreach kernels); the optimizer classes only keep state and call these. docs/optimizers.md."""
import math

import torch
from torch import Tensor

from orthonoise.optim.orthogonalize import reorthogonalize

ADJUST_LR_FNS = (None, "original", "match_rms_adamw")


def adjust_lr(lr: float, adjust_lr_fn: str | None, shape) -> float:
    """torch.optim.Muon's shape scaling: Keller Jordan's sqrt(max(1, rows/cols)) or Moonlight's 0.2·sqrt(max)."""
    rows, cols = shape
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    return lr * math.sqrt(max(1.0, rows / cols))


def update_momentum(bufs: list[Tensor], grads: list[Tensor], momentum: float) -> None:
    """B ← lerp(B, g, 1 − μ) in place: the EMA convention, ‖B‖ on the scale of ‖g‖ (one fused kernel)."""
    if bufs:
        torch._foreach_lerp_(bufs, grads, 1 - momentum)


def momentum_direction(grads: list[Tensor], bufs: list[Tensor], momentum: float, nesterov: bool) -> list[Tensor]:
    """U = lerp(g, B, μ) with Nesterov (as torch.optim.Muon and KellerJordan/Muon), else B itself."""
    return torch._foreach_lerp(grads, bufs, momentum) if nesterov else bufs


def apply_update(params: list[Tensor], O, lr: float, weight_decay: float, scale: float) -> None:
    """W ← W·(1 − lr·wd) − scale·O: decoupled weight decay with the unscaled lr, as torch does."""
    torch._foreach_mul_(params, 1 - lr * weight_decay)
    torch._foreach_add_(params, list(O), alpha=-scale)


def add_noise(U: Tensor, keys: list[int], added: dict[int, Tensor]) -> Tensor:
    """U + ε·N, in place on the rows of U (a stack, in `keys` order) whose key has noise in `added`; in U's dtype,
    which is the parameters' (the noise is float32)."""
    rows = [i for i, key in enumerate(keys) if key in added]
    if rows:
        U[rows] = (U[rows] + torch.stack([added[keys[i]] for i in rows])).to(U.dtype)
    return U


def perturb_update(O: Tensor, U: Tensor, N: Tensor, steps: int) -> Tensor:
    """perturb="update" for a stack, float32: O + R(O + r·N) − R(O), R = reorthogonalize (`steps` steps) and
    r = ‖O‖_F/‖U‖_F. N is the momentum reading's ε·N; r gives it the same size relative to O as it has relative to
    U there (Newton–Schulz sees U/‖U‖), so alpha means the same noise-to-signal ratio in both readings.

    Muon's Newton–Schulz leaves O's singular values in ~[0.7, 1.2]; R(O + r·N) alone would take them all to 1
    however small the noise, a ~20% change of the update that is not noise. Taking off R(O) − O keeps Muon's own
    spectrum: α → 0 gives O, and to first order in the noise only O's singular vectors turn. Where O is orthogonal
    (orthogonalizer: svd) R(O) = O, and this is R(O + r·N), the re-orthogonalised noisy update itself."""
    O, tiny = O.float(), torch.finfo(torch.float32).tiny
    ratio = O.norm(dim=(-2, -1), keepdim=True) / U.float().norm(dim=(-2, -1), keepdim=True).clamp(min=tiny)
    perturbed, alone = reorthogonalize(torch.cat([O + ratio * N, O]), steps).chunk(2)
    return O + (perturbed - alone)


# NOLAH's three heuristics (docs/optimizers.md), each off by its toggle.

def gate_gradient(g: Tensor) -> Tensor:
    """g ← tanh(g)·|g|."""
    return torch.tanh(g) * g.abs()


def damp_large_gradients(buf: Tensor, g: Tensor, percentile: float, scale: float) -> None:
    """B ← scale·B, in place, where |g| is above its `percentile`-th percentile."""
    buf.mul_(torch.where(g.abs() > percentile_value(g.abs(), percentile), scale, 1.0))


def sigmoid_projection(U: Tensor) -> Tensor:
    """U ← U·sigmoid(U)."""
    return U * torch.sigmoid(U)


def percentile_value(x: Tensor, percentile: float) -> Tensor:
    """The value below or at which `percentile`% of x lies: the ceil(p·n/100)-th smallest (no torch.quantile,
    which refuses inputs above 2^24 elements). kthvalue is O(n) on a CPU but slow on CUDA tensors (a NOLAH step
    of the 350M shapes: bench/RESULTS.md), which take a radix sort instead."""
    flat = x.flatten()
    k = max(1, math.ceil(percentile / 100 * flat.numel()))
    if flat.is_cuda:
        return flat.sort().values[k - 1]
    return flat.kthvalue(k).values
