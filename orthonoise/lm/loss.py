"""Next-token cross-entropy without the full-vocabulary logits tensor.

Granite's vocabulary has 100,352 entries: at batch 8×512 the logits alone are 0.8 GB in bf16, 1.6 GB as the
fp32 copy F.cross_entropy wants, and the same again for their gradient. `linear_cross_entropy` fuses the
lm_head matmul with the loss and computes the gradient in the forward pass, `chunk_rows` tokens at a time
(the same idea as liger-kernel's fused linear cross-entropy, in plain torch): the largest temporary is one
chunk of fp32 logits. The matmuls run in the autocast dtype (bf16 on the GPU), the softmax in fp32.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from orthonoise.distributed import unwrap

DEFAULT_CHUNK_ROWS = 1024  # 1024 × 100,352 fp32 logits = 0.4 GB per chunk


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, targets: Tensor, scale: float, chunk_rows: int,
                ignore_index: int, compute_dtype: torch.dtype, need_grad: bool):
        with torch.autocast(hidden.device.type, enabled=False):
            n = hidden.shape[0]
            valid = targets != ignore_index
            n_valid = valid.sum().clamp(min=1)
            w = weight.to(compute_dtype)
            acc = torch.promote_types(compute_dtype, torch.float32)  # softmax and sums: fp32 (fp64 stays fp64)
            grad_hidden = torch.empty_like(hidden) if need_grad else None
            grad_weight = torch.zeros(weight.shape, dtype=acc, device=weight.device) \
                if need_grad and weight.requires_grad else None
            total = torch.zeros((), dtype=acc, device=hidden.device)
            for lo in range(0, n, chunk_rows):
                hi = min(n, lo + chunk_rows)
                h = hidden[lo:hi].to(compute_dtype)
                t, v = targets[lo:hi], valid[lo:hi]
                logits = (h @ w.t()).to(acc)
                if scale != 1.0:
                    logits = logits * (1.0 / scale)
                lse = torch.logsumexp(logits, dim=-1)
                safe_t = torch.where(v, t, torch.zeros_like(t))
                target_logit = logits.gather(1, safe_t[:, None]).squeeze(1)
                total += torch.where(v, lse - target_logit, torch.zeros_like(lse)).sum()
                if not need_grad:  # evaluation: the loss alone
                    continue
                # d(mean loss)/d(raw logits) = (softmax − onehot) / n_valid / scale, zero on ignored rows
                grad = logits.sub_(lse[:, None]).exp_()
                grad.scatter_add_(1, safe_t[:, None], torch.full_like(lse[:, None], -1.0))
                grad.mul_((v.to(acc) / (n_valid * scale))[:, None])
                grad = grad.to(compute_dtype)
                grad_hidden[lo:hi] = (grad @ w).to(hidden.dtype)
                if grad_weight is not None:
                    grad_weight.add_((grad.t() @ h).to(acc))
            loss = total / n_valid
        ctx.save_for_backward(grad_hidden if grad_hidden is not None else torch.empty(0),
                              grad_weight if grad_weight is not None else torch.empty(0))
        ctx.weight_dtype, ctx.has_weight_grad = weight.dtype, grad_weight is not None
        return loss

    @staticmethod
    def backward(ctx, grad_loss: Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        gh = grad_hidden * grad_loss.to(grad_hidden.dtype)
        gw = (grad_weight * grad_loss).to(ctx.weight_dtype) if ctx.has_weight_grad else None
        return gh, gw, None, None, None, None, None, None


def linear_cross_entropy(hidden: Tensor, weight: Tensor, targets: Tensor, *, scale: float = 1.0,
                         chunk_rows: int = DEFAULT_CHUNK_ROWS, ignore_index: int = -100) -> Tensor:
    """Mean of F.cross_entropy((hidden @ weight.T) / scale, targets) over non-ignored rows, chunked.

    hidden [N, H], weight [V, H], targets [N]. Under autocast the matmuls run in the autocast dtype.
    """
    if torch.is_autocast_enabled(hidden.device.type):
        compute_dtype = torch.get_autocast_dtype(hidden.device.type)
    else:
        compute_dtype = torch.promote_types(hidden.dtype, weight.dtype)
    need_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    return _LinearCrossEntropy.apply(hidden, weight, targets, float(scale), int(chunk_rows), int(ignore_index),
                                     compute_dtype, need_grad)


class _HiddenPassthrough(nn.Module):
    """Stands in for lm_head during one forward, so the model returns (scaled) hidden states as `.logits`."""

    def forward(self, x: Tensor) -> Tensor:
        return x


@contextlib.contextmanager
def _lm_head_bypassed(inner: nn.Module):
    head = inner.lm_head
    inner.lm_head = _HiddenPassthrough()
    try:
        yield head
    finally:
        inner.lm_head = head


def supports_fused_loss(model: nn.Module) -> bool:
    """The bypass needs a plain Linear lm_head without bias whose output is only divided by logits_scaling."""
    inner = unwrap(model)
    head = getattr(inner, "lm_head", None)
    return (type(inner).__name__ == "GraniteMoeHybridForCausalLM" and isinstance(head, nn.Linear)
            and head.bias is None)


def causal_lm_loss(model: nn.Module, windows: Tensor, fused: bool = True,
                   chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Tensor:
    """Mean next-token cross-entropy of windows [B, T+1].

    fused=True (Granite models): the model's forward runs with lm_head bypassed — through the DDP wrapper when
    there is one, so gradient synchronisation is unchanged — and `linear_cross_entropy` applies the head.
    Granite divides the logits by logits_scaling; dividing the hidden states instead is the same product.
    """
    inputs, targets = windows[:, :-1], windows[:, 1:].flatten()
    # use_cache=False: with a cache (the config's default) transformers skips mamba_ssm's fused training kernel
    # for the unfused conv + scan path and also builds KV / SSM state caches nobody reads.
    if not (fused and supports_fused_loss(model)):
        logits = model(input_ids=inputs, use_cache=False).logits
        return F.cross_entropy(logits.float().flatten(0, 1), targets)
    inner = unwrap(model)
    with _lm_head_bypassed(inner) as head:
        hidden = model(input_ids=inputs, use_cache=False).logits  # = last hidden state / logits_scaling
    return linear_cross_entropy(hidden.flatten(0, 1), head.weight, targets, chunk_rows=chunk_rows)
