"""The fast Mamba2 path, and a Triton stand-in for the causal-conv1d CUDA extension.

transformers takes mamba_ssm's fused training kernel (`mamba_split_conv1d_scan_combined`, Triton) when
`mamba_ssm` imports. That kernel calls causal-conv1d's CUDA functions for the depthwise convolution and
fails without them; causal-conv1d ships no wheel for every torch/CUDA pair (a machine may have no matching one, and
building it needs nvcc and minutes). `install()` then hands mamba_ssm the two Triton kernels below, which do
the same depthwise causal convolution (width ≤ 4, optional SiLU) forward and backward.

`kernel_path()` says which path a model will take: "mamba_ssm+causal_conv1d", "mamba_ssm+triton_conv1d",
or "torch" (transformers' pure-torch scan: slow, memory-hungry).
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor

log = logging.getLogger(__name__)

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs
    triton = None


def kernel_path() -> str:
    """Which Mamba2 implementation training will use (after `install()`)."""
    try:
        import mamba_ssm  # noqa: F401  (transformers imports the package root; if that fails it takes torch)
        import mamba_ssm.ops.triton.ssd_combined as ssd
    except Exception:  # ImportError, or a broken build of its extensions
        return "torch"
    if ssd.causal_conv1d_fwd_function is None:
        return "mamba_ssm+no_conv1d"  # install() not called yet: the fused kernel would fail
    if getattr(ssd.causal_conv1d_fwd_function, "__module__", "") == __name__:
        return "mamba_ssm+triton_conv1d"
    return "mamba_ssm+causal_conv1d"


def install() -> str:
    """Give mamba_ssm our Triton conv where causal_conv1d is missing; returns kernel_path()."""
    try:
        import mamba_ssm  # noqa: F401
        import mamba_ssm.ops.triton.ssd_combined as ssd
    except Exception:
        return "torch"
    if ssd.causal_conv1d_fwd_function is None:
        if triton is None:
            raise RuntimeError("mamba_ssm is installed without causal_conv1d, and triton is missing: "
                               "pip install causal-conv1d, or uninstall mamba-ssm")
        ssd.causal_conv1d_fwd_function = causal_conv1d_fwd_function
        ssd.causal_conv1d_bwd_function = causal_conv1d_bwd_function
        ssd.causal_conv1d_fn = causal_conv1d_fn
        log.info("causal_conv1d is not installed: mamba_ssm's fused Mamba2 kernel uses orthonoise's Triton conv1d")
    return kernel_path()


# ---------------------------------------------------------------- reference (torch) ---------------------------

def conv1d_reference(x: Tensor, weight: Tensor, bias: Tensor | None, silu: bool) -> Tensor:
    """out[b, d, t] = act(bias[d] + Σ_k weight[d, k] · x[b, d, t − (W−1) + k]); x (B, D, L), weight (D, W)."""
    W = weight.shape[1]
    out = F.conv1d(x.to(weight.dtype), weight[:, None, :], bias, padding=W - 1, groups=x.shape[1])[..., :x.shape[2]]
    return (F.silu(out) if silu else out).to(x.dtype)


# ---------------------------------------------------------------- Triton kernels -------------------------------

if triton is not None:
    @triton.jit
    def _tile(L, D, BL: tl.constexpr, BD: tl.constexpr):
        """This program's (batch, time rows t, channels d) and their in-range masks; grid = _grid(B, L, D)."""
        pid, pid_d = tl.program_id(0), tl.program_id(1)
        n_lb = tl.cdiv(L, BL)
        b, lb = pid // n_lb, pid % n_lb
        t = lb * BL + tl.arange(0, BL)
        d = pid_d * BD + tl.arange(0, BD)
        return pid, b, t, d, t < L, d < D

    @triton.jit
    def _causal_conv(x_ptr, w_ptr, b_ptr, b, t, d, mt, md, sxb, sxd, sxl, swd, swk,
                     W: tl.constexpr, HAS_BIAS: tl.constexpr, BL: tl.constexpr, BD: tl.constexpr):
        """bias[d] + Σ_k weight[d, k] · x[b, d, t − (W−1) + k] on a (BL, BD) tile, in fp32 (before the SiLU)."""
        acc = tl.zeros((BL, BD), dtype=tl.float32)
        for k in tl.static_range(W):
            src = t - (W - 1) + k
            m = ((src >= 0) & mt)[:, None] & md[None, :]
            xv = tl.load(x_ptr + b * sxb + src[:, None] * sxl + d[None, :] * sxd, mask=m, other=0.0).to(tl.float32)
            wk = tl.load(w_ptr + d * swd + k * swk, mask=md, other=0.0).to(tl.float32)
            acc += xv * wk[None, :]
        if HAS_BIAS:
            acc += tl.load(b_ptr + d, mask=md, other=0.0).to(tl.float32)[None, :]
        return acc

    @triton.jit
    def _fwd_kernel(x_ptr, w_ptr, b_ptr, out_ptr, L, D, sxb, sxd, sxl, sob, sod, sol, swd, swk,
                    W: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, BL: tl.constexpr, BD: tl.constexpr):
        _, b, t, d, mt, md = _tile(L, D, BL, BD)
        acc = _causal_conv(x_ptr, w_ptr, b_ptr, b, t, d, mt, md, sxb, sxd, sxl, swd, swk, W, HAS_BIAS, BL, BD)
        if SILU:
            acc = acc * tl.sigmoid(acc)
        tl.store(out_ptr + b * sob + t[:, None] * sol + d[None, :] * sod, acc.to(out_ptr.dtype.element_ty),
                 mask=mt[:, None] & md[None, :])

    @triton.jit
    def _bwd_grad_kernel(x_ptr, w_ptr, b_ptr, dout_ptr, g_ptr, dw_ptr, db_ptr, L, D,
                         sxb, sxd, sxl, sdb, sdd, sdl, swd, swk,
                         W: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, BL: tl.constexpr,
                         BD: tl.constexpr):
        """g = dout · act'(pre) into g (B, L, D) fp32; per-program partial sums of dweight and dbias."""
        pid, b, t, d, mt, md = _tile(L, D, BL, BD)
        m_out = mt[:, None] & md[None, :]
        dout = tl.load(dout_ptr + b * sdb + t[:, None] * sdl + d[None, :] * sdd, mask=m_out, other=0.0).to(tl.float32)
        if SILU:  # recompute the pre-activation rather than store it in the forward
            pre = _causal_conv(x_ptr, w_ptr, b_ptr, b, t, d, mt, md, sxb, sxd, sxl, swd, swk, W, HAS_BIAS, BL, BD)
            s = tl.sigmoid(pre)
            g = dout * (s + pre * s * (1.0 - s))
        else:
            g = dout
        g = tl.where(m_out, g, 0.0)
        tl.store(g_ptr + (b * L + t[:, None]) * D + d[None, :], g, mask=m_out)
        row = (pid * W) * D
        for k in tl.static_range(W):
            src = t - (W - 1) + k
            m = ((src >= 0) & mt)[:, None] & md[None, :]
            xv = tl.load(x_ptr + b * sxb + src[:, None] * sxl + d[None, :] * sxd, mask=m, other=0.0).to(tl.float32)
            tl.store(dw_ptr + row + k * D + d, tl.sum(g * xv, axis=0), mask=md)
        if HAS_BIAS:
            tl.store(db_ptr + pid * D + d, tl.sum(g, axis=0), mask=md)

    @triton.jit
    def _bwd_dx_kernel(g_ptr, w_ptr, dx_ptr, L, D, sxb, sxd, sxl, swd, swk,
                       W: tl.constexpr, BL: tl.constexpr, BD: tl.constexpr):
        """dx[b, d, t] = Σ_k weight[d, k] · g[b, t + (W−1) − k, d]."""
        _, b, t, d, mt, md = _tile(L, D, BL, BD)
        acc = tl.zeros((BL, BD), dtype=tl.float32)
        for k in tl.static_range(W):
            src = t + (W - 1) - k
            m = ((src < L) & mt)[:, None] & md[None, :]
            gv = tl.load(g_ptr + (b * L + src[:, None]) * D + d[None, :], mask=m, other=0.0)
            wk = tl.load(w_ptr + d * swd + k * swk, mask=md, other=0.0).to(tl.float32)
            acc += gv * wk[None, :]
        tl.store(dx_ptr + b * sxb + t[:, None] * sxl + d[None, :] * sxd, acc.to(dx_ptr.dtype.element_ty),
                 mask=mt[:, None] & md[None, :])


