"""Muon: the state and bookkeeping around the update functions of `update.py`, with hooks for the variants.

Per step, for every 2-D parameter (same arithmetic as torch.optim.Muon):
    g  ← grad                                  hook _gradient                (NOLAH: gate)
    B  ← lerp(B, g, 1 − μ)                     then hook _after_momentum     (NOLAH: damping)
    per shape:                                 hook _plan_shape, then _after_shape_momentum (noise into B)
    U  ← lerp(g, B, μ) if nesterov else B      then hook _before_orthogonalize (NOLAH: projection; noise into U)
    O  ← orthogonalise(U)                      hook _ns_steps, then _after_orthogonalize (noise into O)
    W  ← W·(1 − lr·wd) − lr·adjust(shape)·O
The EMA convention keeps ‖B‖ on the scale of ‖g‖ (the classical μB + g is up to 1/(1 − μ) = 20× larger).
Same-shape matrices are stacked and orthogonalised in one batched call; under torch.distributed each rank
orthogonalises its share of every shape's stack and all-gathers the rest, so all ranks apply identical updates.
"""
import importlib.util
from collections import defaultdict

import torch
import torch.distributed as dist
from torch import Tensor
from torch.optim import Optimizer

from orthonoise.errors import ArgumentError, ConfigError
from orthonoise.optim.noise import RANK_METHODS, effective_rank
from orthonoise.optim.orthogonalize import (
    MUON_COEFFICIENTS,
    NS_KERNELS,
    ORTHOGONALIZERS,
    coefficient_schedule,
    orthogonalize,
)
from orthonoise.optim.protocol import TrainerHooks
from orthonoise.optim.update import (
    ADJUST_LR_FNS,
    adjust_lr,
    apply_update,
    momentum_direction,
    update_momentum,
)


def rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def by_shape(entries) -> dict[tuple, list]:
    """(item, parameter) pairs — a key or a state tensor — grouped by the parameter's shape, in order."""
    buckets = defaultdict(list)
    for item, p in entries:
        buckets[tuple(p.shape)].append((item, p))
    return buckets


