"""The noise variants: Muon plus a Perturbation (perturbation.py), OrthoNoise and the isotropic control."""
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from orthonoise.optim.muon import Muon, check, rank_world
from orthonoise.optim.noise import DISTRIBUTIONS, SAMPLERS
from orthonoise.optim.perturbation import ENTRIES, Perturbation
from orthonoise.optim.schedules import check_schedule
from orthonoise.optim.update import perturb_orthogonal


@dataclass
class ShapeNoise:
    """One shape's noise at this step: the keys whose matrix got noise, and ε·N still to add to U or O."""
    perturbed: set = field(default_factory=set)
    added: dict = field(default_factory=dict)


class NoisyMuon(Muon):
    """Muon with a random perturbation ε·N, ε = α(t)·‖g‖_F, N from `distribution` (noise.DISTRIBUTIONS; every one
    has ‖N‖_F = sqrt(min(m, n)), so variants differ only in N's direction).

    perturb: where the noise enters. "momentum" (default): U + ε·N, then orthogonalise as Muon does.
        "update": orthogonalise U as Muon does, add the noise at the same relative size to the orthogonal update,
        then re-orthogonalise it (update.perturb_orthogonal, ns_steps_noise steps).
    ns_steps_noise: "momentum": None (default) orthogonalises a perturbed matrix exactly like Muon (ns_steps), so
        the noise is the only difference; an integer (the plan's 3) changes the Newton–Schulz steps too.
        "update": the re-orthogonalisation's steps (None = 3).
    noise_into_buffer: False (default) adds ε·N to this step's copy U (independent noise every step, the momentum
        state stays the true gradient average); True adds it to the momentum buffer B, where it accumulates and
        decays with μ (and enters U as μ·ε·N with Nesterov). Only with perturb="momentum".
    schedule, end_factor, schedule_steps: α(t) from alpha to alpha·end_factor (schedules.py).
    rank_threshold: None, or only matrices whose momentum has effective rank < rank_threshold·min(m, n) get
        noise; the rank is refreshed every `rank_every` steps (one batched float32 SVD per shape).
    seed: noise seed (None draws one from torch's RNG); matrix k's noise at step t is seeded by (seed, t, k).
    The unit noise does not depend on the gradient, so `prepare()` draws the next step's before it.
    """

    def __init__(self, params, *args, distribution: str = "orthogonal", alpha: float = 1e-3,
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

    def _shape_context(self, group, shape, members: list, own: list) -> ShapeNoise:
        alpha = self.noise.alpha(group)
        if alpha == 0:
            for _, p in members:
                self.state[p]["noised"] = False
            return ShapeNoise()
        gated = self.noise.gated(group, shape, members, self.state)
        eps = self.noise.scale(alpha, [p.grad for _, p in members])
        self._record(shape, members, gated, eps)
        where = self.noise.enters(group)
        index = {key: i for i, (key, _) in enumerate(members)}
        chosen = [(key, p) for key, p in (members if where == "buffer" else own) if gated[index[key]]]
        if not chosen:
            return ShapeNoise()
        keys = [key for key, _ in chosen]
        N = self.noise.take(group, shape, keys, chosen[0][1].device) * eps[[index[k] for k in keys]][:, None, None]
        if where == "buffer":  # every rank perturbs every buffer, so that the buffers stay identical
            for (_, p), n in zip(chosen, N):
                self.state[p]["momentum_buffer"].add_(n.to(p.grad.dtype))
            return ShapeNoise(perturbed=set(keys))
        return ShapeNoise(perturbed=set(keys), added=dict(zip(keys, N)))

    def _record(self, shape, members: list, gated: list[bool], eps: Tensor) -> None:
        """Which matrices got noise, and ‖ε·N‖_F/‖B‖_F (known without drawing N: ‖ε·N‖_F = ε·sqrt(min(m, n)))."""
        bufs = [self.state[p]["momentum_buffer"] for _, p in members]
        ratio = eps * math.sqrt(min(shape)) / torch.stack(torch._foreach_norm(bufs)).float().clamp(
            min=torch.finfo(torch.float32).tiny)
        for (_, p), hit, r in zip(members, gated, ratio):
            self.state[p]["noised"] = hit
            self.state[p]["noise_ratio"] = r

    def _before_orthogonalize(self, group, keys, U: Tensor, context: ShapeNoise) -> Tensor:
        rows = [i for i, key in enumerate(keys) if key in context.added]
        if self.noise.enters(group) == "momentum" and rows:
            U[rows] = U[rows] + torch.stack([context.added[keys[i]] for i in rows])
        return U

    def _ns_steps(self, group, keys, context: ShapeNoise) -> list[int]:
        fewer = group["ns_steps_noise"] if self.noise.enters(group) != "update" else None
        return [fewer or group["ns_steps"] if key in context.perturbed else group["ns_steps"] for key in keys]

    def _after_orthogonalize(self, group, keys, U: Tensor, O: Tensor, context: ShapeNoise) -> Tensor:
        rows = [i for i, key in enumerate(keys) if key in context.added]
        if self.noise.enters(group) != "update" or not rows:
            return O
        N = torch.stack([context.added[keys[i]] for i in rows])
        O = O.clone()
        O[rows] = perturb_orthogonal(O[rows], U[rows], N, group["ns_steps_noise"] or 3).to(O.dtype)
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
        out["alpha"] = self.noise.alpha(self.param_groups[0])
        return out

    def summary(self) -> dict:
        """The alpha the run ended at (after its schedule), for labelling runs."""
        return {"final_alpha": self.noise.alpha(self.param_groups[0])}


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


