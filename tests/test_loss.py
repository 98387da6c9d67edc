"""orthonoise.lm.loss: the chunked fused cross-entropy equals F.cross_entropy (loss and gradients) on the CPU."""
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from orthonoise.lm.loss import causal_lm_loss, linear_cross_entropy, supports_fused_loss


def reference(hidden, weight, targets, scale=1.0, ignore_index=-100):
    return F.cross_entropy((hidden @ weight.t()) / scale, targets, ignore_index=ignore_index)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("chunk_rows", [1, 7, 1000])
@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_equals_cross_entropy(dtype, tol, chunk_rows, scale):
    g = torch.Generator().manual_seed(chunk_rows)
    n, h, v = 37, 16, 203
    hidden = torch.randn(n, h, generator=g, dtype=dtype, requires_grad=True)
    weight = torch.randn(v, h, generator=g, dtype=dtype, requires_grad=True)
    targets = torch.randint(0, v, (n,), generator=g)
    ours = linear_cross_entropy(hidden, weight, targets, scale=scale, chunk_rows=chunk_rows)
    gh, gw = torch.autograd.grad(ours * 2.5, (hidden, weight))
    ref = reference(hidden, weight, targets, scale)
    rh, rw = torch.autograd.grad(ref * 2.5, (hidden, weight))
    assert ours.dtype == dtype
    torch.testing.assert_close(ours.double(), ref.double(), rtol=tol, atol=tol)
    torch.testing.assert_close(gh, rh, rtol=tol, atol=tol)
    torch.testing.assert_close(gw, rw, rtol=tol, atol=tol)


def test_ignore_index():
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(20, 8, generator=g, requires_grad=True)
    weight = torch.randn(50, 8, generator=g, requires_grad=True)
    targets = torch.randint(0, 50, (20,), generator=g)
    targets[::3] = -100
    ours = linear_cross_entropy(hidden, weight, targets, chunk_rows=6)
    ref = reference(hidden, weight, targets)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(torch.autograd.grad(ours, hidden)[0], torch.autograd.grad(ref, hidden)[0])


def test_bf16_autocast_close_to_fp32():
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(64, 32, generator=g, requires_grad=True)
    weight = torch.randn(300, 32, generator=g, requires_grad=True) / 4
    targets = torch.randint(0, 300, (64,), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = linear_cross_entropy(hidden, weight, targets, chunk_rows=16)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, reference(hidden, weight, targets), rtol=2e-2, atol=2e-2)


def tiny_granite():
    from orthonoise.lm.model import build_model
    cfg = OmegaConf.load("conf/model/tiny.yaml")
    cfg.config.num_hidden_layers, cfg.config.attention_layers = 2, [1]
    torch.manual_seed(0)
    return build_model(cfg, vocab_size=97)


def test_causal_lm_loss_fused_equals_full_logits():
    model = tiny_granite()
    model.config.logits_scaling = 3.0
    assert supports_fused_loss(model)
    windows = torch.randint(0, 97, (2, 17))
    full = causal_lm_loss(model, windows, fused=False)
    full_grads = torch.autograd.grad(full, list(model.parameters()))
    fused = causal_lm_loss(model, windows, fused=True, chunk_rows=5)
    fused_grads = torch.autograd.grad(fused, list(model.parameters()))
    torch.testing.assert_close(fused, full, rtol=1e-5, atol=1e-5)
    for a, b in zip(fused_grads, full_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert type(model.lm_head).__name__ == "Linear"  # restored after the bypass


def test_no_grad_gives_the_loss_alone():
    g = torch.Generator().manual_seed(2)
    hidden, weight = torch.randn(10, 8, generator=g), torch.randn(40, 8, generator=g)
    targets = torch.randint(0, 40, (10,), generator=g)
    with torch.no_grad():
        ours = linear_cross_entropy(hidden.requires_grad_(), weight, targets, chunk_rows=3)
    assert not ours.requires_grad
    torch.testing.assert_close(ours, reference(hidden, weight, targets))
