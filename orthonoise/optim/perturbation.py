"""The noise of the noise variants (OrthoNoise, the isotropic control): what decides it, as free functions of a
param group, and `Perturbation`, which draws it.

    scheduled_alpha(group, step)            the scheduled noise scale α(t)
    noise_scale(alpha, grads)               ε = α·‖g‖_F, per matrix
    entry_point(group)                      where ε·N is added: "momentum" (this step's copy U), "buffer" (the
                                            stored momentum) or "update" (the orthogonal update)
    rank_gate(group, shape, members, state) which matrices get noise (the effective-rank gate)
    Perturbation.unit / prepare / take      the unit noise of matrix `key` at `step`, each drawn from its own
                                            generator seeded with (seed, step, key): the same on every rank and
                                            after a resume, whatever else is drawn with it; drawn ahead of the
                                            step (on a GPU on a side stream)

The settings live in the optimizer's param groups (so in its state_dict); `Perturbation`'s own state is only the
noise drawn ahead, which `clear()` drops (it is redrawn from (seed, step, key)). The optimizer (noisy.py) calls these.
"""
import contextlib

import torch
from torch import Tensor

from orthonoise.optim.muon import by_shape, share
from orthonoise.optim.noise import Distribution, effective_rank
from orthonoise.optim.schedules import alpha_at

ENTRIES = ("momentum", "update")  # the `perturb` argument; "buffer" is noise_into_buffer=true


def noise_seed(seed: int, step: int, key: int) -> int:
    return ((seed * 1_000_003 + step) * 1_000_033 + key) % 2**63


def scheduled_alpha(group, step: int | None = None) -> float:
    """α at `step` (default: the step last taken) under the group's schedule."""
    step = group["step"] if step is None else step
    return alpha_at(step, group["alpha"], group["schedule"], group["end_factor"], group["schedule_steps"])


def noise_scale(alpha: float, grads: list[Tensor]) -> Tensor:
    return alpha * torch.stack(torch._foreach_norm(grads)).float()


def entry_point(group) -> str:
    return "buffer" if group["noise_into_buffer"] else group["perturb"]


def rank_gate(group, shape, members: list, state) -> list[bool]:
    """Matrices whose momentum has effective rank < rank_threshold·min(m, n) (all if no threshold); the rank is
    refreshed every rank_every steps and cached in the optimizer state (`rank_ok`) in between."""
    if group["rank_threshold"] is None:
        return [True] * len(members)
    if (group["step"] - 1) % group["rank_every"] == 0 or any("rank_ok" not in state[p] for _, p in members):
        ranks = effective_rank(torch.stack([state[p]["momentum_buffer"] for _, p in members]), group["rank_method"])
        for (_, p), low in zip(members, (ranks < group["rank_threshold"] * min(shape)).tolist()):
            state[p]["rank_ok"] = not low
    return [not state[p]["rank_ok"] for _, p in members]


class Perturbation:
    """The unit noise of one distribution, drawn per (seed, step, matrix), and what was drawn ahead."""

    def __init__(self, distribution: Distribution):
        self.distribution = distribution
        self.prepared: dict[int, tuple[int, Tensor]] = {}  # key → (the step it is for, unit noise)
        self._generators: dict[torch.device, torch.Generator] = {}
        self._streams: dict[torch.device, torch.cuda.Stream] = {}

    def unit(self, group, shape, keys: list[int], step: int, device) -> Tensor:
        generator = self._generators.setdefault(device, torch.Generator(device=device))
        options = {keyword: group[setting] for keyword, setting in self.distribution.options}
        seeds = [noise_seed(group["seed"], step, key) for key in keys]
        return self.distribution.sample((len(keys), *shape), generator=generator, device=device, seeds=seeds,
                                        **options)

    @torch.no_grad()
    def prepare(self, group, entries: list, state, rank: int, world: int) -> None:
        """Draw the unit noise of the group's next step now, for the matrices it will perturb as far as known (one
        whose rank gate opens at the next refresh is drawn then); `entries` are (key, parameter) pairs."""
        step = group["step"] + 1
        for key, _ in entries:  # drawn for another step and not taken (its matrix had no gradient then)
            if key in self.prepared and self.prepared[key][0] != step:
                del self.prepared[key]
        if scheduled_alpha(group, step) == 0:
            return
        for shape, members in by_shape(entries).items():
            targets = members if entry_point(group) == "buffer" else share(members, rank, world)[1]
            wanted = [key for key, p in targets if key not in self.prepared and not state[p].get("rank_ok", False)]
            if not wanted:
                continue
            device = targets[0][1].device
            with self._side_stream(device):
                drawn = self.unit(group, shape, wanted, step, device)
                self.prepared.update((key, (step, u)) for key, u in zip(wanted, drawn))

    def take(self, group, shape, keys: list[int], device) -> Tensor:
        """This step's unit noise for `keys`: what prepare() drew, the rest drawn now."""
        ready = {}
        for key in keys:
            step, unit = self.prepared.pop(key, (None, None))
            if step == group["step"]:
                ready[key] = unit
        if ready and device.type == "cuda":
            main = torch.cuda.current_stream(device)
            main.wait_stream(self._streams[device])
            for unit in ready.values():
                unit.record_stream(main)  # made on the side stream, used and freed on this one
        missing = [key for key in keys if key not in ready]
        if missing:
            ready.update(zip(missing, self.unit(group, shape, missing, group["step"], device)))
        return torch.stack([ready[key] for key in keys])

    def clear(self) -> None:
        self.prepared.clear()

    def _side_stream(self, device):
        if device.type != "cuda":
            return contextlib.nullcontext()
        stream = self._streams.setdefault(device, torch.cuda.Stream(device))
        stream.wait_stream(torch.cuda.current_stream(device))  # the parameters' and the generator's last use
        return torch.cuda.stream(stream)