def share(members: list, rank: int, world: int) -> tuple[int, list]:
    """How many of a shape's matrices each rank orthogonalises, and which are this rank's."""
    size = -(-len(members) // world)
    return size, members[rank * size:(rank + 1) * size]


def check(ok: bool, name: str, value, requirement: str) -> None:
    """Constructor checks raise ArgumentError, which the config check maps to the argument's config key."""
    if not ok:
        raise ArgumentError(name, value, requirement)


def _check_ns_kernel(ns_kernel: str, orthogonalizer: str) -> None:
    """A known kernel, one Newton–Schulz runs (svd has no symmetric products), and triton where it is asked for."""
    check(ns_kernel in NS_KERNELS, "ns_kernel", ns_kernel, f"one of {NS_KERNELS}")
    check(ns_kernel == "torch" or orthogonalizer == "newton_schulz", "ns_kernel", ns_kernel,
          f"torch with orthogonalizer={orthogonalizer} (the kernels are Newton–Schulz's)")
    check(ns_kernel != "triton_symmetric" or importlib.util.find_spec("triton") is not None, "ns_kernel", ns_kernel,
          "torch where triton is not installed (pip install triton)")


def _plain(coefficients):
    """Hydra hands lists as ListConfig; keep plain tuples in param groups (state_dict, comparisons)."""
    if isinstance(coefficients, str):
        return coefficients
    return tuple(_plain(c) if not isinstance(c, (int, float)) else float(c) for c in coefficients)


class Muon(Optimizer, TrainerHooks):
    """Muon for 2-D hidden matrices; arguments shared with torch.optim.Muon mean the same thing.

    ns_coefficients: one (a, b, c) for every step, a list of per-step triples, or "polar_express".
    orthogonalizer: "newton_schulz" (bf16, batched) or "svd" (exact polar factor, float32).
    ns_kernel: who computes Newton–Schulz's symmetric products: "torch" (batched GEMMs, torch.optim.Muon's
    arithmetic) or "triton_symmetric" (one triangle each, CUDA; equal to torch's to bf16 rounding).
    rank_method: how the effective rank (the eval metric, and rank_threshold's gate) gets singular values:
    "svd" (float32) or "gram" (float64 eigenvalues of the smaller Gram matrix); they agree to 1e-5.
    """

    def __init__(self, params, lr: float = 1e-3, weight_decay: float = 0.1, momentum: float = 0.95,
                 nesterov: bool = True, ns_coefficients=MUON_COEFFICIENTS, eps: float = 1e-7, ns_steps: int = 5,
                 adjust_lr_fn: str | None = None, orthogonalizer: str = "newton_schulz", ns_kernel: str = "torch",
                 rank_method: str = "svd"):
        check(lr >= 0, "lr", lr, "≥ 0")
        check(weight_decay >= 0, "weight_decay", weight_decay, "≥ 0")
        check(0 <= momentum < 1, "momentum", momentum, "in [0, 1)")
        check(isinstance(ns_steps, int) and ns_steps >= 1, "ns_steps", ns_steps, "an integer ≥ 1")
        check(adjust_lr_fn in ADJUST_LR_FNS, "adjust_lr_fn", adjust_lr_fn, f"one of {ADJUST_LR_FNS}")
        check(orthogonalizer in ORTHOGONALIZERS, "orthogonalizer", orthogonalizer, f"one of {ORTHOGONALIZERS}")
        _check_ns_kernel(ns_kernel, orthogonalizer)
        check(rank_method in RANK_METHODS, "rank_method", rank_method, f"one of {RANK_METHODS}")
        ns_coefficients = _plain(ns_coefficients)
        try:
            coefficient_schedule(ns_coefficients, ns_steps)
        except ValueError:
            raise ArgumentError("ns_coefficients", ns_coefficients,
                                "3 numbers, a list of (a, b, c) triples or 'polar_express'") from None
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                        ns_coefficients=ns_coefficients, eps=eps, ns_steps=ns_steps, adjust_lr_fn=adjust_lr_fn,
                        orthogonalizer=orthogonalizer, ns_kernel=ns_kernel, rank_method=rank_method)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ConfigError(f"{type(self).__name__} takes only 2-D matrices, got a tensor of shape "
                                      f"{tuple(p.shape)} (route it to AdamW)")

    def _set_defaults(self, **extra) -> None:
        """Subclass settings: into `defaults` and every group (a group's own value wins)."""
        self.defaults.update(extra)
        for group in self.param_groups:
            for k, v in self.defaults.items():
                group.setdefault(k, v)

    def load_state_dict(self, state_dict) -> None:
        """The saved settings win; a setting the saving code did not have yet takes its default."""
        super().load_state_dict(state_dict)
        self._set_defaults()

    # Hooks for the variants; the base class is plain Muon. `keys` are parameter positions in the optimizer
    # (stable across steps, ranks and resumes); U and O are stacks of one shape's matrices, in `keys` order.
    def _begin_group(self, group) -> None:
        pass

    def _gradient(self, group, g: Tensor) -> Tensor:
        return g

    def _after_momentum(self, group, g: Tensor, buf: Tensor) -> None:
        pass

    def _plan_shape(self, group, shape, members: list, own: list):
        """Per shape, after the momentum update: what this shape's later hooks need (the `plan` they take; None
        here). `members` are the shape's (key, parameter) pairs, `own` those this rank orthogonalises."""
        return None

    def _after_shape_momentum(self, group, members: list, plan) -> None:
        """Per shape, before U is formed: a change to the momentum buffers of every member (on every rank, so that
        the buffers stay identical)."""

    def _before_orthogonalize(self, group, keys: list[int], U: Tensor, plan) -> Tensor:
        return U

    def _ns_steps(self, group, keys: list[int], plan) -> list[int]:
        return [group["ns_steps"]] * len(keys)

    def _after_orthogonalize(self, group, keys: list[int], U: Tensor, O: Tensor, plan) -> Tensor:
        return O

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        offset = 0
        for group in self.param_groups:
            entries = [(offset + j, p) for j, p in enumerate(group["params"]) if p.grad is not None]
            offset += len(group["params"])
            self._begin_group(group)
            grads = self._momentum_step(group, entries)
            for shape, members in by_shape(entries).items():
                self._step_shape(group, shape, members, grads)
        return loss

    def _momentum_step(self, group, entries) -> dict[int, Tensor]:
        """Update every momentum buffer of the group; returns the (hooked) gradients by key."""
        grads, bufs = {}, []
        for key, p in entries:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p.grad, memory_format=torch.preserve_format)
            grads[key] = self._gradient(group, p.grad)
            bufs.append(state["momentum_buffer"])
        update_momentum(bufs, list(grads.values()), group["momentum"])
        for (key, _), buf in zip(entries, bufs):
            self._after_momentum(group, grads[key], buf)
        return grads

    def _step_shape(self, group, shape, members: list, grads: dict) -> None:
        rank, world = rank_world()
        size, own = share(members, rank, world)
        plan = self._plan_shape(group, shape, members, own)
        self._after_shape_momentum(group, members, plan)
        O = self._orthogonalize_own(group, own, grads, plan) if own else None
        if world > 1:
            O = self._all_gather(O, size, shape, group, members[0][1])[:len(members)]
        apply_update([p for _, p in members], O, group["lr"], group["weight_decay"],
                     adjust_lr(group["lr"], group["adjust_lr_fn"], shape))

    def _orthogonalize_own(self, group, own, grads, plan) -> Tensor:
        keys = [key for key, _ in own]
        bufs = [self.state[p]["momentum_buffer"] for _, p in own]
        U = torch.stack(momentum_direction([grads[key] for key in keys], bufs, group["momentum"], group["nesterov"]))
        U = self._before_orthogonalize(group, keys, U, plan)
        O = orthogonalize(U, self._ns_steps(group, keys, plan), group["orthogonalizer"],
                          group["ns_coefficients"], group["eps"], group["ns_kernel"])
        return self._after_orthogonalize(group, keys, U, O, plan)

    def _all_gather(self, O, size, shape, group, like: Tensor) -> Tensor:
        """Every rank sends its `size` orthogonalised matrices (zero-padded) and receives everyone's."""
        dtype = torch.float32 if group["orthogonalizer"] == "svd" else torch.bfloat16
        mine = torch.zeros((size, *shape), dtype=dtype, device=like.device)
        if O is not None:
            mine[:len(O)] = O
        chunks = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
        dist.all_gather(chunks, mine)
        return torch.cat(chunks)

    @torch.no_grad()
    def metrics(self) -> dict[str, float]:
        """Mean entropy effective rank of the momentum matrices (absolute and as a fraction of min(m, n)).
        Costs one batched SVD (or Gram eigenproblem, `rank_method`) per shape, so the trainer calls it at eval steps
        only."""
        buffers = by_shape((self.state[p]["momentum_buffer"], p) for group in self.param_groups
                           for p in group["params"] if "momentum_buffer" in self.state[p])
        if not buffers:
            return {}
        ranks, fracs = [], []
        for shape, members in buffers.items():
            r = effective_rank(torch.stack([buf for buf, _ in members]), self.defaults["rank_method"])
            ranks.append(r)
            fracs.append(r / min(shape))
        return {"eff_rank": torch.cat(ranks).mean().item(), "eff_rank_frac": torch.cat(fracs).mean().item()}
