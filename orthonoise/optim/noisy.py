"""The noise variants: Muon plus a random perturbation (perturbation.py), OrthoNoise and the isotropic control.

Per step and shape the noise is decided, drawn, then applied where it enters, each a named step:
    decide    _decide: which matrices get noise (the rank gate) and its size ε = α(t)·‖g‖_F, recorded for metrics()
    draw      _plan_shape: ε·N for those of them that this rank perturbs (Perturbation.take)
    apply     one of: into the momentum buffer B (_after_shape_momentum, noise_into_buffer), into this step's copy U
              (_before_orthogonalize, perturb="momentum"), into the orthogonal update O (_after_orthogonalize,
              perturb="update")
"""
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from orthonoise.optim.muon import Muon, check, rank_world
from orthonoise.optim.noise import DEFAULT_DISTRIBUTION, DISTRIBUTIONS, SAMPLERS
from orthonoise.optim.perturbation import (
    ENTRIES,
    Perturbation,
    entry_point,
    noise_scale,
    rank_gate,
    scheduled_alpha,
)
from orthonoise.optim.schedules import check_schedule
from orthonoise.optim.update import add_noise, perturb_update

# perturb="update" with ns_steps_noise: null: the re-orthogonalisation's steps (3 reach float32 precision from
# Muon's update plus noise: docs/optimizers.md)
REORTHOGONALIZE_STEPS = 3


@dataclass
class ShapeNoise:
    """One shape's noise at this step: where it enters, and ε·N by the key of each matrix it goes to."""
    enters: str
    added: dict[int, Tensor] = field(default_factory=dict)