_BL, _BD = 64, 128


def _grid(B, L, D):
    return (B * triton.cdiv(L, _BL), triton.cdiv(D, _BD))


def _check(x: Tensor, weight: Tensor, seq_idx, initial_states) -> None:
    if seq_idx is not None or initial_states is not None:
        raise NotImplementedError("orthonoise's Triton conv1d has no seq_idx / initial_states (install causal-conv1d)")
    if weight.shape[1] > 4 or weight.shape[0] != x.shape[1]:
        raise ValueError(f"conv1d weight {tuple(weight.shape)} does not fit x {tuple(x.shape)} (width ≤ 4)")


def causal_conv1d_fwd_function(x: Tensor, weight: Tensor, bias: Tensor | None, seq_idx=None, initial_states=None,
                               final_states_out=None, silu_activation: bool = False) -> Tensor:
    """causal_conv1d.cpp_functions.causal_conv1d_fwd_function: x (B, D, L) → out (B, D, L), in x's dtype.
    The output is channels-last in memory (a (B, L, D) tensor transposed), like x from mamba_ssm."""
    _check(x, weight, seq_idx, initial_states)
    if final_states_out is not None:
        raise NotImplementedError("final_states_out needs causal-conv1d")
    B, D, L = x.shape
    out = torch.empty((B, L, D), dtype=x.dtype, device=x.device).transpose(1, 2)
    _fwd_kernel[_grid(B, L, D)](
        x, weight, bias if bias is not None else weight, out, L, D, *x.stride(), *out.stride(), *weight.stride(),
        W=weight.shape[1], HAS_BIAS=bias is not None, SILU=bool(silu_activation), BL=_BL, BD=_BD)
    return out


