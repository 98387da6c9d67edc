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


def perturb_orthogonal(O: Tensor, U: Tensor, N: Tensor, steps: int) -> Tensor:
    """perturb="update": Õ = O + (‖O‖_F/‖U‖_F)·N for a stack, re-orthogonalised (float32). N is the momentum
    reading's ε·N: the factor gives it the same size relative to O as it has relative to U there (Newton–Schulz
    sees U/‖U‖), so alpha means the same noise-to-signal ratio in both readings."""
    O, tiny = O.float(), torch.finfo(torch.float32).tiny
    ratio = O.norm(dim=(-2, -1), keepdim=True) / U.float().norm(dim=(-2, -1), keepdim=True).clamp(min=tiny)
    return reorthogonalize(O + ratio * N, steps)


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
