"""orthonoise.lm.kernels: the Triton stand-in for causal-conv1d matches torch's depthwise conv, forward and backward.

On the CPU the Triton kernels run under Triton's interpreter (TRITON_INTERPRET=1, in a subprocess since the
flag is read when the kernels are defined). triton comes with the dev extra, so `make test` runs them; skipped
where it is missing.
"""
import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from orthonoise.lm.kernels import conv1d_reference, kernel_path

HAS_TRITON = importlib.util.find_spec("triton") is not None

CHECK = textwrap.dedent("""
    import torch
    from orthonoise.lm import kernels as K
    dev, dt = DEVICE, DTYPE
    shapes = [(2, 70, 37, 4, True, True), (1, 130, 65, 4, False, True), (2, 9, 5, 3, True, False)]
    for (B, D, L, W, bias, silu) in shapes:
        g = torch.Generator().manual_seed(D)
        # x and dout channels-last, as slices of a wider (B, L, *) buffer, like mamba_ssm passes them
        xbuf = torch.randn(B, L, D + 5, generator=g).to(dev, dt)
        x = xbuf[..., 3:3 + D].transpose(1, 2)
        w = torch.randn(D, W, generator=g).to(dev)
        b = torch.randn(D, generator=g).to(dev) if bias else None
        dout = torch.randn(B, L, D, generator=g).to(dev, dt).transpose(1, 2)
        xr, wr = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
        br = b.detach().double().requires_grad_() if bias else None
        ref = K.conv1d_reference(xr, wr, br, silu)
        ref.backward(dout.double())
        out = K.causal_conv1d_fwd_function(x, w, b, None, None, None, silu)
        dxbuf = torch.full((B, L, D + 2), float("nan"), device=dev, dtype=dt)
        dx_given = dxbuf[..., 1:1 + D].transpose(1, 2)
        dx, dw, db, _ = K.causal_conv1d_bwd_function(x, w, b, dout, None, None, None, dx_given, False, silu)
        tol = 1e-4 if dt == torch.float32 else 3e-2
        rel = lambda a, r: ((a.double() - r).norm() / r.norm()).item()
        assert out.shape == (B, D, L) and out.dtype == dt
        assert rel(out, ref.detach()) < tol, rel(out, ref.detach())
        assert dx.data_ptr() == dx_given.data_ptr() and not dxbuf[..., 1:1 + D].isnan().any()
        assert rel(dx, xr.grad) < tol and rel(dw, wr.grad) < tol, (rel(dx, xr.grad), rel(dw, wr.grad))
        if bias:
            assert rel(db, br.grad) < tol
        # the autograd wrapper
        xa, wa = x.detach().requires_grad_(), w.detach().requires_grad_()
        K.causal_conv1d_fn(xa, wa, b, activation="silu" if silu else None).backward(dout)
        assert rel(xa.grad, xr.grad) < tol and rel(wa.grad, wr.grad) < tol
    print("OK")
""")


def test_reference_is_causal_depthwise_conv():
    x, w, b = torch.randn(2, 3, 6), torch.randn(3, 4), torch.randn(3)
    out = conv1d_reference(x, w, b, silu=False)
    manual = torch.zeros_like(x)
    for t in range(6):
        for k in range(4):
            src = t - 3 + k
            if src >= 0:
                manual[..., t] += w[:, k] * x[..., src]
    torch.testing.assert_close(out, manual + b[:, None])


def test_kernel_path_without_mamba_ssm():
    if importlib.util.find_spec("mamba_ssm") is None:
        assert kernel_path() == "torch"
    else:
        assert kernel_path().startswith("mamba_ssm")


@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed (CPU-only torch)")
def test_triton_conv1d_interpreted_on_cpu():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    code = CHECK.replace("DEVICE", "'cpu'").replace("DTYPE", "torch.float32")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", ["torch.float32", "torch.bfloat16"])
def test_triton_conv1d_on_gpu(dtype):
    code = CHECK.replace("DEVICE", "'cuda'").replace("DTYPE", dtype)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]