class NoisyMuon(Muon):
    """Muon with a random perturbation ε·N, ε = α(t)·‖g‖_F, N from `distribution` (noise.DISTRIBUTIONS; every one
    has ‖N‖_F = sqrt(min(m, n)), so variants differ only in N's direction).

    perturb: where the noise enters. "momentum" (default): U + ε·N, then orthogonalise as Muon does.
        "update": orthogonalise U as Muon does (O), add the noise at the same relative size, re-orthogonalise, and
        keep Muon's own singular values (update.perturb_update): α → 0 is Muon's update.
    ns_steps_noise: "momentum": None (default) orthogonalises a perturbed matrix exactly like Muon (ns_steps), so
        the noise is the only difference; an integer (the plan's 3) changes the Newton–Schulz steps too.
        "update": the re-orthogonalisation's steps (None = REORTHOGONALIZE_STEPS).
    noise_into_buffer: False (default) adds ε·N to this step's copy U (independent noise every step, the momentum
        state stays the true gradient average); True adds it to the momentum buffer B, where it accumulates and
        decays with μ (and enters U as μ·ε·N with Nesterov). Only with perturb="momentum".
    schedule, end_factor, schedule_steps: α(t) from alpha to alpha·end_factor (schedules.py).
    rank_threshold: None, or only matrices whose momentum has effective rank < rank_threshold·min(m, n) get
        noise; the rank is refreshed every `rank_every` steps (one batched SVD per shape; `rank_method`).
    seed: noise seed (None draws one from torch's RNG); matrix k's noise at step t is seeded by (seed, t, k).
    The unit noise does not depend on the gradient, so `prepare()` draws the next step's before it.
    """

    def __init__(self, params, *args, distribution: str = DEFAULT_DISTRIBUTION, alpha: float = 1e-3,
                 schedule: str = "constant", end_factor: float = 0.1, schedule_steps: int = 1000,
                 rank_threshold: float | None = None, rank_every: int = 10, ns_steps_noise: int | None = None,
                 noise_into_buffer: bool = False, perturb: str = "momentum", seed: int | None = None, **kwargs):
        check(distribution in DISTRIBUTIONS, "distribution", distribution, f"one of {tuple(DISTRIBUTIONS)}")
        check(alpha >= 0, "alpha", alpha, "≥ 0")
        check(rank_threshold is None or 0 < rank_threshold <= 1, "rank_threshold", rank_threshold, "in (0, 1] or null")
        check(isinstance(rank_every, int) and rank_every >= 1, "rank_every", rank_every, "an integer ≥ 1")
        check(ns_steps_noise is None or (isinstance(ns_steps_noise, int) and ns_steps_noise >= 1), "ns_steps_noise",
              ns_steps_noise, "an integer ≥ 1 or null")
        check(perturb in ENTRIES, "perturb", perturb, f"one of {ENTRIES}")
        check(not (perturb == "update" and noise_into_buffer), "perturb", perturb,
              "'momentum' when noise_into_buffer is true (the update has no buffer)")
        check_schedule(schedule, end_factor, schedule_steps)
        super().__init__(params, *args, **kwargs)
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        self._set_defaults(alpha=alpha, schedule=schedule, end_factor=end_factor, schedule_steps=schedule_steps,
                           rank_threshold=rank_threshold, rank_every=rank_every, ns_steps_noise=ns_steps_noise,
                           noise_into_buffer=noise_into_buffer, perturb=perturb, seed=seed, step=0)
        self.noise = Perturbation(DISTRIBUTIONS[distribution])

    def load_state_dict(self, state_dict) -> None:
        self.noise.clear()  # drawn with the settings being replaced
        super().load_state_dict(state_dict)

    def _begin_group(self, group) -> None:
        group["step"] += 1

    def _plan_shape(self, group, shape, members: list, own: list) -> ShapeNoise:
        """Decide, then draw ε·N for the matrices that get it: on a buffer every rank perturbs every matrix (so the
        buffers stay identical), otherwise each rank its own share."""
        noise = ShapeNoise(entry_point(group))
        eps = self._decide(group, shape, members)
        chosen = [(key, p) for key, p in (members if noise.enters == "buffer" else own) if key in eps]
        if chosen:
            keys = [key for key, _ in chosen]
            unit = self.noise.take(group, shape, keys, chosen[0][1].device)
            noise.added = dict(zip(keys, unit * torch.stack([eps[key] for key in keys])[:, None, None]))
        return noise

    def _decide(self, group, shape, members: list) -> dict[int, Tensor]:
        """ε by the key of each matrix that gets noise at this step; every member's `noised` and `noise_ratio`
        (‖ε·N‖_F/‖B‖_F, known without drawing N: ‖ε·N‖_F = ε·sqrt(min(m, n))) recorded for metrics()."""
        alpha = scheduled_alpha(group)
        if alpha == 0:
            for _, p in members:
                self.state[p]["noised"] = False
            return {}
        gated = rank_gate(group, shape, members, self.state)
        eps = noise_scale(alpha, [p.grad for _, p in members])
        bufs = [self.state[p]["momentum_buffer"] for _, p in members]
        ratio = eps * math.sqrt(min(shape)) / torch.stack(torch._foreach_norm(bufs)).float().clamp(
            min=torch.finfo(torch.float32).tiny)
        for (_, p), hit, r in zip(members, gated, ratio):
            self.state[p]["noised"] = hit
            self.state[p]["noise_ratio"] = r
        return {key: e for (key, _), hit, e in zip(members, gated, eps) if hit}

    def _after_shape_momentum(self, group, members: list, noise: ShapeNoise) -> None:
        if noise.enters == "buffer":
            for key, p in members:
                if key in noise.added:
                    self.state[p]["momentum_buffer"].add_(noise.added[key].to(p.grad.dtype))

    def _before_orthogonalize(self, group, keys, U: Tensor, noise: ShapeNoise) -> Tensor:
        return add_noise(U, keys, noise.added) if noise.enters == "momentum" else U

    def _ns_steps(self, group, keys, noise: ShapeNoise) -> list[int]:
        """Muon's ns_steps, except a perturbed matrix's when ns_steps_noise is set (momentum and buffer readings;
        in the update reading ns_steps_noise counts the re-orthogonalisation's steps)."""
        steps, perturbed_steps = group["ns_steps"], group["ns_steps_noise"]
        if noise.enters == "update" or perturbed_steps is None:
            return [steps] * len(keys)
        return [perturbed_steps if key in noise.added else steps for key in keys]

    def _after_orthogonalize(self, group, keys, U: Tensor, O: Tensor, noise: ShapeNoise) -> Tensor:
        rows = [i for i, key in enumerate(keys) if key in noise.added]
        if noise.enters != "update" or not rows:
            return O
        N = torch.stack([noise.added[keys[i]] for i in rows])
        O = O.clone()
        steps = group["ns_steps_noise"] or REORTHOGONALIZE_STEPS
        O[rows] = perturb_update(O[rows], U[rows], N, steps).to(O.dtype)
        return O

    @torch.no_grad()
    def prepare(self) -> None:
        """Draw the unit noise of the next step() now (the trainer calls this ahead of forward+backward)."""
        rank, world = rank_world()
        offset = 0
        for group in self.param_groups:
            entries = list(zip(range(offset, offset + len(group["params"])), group["params"]))
            offset += len(group["params"])
            self.noise.prepare(group, entries, self.state, rank, world)

    def metrics(self) -> dict[str, float]:
        out = super().metrics()
        states = [self.state[p] for g in self.param_groups for p in g["params"] if "noised" in self.state[p]]
        ratios = [s["noise_ratio"] for s in states if s["noised"]]
        out["noise_frac"] = sum(s["noised"] for s in states) / len(states) if states else 0.0
        out["noise_ratio"] = torch.stack(ratios).mean().item() if ratios else 0.0
        out["alpha"] = scheduled_alpha(self.param_groups[0])
        return out

    def summary(self) -> dict:
        """The alpha the run ended at (after its schedule), for labelling runs."""
        return {"final_alpha": scheduled_alpha(self.param_groups[0])}


class OrthoNoise(NoisyMuon):
    """Muon + orthogonal noise: U + ε·Q with Q Haar-distributed, QᵀQ = I (QQᵀ = I if wide).

    sampler: "cholesky" (default, batched Cholesky-QR, same Q as sign-corrected QR), "qr" (Householder) or
    "polar" (the polar factor, GEMMs only). Other arguments: see Muon and NoisyMuon.
    """

    def __init__(self, params, *args, sampler: str = "cholesky", **kwargs):
        check(sampler in SAMPLERS, "sampler", sampler, f"one of {SAMPLERS}")
        super().__init__(params, *args, distribution="orthogonal", **kwargs)
        self._set_defaults(sampler=sampler)


class IsotropicNoise(NoisyMuon):
    """The control: OrthoNoise with a Gaussian direction of the same Frobenius norm instead of Q."""

    def __init__(self, params, *args, **kwargs):
        super().__init__(params, *args, distribution="isotropic", **kwargs)