def causal_conv1d_bwd_function(x: Tensor, weight: Tensor, bias: Tensor | None, dout: Tensor, seq_idx=None,
                               initial_states=None, dfinal_states=None, dx: Tensor | None = None,
                               return_dinitial_states: bool = False, silu_activation: bool = False):
    """causal_conv1d.cpp_functions.causal_conv1d_bwd_function: (dx, dweight, dbias, dinitial_states).
    Writes dx into the given `dx` (mamba_ssm passes a view into its gradient buffer)."""
    _check(x, weight, seq_idx, initial_states)
    if dfinal_states is not None or return_dinitial_states:
        raise NotImplementedError("final/initial states need causal-conv1d")
    B, D, L = x.shape
    W = weight.shape[1]
    if dx is None:
        dx = torch.empty((B, L, D), dtype=x.dtype, device=x.device).transpose(1, 2)
    grid = _grid(B, L, D)
    g = torch.empty((B, L, D), dtype=torch.float32, device=x.device)
    dw_part = torch.empty((grid[0], W, D), dtype=torch.float32, device=x.device)
    db_part = torch.empty((grid[0], D), dtype=torch.float32, device=x.device) if bias is not None else dw_part
    _bwd_grad_kernel[grid](
        x, weight, bias if bias is not None else weight, dout, g, dw_part, db_part, L, D,
        *x.stride(), *dout.stride(), *weight.stride(),
        W=W, HAS_BIAS=bias is not None, SILU=bool(silu_activation), BL=_BL, BD=_BD)
    _bwd_dx_kernel[grid](g, weight, dx, L, D, *dx.stride(), *weight.stride(), W=W, BL=_BL, BD=_BD)
    dweight = dw_part.sum(0).t().to(weight.dtype)
    dbias = db_part.sum(0).to(bias.dtype) if bias is not None else None
    return dx, dweight, dbias, None


class _CausalConv1dFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, silu):
        ctx.save_for_backward(x, weight, bias)
        ctx.silu = silu
        return causal_conv1d_fwd_function(x, weight, bias, None, None, None, silu)

    @staticmethod
    def backward(ctx, dout):
        x, weight, bias = ctx.saved_tensors
        dx, dw, db, _ = causal_conv1d_bwd_function(x, weight, bias, dout, silu_activation=ctx.silu)
        return dx, dw, db, None


def causal_conv1d_fn(x: Tensor, weight: Tensor, bias: Tensor | None = None, seq_idx=None, initial_states=None,
                     return_final_states: bool = False, final_states_out=None, activation: str | None = None):
    """causal_conv1d.causal_conv1d_fn (autograd) on the Triton kernels; only the arguments mamba_ssm's reference
    paths use."""
    if seq_idx is not None or initial_states is not None or return_final_states or final_states_out is not None:
        raise NotImplementedError("seq_idx / states need causal-conv1d")
    return _CausalConv1dFn.apply(x, weight, bias, activation in ("silu", "swish"))
