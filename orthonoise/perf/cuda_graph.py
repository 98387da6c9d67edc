"""Forward + backward captured once in a CUDA graph and replayed every step (`hardware.cuda_graph`)."""
from __future__ import annotations

import torch


class CudaGraphStep:
    """Forward + backward of one fixed-shape micro-batch, captured once in a CUDA graph and replayed.

    The Granite step is launch-bound at 8×512 (hundreds of small Triton/ATen kernels per Mamba2 layer); a replay
    issues them all at once. The graph zeroes the gradients and writes fresh ones into static .grad tensors, which
    `__call__` re-attaches (so optimizer.zero_grad(set_to_none=True) outside stays harmless). Limits: CUDA only,
    one micro-batch per step (grad_accum 1), no DDP, fixed input shape, and nothing inside forward/backward may
    synchronise with the host. Autocast runs with cache_enabled=False, as capture requires.
    """

    def __init__(self, model: torch.nn.Module, loss_fn, example: torch.Tensor, dtype: torch.dtype | None,
                 warmup: int = 3):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.static_in = example.clone()
        self.dtype = dtype

        def fwd_bwd():
            with torch.autocast("cuda", dtype=dtype or torch.bfloat16, enabled=dtype is not None, cache_enabled=False):
                loss = loss_fn(model, self.static_in)
            loss.backward()
            return loss

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the capture stream: autotuning, lazy inits, allocator
            for _ in range(warmup):
                for p in self.params:
                    p.grad = None
                fwd_bwd()
        torch.cuda.current_stream().wait_stream(side)
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        self.grads = [p.grad for p in self.params]
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            torch._foreach_zero_(self.grads)
            self.static_loss = fwd_bwd().detach()

    def __call__(self, windows: torch.Tensor) -> torch.Tensor:
        """Runs forward+backward on `windows` (same shape as the example); returns the loss (a static tensor:
        read or clone it before the next call)."""
        self.static_in.copy_(windows, non_blocking=True)
        self.graph.replay()
        for p, g in zip(self.params, self.grads):
            p.grad = g
        return self.static_loss


def try_cuda_graph(model, loss_fn, example: torch.Tensor, bf16: bool, grad_accum: int, world_size: int, log):
    """A CudaGraphStep for the trainer, or False (with a warning) where it cannot be used or capture fails."""
    if example.device.type != "cuda" or grad_accum != 1 or world_size != 1:
        log.warning("hardware.cuda_graph needs one CUDA process and grad_accum=1: forward+backward runs eagerly")
        return False
    try:
        graph = CudaGraphStep(model, loss_fn, example, torch.bfloat16 if bf16 else None)
    except Exception as err:  # a host sync or an op capture refuses: stay eager
        log.warning("CUDA graph capture failed (%s: %s): forward+backward runs eagerly", type(err).__name__, err)
        return False
    log.info("forward+backward captured in a CUDA graph (replayed every step)")
    return graph
