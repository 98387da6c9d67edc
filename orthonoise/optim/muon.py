"""The Muon family: one optimizer core, with perturbations plugged in by subclasses.

Per step, for every 2-D parameter (same arithmetic as torch.optim.Muon):
    g  ← grad                                  (NOLAH: gate tanh(g)·|g|)
    B  ← lerp(B, g, 1 − μ)                     EMA momentum, B = (1 − μ)·Σ μ^k g  (NOLAH: percentile scaling)
    U  ← lerp(g, B, μ) if nesterov else B      (noise variants: + ε·Q, or ε·Q into B first)
    O  ← orthogonalise(U)                      (NOLAH: U·sigmoid(U) first)
    W  ← W·(1 − lr·wd) − lr·adjust(shape)·O
The EMA convention keeps ‖B‖ on the scale of ‖g‖ (the classical μB + g is up to 1/(1 − μ) = 20× larger), so a
noise scale ε = α‖g‖_F means the same noise-to-momentum ratio whatever μ is. Same-shape matrices are stacked
and orthogonalised in one batched call; under torch.distributed each rank orthogonalises its share of every
shape's stack and all-gathers the rest, so all ranks apply identical updates.
"""
import contextlib
import math
from collections import defaultdict

import torch
import torch.distributed as dist
from torch import Tensor
from torch.optim import Optimizer

from orthonoise.errors import ConfigError
from orthonoise.optim.noise import SAMPLERS, effective_rank, haar_from_gaussian, rescale_isotropic
from orthonoise.optim.orthogonalize import (
    MUON_COEFFICIENTS, ORTHOGONALIZERS, coefficient_schedule, newton_schulz, reorthogonalize, svd_polar,
)
from orthonoise.optim.protocol import TrainerHooks
from orthonoise.optim.schedules import alpha_at, check_schedule

ADJUST_LR_FNS = (None, "original", "match_rms_adamw")
PERTURB = ("momentum", "update")


def adjust_lr(lr: float, adjust_lr_fn: str | None, shape) -> float:
    """torch.optim.Muon's shape scaling: Keller Jordan's sqrt(max(1, rows/cols)) or Moonlight's 0.2·sqrt(max)."""
    rows, cols = shape
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    return lr * math.sqrt(max(1.0, rows / cols))


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _by_shape(entries) -> dict[tuple, list]:
    """(item, parameter) pairs — a key or a state tensor — grouped by the parameter's shape, in order."""
    buckets = defaultdict(list)
    for item, p in entries:
        buckets[tuple(p.shape)].append((item, p))
    return buckets


def _share(members: list, rank: int, world: int) -> tuple[int, list]:
    """How many of a shape's matrices each rank orthogonalises, and which are this rank's."""
    share = -(-len(members) // world)
    return share, members[rank * share:(rank + 1) * share]


def _plain(coefficients):
    """Hydra hands lists as ListConfig; keep plain tuples in param groups (state_dict, comparisons)."""
    if isinstance(coefficients, str):
        return coefficients
    return tuple(_plain(c) if not isinstance(c, (int, float)) else float(c) for c in coefficients)


class Muon(Optimizer, TrainerHooks):
    """Muon for 2-D hidden matrices; arguments shared with torch.optim.Muon mean the same thing.

    ns_coefficients: one (a, b, c) for every step, a list of per-step triples, or "polar_express".
    orthogonalizer: "newton_schulz" (bf16, batched) or "svd" (exact polar factor, float32).
    """

    def __init__(self, params, lr: float = 1e-3, weight_decay: float = 0.1, momentum: float = 0.95,
                 nesterov: bool = True, ns_coefficients=MUON_COEFFICIENTS, eps: float = 1e-7, ns_steps: int = 5,
                 adjust_lr_fn: str | None = None, orthogonalizer: str = "newton_schulz"):
        # Every message starts with the argument's name: the config check prefixes it with its key.
        if lr < 0:
            raise ConfigError(f"lr must be ≥ 0, got {lr}")
        if weight_decay < 0:
            raise ConfigError(f"weight_decay must be ≥ 0, got {weight_decay}")
        if not 0 <= momentum < 1:
            raise ConfigError(f"momentum must be in [0, 1), got {momentum}")
        if not isinstance(ns_steps, int) or ns_steps < 1:
            raise ConfigError(f"ns_steps must be an integer ≥ 1, got {ns_steps!r}")
        if adjust_lr_fn not in ADJUST_LR_FNS:
            raise ConfigError(f"adjust_lr_fn must be one of {ADJUST_LR_FNS}, got {adjust_lr_fn!r}")
        if orthogonalizer not in ORTHOGONALIZERS:
            raise ConfigError(f"orthogonalizer must be one of {ORTHOGONALIZERS}, got {orthogonalizer!r}")
        ns_coefficients = _plain(ns_coefficients)
        try:
            coefficient_schedule(ns_coefficients, ns_steps)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                        ns_coefficients=ns_coefficients, eps=eps, ns_steps=ns_steps, adjust_lr_fn=adjust_lr_fn,
                        orthogonalizer=orthogonalizer)
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
            for k, v in extra.items():
                group.setdefault(k, v)

    # Hooks for the variants; the base class is plain Muon.
    def _begin_group(self, group) -> None:
        pass

    def _gradient(self, group, g: Tensor) -> Tensor:
        return g

    def _after_momentum(self, group, g: Tensor, buf: Tensor) -> None:
        pass

    def _noise(self, group, shape, members, own) -> dict:
        """{key: noise to add to U, or None if it went into the momentum buffer} for perturbed matrices."""
        return {}

    def _before_orthogonalize(self, group, U: Tensor) -> Tensor:
        return U

    def _perturb_momentum(self, group, key: int, U: Tensor, noise: dict) -> Tensor:
        return U

    def _ns_steps(self, group, key: int, noise: dict) -> int:
        return group["ns_steps"]

    def _perturb_update(self, group, keys: list[int], U: Tensor, O: Tensor, noise: dict) -> Tensor:
        return O

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        rank, world = _rank_world()
        offset = 0
        for group in self.param_groups:
            # key: the parameter's position in the optimizer, stable across steps, ranks and resumes
            entries = [(offset + j, p) for j, p in enumerate(group["params"]) if p.grad is not None]
            offset += len(group["params"])
            self._begin_group(group)
            grads, bufs = {}, []
            for key, p in entries:
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad, memory_format=torch.preserve_format)
                grads[key] = self._gradient(group, p.grad)
                bufs.append(state["momentum_buffer"])
            if bufs:  # foreach: one fused kernel instead of one per matrix
                torch._foreach_lerp_(bufs, list(grads.values()), 1 - group["momentum"])
            for (key, _), buf in zip(entries, bufs):
                self._after_momentum(group, grads[key], buf)
            for shape, members in _by_shape(entries).items():
                share, own = _share(members, rank, world)
                noise = self._noise(group, shape, members, own)
                O = self._orthogonalize_own(group, own, grads, noise) if own else None
                if world > 1:
                    O = self._all_gather(O, share, shape, group, members[0][1])[:len(members)]
                params = [p for _, p in members]
                torch._foreach_mul_(params, 1 - group["lr"] * group["weight_decay"])
                torch._foreach_add_(params, list(O), alpha=-adjust_lr(group["lr"], group["adjust_lr_fn"], shape))
        return loss

    def _orthogonalize_own(self, group, own, grads, noise) -> Tensor:
        bufs = [self.state[p]["momentum_buffer"] for _, p in own]
        if group["nesterov"]:
            bufs = torch._foreach_lerp([grads[key] for key, _ in own], bufs, group["momentum"])
        keys = [key for key, _ in own]
        U = torch.stack([self._before_orthogonalize(group, self._perturb_momentum(group, key, u, noise))
                         for key, u in zip(keys, bufs)])
        O = self._orthogonalize(group, U, [self._ns_steps(group, key, noise) for key in keys])
        return self._perturb_update(group, keys, U, O, noise)

    def _orthogonalize(self, group, U: Tensor, steps: list[int]) -> Tensor:
        """The polar factor of each matrix of the stack U; row i gets steps[i] Newton–Schulz steps."""
        if group["orthogonalizer"] == "svd":
            return svd_polar(U, group["eps"])
        coefficients, eps = group["ns_coefficients"], group["eps"]
        safety = 1.01 if coefficients == "polar_express" else 1.0
        if len(set(steps)) == 1:
            return newton_schulz(U, coefficient_schedule(coefficients, steps[0]), eps, safety)
        O = torch.empty(U.shape, dtype=torch.bfloat16, device=U.device)
        for n in set(steps):
            rows = [i for i, s in enumerate(steps) if s == n]
            O[rows] = newton_schulz(U[rows], coefficient_schedule(coefficients, n), eps, safety)
        return O

    def _all_gather(self, O, share, shape, group, like: Tensor) -> Tensor:
        """Every rank sends its `share` orthogonalised matrices (zero-padded) and receives everyone's."""
        dtype = torch.float32 if group["orthogonalizer"] == "svd" else torch.bfloat16
        mine = torch.zeros((share, *shape), dtype=dtype, device=like.device)
        if O is not None:
            mine[:len(O)] = O
        chunks = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
        dist.all_gather(chunks, mine)
        return torch.cat(chunks)

    @torch.no_grad()
    def metrics(self) -> dict[str, float]:
        """Mean entropy effective rank of the momentum matrices (absolute and as a fraction of min(m, n)).
        Costs one batched float32 SVD per shape, so the trainer calls it at eval steps only."""
        by_shape = _by_shape((self.state[p]["momentum_buffer"], p) for group in self.param_groups
                             for p in group["params"] if "momentum_buffer" in self.state[p])
        if not by_shape:
            return {}
        ranks, fracs = [], []
        for shape, members in by_shape.items():
            r = effective_rank(torch.stack([buf for buf, _ in members]))
            ranks.append(r)
            fracs.append(r / min(shape))
        return {"eff_rank": torch.cat(ranks).mean().item(), "eff_rank_frac": torch.cat(fracs).mean().item()}


class _NoisyMuon(Muon):
    """Muon with a random perturbation ε·N of the momentum before orthogonalisation, ε = α(t)·‖g‖_F.

    ‖N‖_F = sqrt(min(m, n)) for both kinds of noise, so the two variants differ only in N's direction.
    noise_into_buffer: False (default) adds ε·N to this step's copy U (independent noise every step, the
        momentum state stays the true gradient average); True adds it to the momentum buffer B, where it
        accumulates and decays with μ (and enters U as μ·ε·N with Nesterov).
    rank_threshold: None, or only matrices whose momentum has effective rank < rank_threshold·min(m, n) get
        noise; the rank is refreshed every `rank_every` steps (one batched float32 SVD per shape).
    perturb: where the noise enters. "momentum" (default): U + ε·N, then orthogonalise as Muon does.
        "update": orthogonalise U as Muon does, add noise of the same relative size to the orthogonal update
        (ε·‖O‖_F/‖U‖_F·N), then re-orthogonalise it (`reorthogonalize`, ns_steps_noise steps).
    ns_steps_noise: "momentum": None (default) orthogonalises a perturbed matrix exactly like Muon (ns_steps), so
        the noise is the only difference; an integer (the plan's 3) changes the Newton–Schulz steps too.
        "update": the re-orthogonalisation's steps (None = 3).
    seed: noise seed (None draws one from torch's RNG). Matrix k's noise at step t comes from a generator
        seeded with (seed, t, k), so it is the same on every rank and after a resume.
    The unit noise does not depend on the gradient, so `prepare()` can draw the next step's before it
    (the trainer calls it ahead of forward+backward; on a GPU it then runs on a side stream alongside them).
    """

    def __init__(self, params, *args, alpha: float = 1e-3, schedule: str = "constant", end_factor: float = 0.1,
                 schedule_steps: int = 1000, rank_threshold: float | None = None, rank_every: int = 10,
                 ns_steps_noise: int | None = None, noise_into_buffer: bool = False, perturb: str = "momentum",
                 seed: int | None = None, **kwargs):
        if alpha < 0:
            raise ConfigError(f"alpha must be ≥ 0, got {alpha}")
        if rank_threshold is not None and not 0 < rank_threshold <= 1:
            raise ConfigError(f"rank_threshold must be in (0, 1] or null, got {rank_threshold}")
        if not isinstance(rank_every, int) or rank_every < 1:
            raise ConfigError(f"rank_every must be an integer ≥ 1, got {rank_every!r}")
        if ns_steps_noise is not None and (not isinstance(ns_steps_noise, int) or ns_steps_noise < 1):
            raise ConfigError(f"ns_steps_noise must be an integer ≥ 1 or null, got {ns_steps_noise!r}")
        if perturb not in PERTURB:
            raise ConfigError(f"perturb must be one of {PERTURB}, got {perturb!r}")
        if perturb == "update" and noise_into_buffer:
            raise ConfigError("perturb must be 'momentum' when noise_into_buffer is true (the update has no buffer), "
                              "got 'update'")
        try:
            check_schedule(schedule, end_factor, schedule_steps)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        super().__init__(params, *args, **kwargs)
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        self._set_defaults(alpha=alpha, schedule=schedule, end_factor=end_factor, schedule_steps=schedule_steps,
                           rank_threshold=rank_threshold, rank_every=rank_every, ns_steps_noise=ns_steps_noise,
                           noise_into_buffer=noise_into_buffer, perturb=perturb, seed=seed, step=0)
        self._generators: dict[torch.device, torch.Generator] = {}
        self._streams: dict[torch.device, torch.cuda.Stream] = {}
        self._prepared: dict[int, tuple[int, Tensor]] = {}  # key → (the step it is for, unit noise)

    def load_state_dict(self, state_dict) -> None:
        self._prepared.clear()  # drawn with the settings being replaced
        super().load_state_dict(state_dict)

    def _sample(self, group, G: Tensor) -> Tensor:
        """Unit noise (‖N‖_F = sqrt(min(m, n))) from a stack of standard Gaussian matrices."""
        raise NotImplementedError

    def current_alpha(self, group, step: int | None = None) -> float:
        """α at `step` (default: the step last taken) under the group's schedule."""
        step = group["step"] if step is None else step
        return alpha_at(step, group["alpha"], group["schedule"], group["end_factor"], group["schedule_steps"])

    def _begin_group(self, group) -> None:
        group["step"] += 1

    def _perturb_momentum(self, group, key: int, U: Tensor, noise: dict) -> Tensor:
        N = noise.get(key)
        return U + N if N is not None and group["perturb"] == "momentum" else U

    def _ns_steps(self, group, key: int, noise: dict) -> int:
        if group["perturb"] == "momentum" and key in noise:
            return group["ns_steps_noise"] or group["ns_steps"]
        return group["ns_steps"]

    def _perturb_update(self, group, keys: list[int], U: Tensor, O: Tensor, noise: dict) -> Tensor:
        """perturb="update": Õ = O + ε·‖O‖/‖U‖·N for the perturbed rows, re-orthogonalised. The factor ‖O‖/‖U‖ gives
        the noise the same size relative to O as "momentum" gives it relative to U (Newton–Schulz sees U/‖U‖)."""
        rows = [i for i, key in enumerate(keys) if noise.get(key) is not None]
        if group["perturb"] != "update" or not rows:
            return O
        N = torch.stack([noise[keys[i]] for i in rows])
        picked, tiny = O[rows].float(), torch.finfo(torch.float32).tiny
        scale = picked.norm(dim=(-2, -1), keepdim=True) / U[rows].float().norm(dim=(-2, -1), keepdim=True).clamp(min=tiny)
        O = O.clone()
        O[rows] = reorthogonalize(picked + scale * N, group["ns_steps_noise"] or 3).to(O.dtype)
        return O

    def _noise(self, group, shape, members, own) -> dict:
        alpha = self.current_alpha(group)
        if alpha == 0:
            for _, p in members:
                self.state[p]["noised"] = False
            return {}
        triggered = self._triggered(group, shape, members)
        eps = alpha * torch.stack(torch._foreach_norm([p.grad for _, p in members])).float()
        # the noise-to-momentum ratio is known without drawing N: ‖ε·N‖_F = ε·sqrt(min(m, n))
        buf_norms = torch.stack(torch._foreach_norm([self.state[p]["momentum_buffer"] for _, p in members])).float()
        ratio = eps * math.sqrt(min(shape)) / buf_norms.clamp(min=torch.finfo(torch.float32).tiny)
        for (_, p), hit, r in zip(members, triggered, ratio):
            self.state[p]["noised"] = hit
            self.state[p]["noise_ratio"] = r
        # into the buffer: every rank perturbs every matrix (buffers must stay identical); else owners only
        targets = members if group["noise_into_buffer"] else own
        index = {key: i for i, (key, _) in enumerate(members)}
        chosen = [(key, p) for key, p in targets if triggered[index[key]]]
        if not chosen:
            return {}
        unit = self._take_unit_noise(group, shape, [key for key, _ in chosen], chosen[0][1].device)
        N = unit * eps[[index[key] for key, _ in chosen]][:, None, None]
        if group["noise_into_buffer"]:
            for (_, p), n in zip(chosen, N):
                self.state[p]["momentum_buffer"].add_(n.to(p.grad.dtype))
            return {key: None for key, _ in chosen}
        return {key: n for (key, _), n in zip(chosen, N)}

    def _unit_noise(self, group, shape, keys: list[int], step: int, device) -> Tensor:
        """The stacked unit noise of matrices `keys` at `step`: one seeded Gaussian each, then `_sample`."""
        G = torch.empty((len(keys), *shape), dtype=torch.float32, device=device)
        gen = self._generators.setdefault(device, torch.Generator(device=device))
        for i, key in enumerate(keys):
            gen.manual_seed(((group["seed"] * 1_000_003 + step) * 1_000_033 + key) % 2**63)
            G[i].normal_(generator=gen)
        return self._sample(group, G)

    @torch.no_grad()
    def prepare(self) -> None:
        """Draw the unit noise of the next step() now, for the matrices it will perturb (as far as known: one
        whose rank gate is open at the next refresh is drawn then). On a GPU this work goes to a side stream."""
        rank, world = _rank_world()
        offset = 0
        for group in self.param_groups:
            keys = range(offset, offset + len(group["params"]))
            offset += len(group["params"])
            step = group["step"] + 1
            for key in keys:  # drawn for another step and not taken (its matrix had no gradient then)
                if key in self._prepared and self._prepared[key][0] != step:
                    del self._prepared[key]
            if self.current_alpha(group, step) == 0:
                continue
            for shape, members in _by_shape(zip(keys, group["params"])).items():
                targets = members if group["noise_into_buffer"] else _share(members, rank, world)[1]
                wanted = [key for key, p in targets if key not in self._prepared
                          and not self.state[p].get("rank_ok", False)]
                if not wanted:
                    continue
                device = targets[0][1].device
                with self._side_stream(device):
                    self._prepared.update((key, (step, u)) for key, u in
                                          zip(wanted, self._unit_noise(group, shape, wanted, step, device)))

    def _side_stream(self, device):
        if device.type != "cuda":
            return contextlib.nullcontext()
        stream = self._streams.setdefault(device, torch.cuda.Stream(device))
        stream.wait_stream(torch.cuda.current_stream(device))  # the parameters' and the generator's last use
        return torch.cuda.stream(stream)

    def _take_unit_noise(self, group, shape, keys: list[int], device) -> Tensor:
        """This step's unit noise for `keys`: what prepare() drew, the rest drawn now."""
        ready = {}
        for key in keys:
            step, unit = self._prepared.pop(key, (None, None))
            if step == group["step"]:
                ready[key] = unit
        if ready and device.type == "cuda":
            main = torch.cuda.current_stream(device)
            main.wait_stream(self._streams[device])
            for unit in ready.values():
                unit.record_stream(main)  # made on the side stream, used and freed on this one
        missing = [key for key in keys if key not in ready]
        if missing:
            ready.update(zip(missing, self._unit_noise(group, shape, missing, group["step"], device)))
        return torch.stack([ready[key] for key in keys])

    def _triggered(self, group, shape, members) -> list[bool]:
        if group["rank_threshold"] is None:
            return [True] * len(members)
        if (group["step"] - 1) % group["rank_every"] == 0 or any("rank_ok" not in self.state[p] for _, p in members):
            ranks = effective_rank(torch.stack([self.state[p]["momentum_buffer"] for _, p in members]))
            for (_, p), low in zip(members, (ranks < group["rank_threshold"] * min(shape)).tolist()):
                self.state[p]["rank_ok"] = not low
        return [not self.state[p]["rank_ok"] for _, p in members]

    def metrics(self) -> dict[str, float]:
        out = super().metrics()
        states = [self.state[p] for g in self.param_groups for p in g["params"] if "noised" in self.state[p]]
        ratios = [s["noise_ratio"] for s in states if s["noised"]]
        out["noise_frac"] = sum(s["noised"] for s in states) / len(states) if states else 0.0
        out["noise_ratio"] = torch.stack(ratios).mean().item() if ratios else 0.0
        out["alpha"] = self.current_alpha(self.param_groups[0])
        return out

    def summary(self) -> dict:
        """What the run's summary.json records: the alpha the run ended at (after its schedule)."""
        return {"final_alpha": self.current_alpha(self.param_groups[0])}


class OrthoNoise(_NoisyMuon):
    """Muon + orthogonal noise: U + ε·Q with Q Haar-distributed, QᵀQ = I (QQᵀ = I if wide).

    sampler: "cholesky" (default, batched Cholesky-QR, same Q as sign-corrected QR) or "qr" (Householder).
    Other arguments: see Muon and _NoisyMuon.
    """

    def __init__(self, params, *args, sampler: str = "cholesky", **kwargs):
        if sampler not in SAMPLERS:
            raise ConfigError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        super().__init__(params, *args, **kwargs)
        self._set_defaults(sampler=sampler)

    def _sample(self, group, G: Tensor) -> Tensor:
        return haar_from_gaussian(G, group["sampler"])


class IsotropicNoise(_NoisyMuon):
    """The control: OrthoNoise with a Gaussian direction of the same Frobenius norm instead of Q."""

    def _sample(self, group, G: Tensor) -> Tensor:
        return rescale_isotropic(G)


class NOLAH(Muon):
    """Muon + the archived NOLAH heuristics, each toggleable:
    gate: g ← tanh(g)·|g| before the momentum;
    momentum_scaling: B ← scale·B where |g| is above its `percentile`-th percentile (after the momentum update);
    projection: U ← U·sigmoid(U) before orthogonalisation.
    """

    def __init__(self, params, *args, gate: bool = True, momentum_scaling: bool = True, projection: bool = True,
                 scale: float = 0.9, percentile: float = 95.0, **kwargs):
        if not 0 < scale <= 1:
            raise ConfigError(f"scale must be in (0, 1], got {scale}")
        if not 0 < percentile < 100:
            raise ConfigError(f"percentile must be in (0, 100), got {percentile}")
        super().__init__(params, *args, **kwargs)
        self._set_defaults(gate=gate, momentum_scaling=momentum_scaling, projection=projection, scale=scale,
                           percentile=percentile)

    def _gradient(self, group, g: Tensor) -> Tensor:
        return torch.tanh(g) * g.abs() if group["gate"] else g

    def _after_momentum(self, group, g: Tensor, buf: Tensor) -> None:
        if group["momentum_scaling"]:
            buf.mul_(torch.where(g.abs() > percentile_value(g.abs(), group["percentile"]), group["scale"], 1.0))

    def _before_orthogonalize(self, group, U: Tensor) -> Tensor:
        return U * torch.sigmoid(U) if group["projection"] else U


def percentile_value(x: Tensor, percentile: float) -> Tensor:
    """The value below or at which `percentile`% of x lies: the ceil(p·n/100)-th smallest (no torch.quantile,
    which refuses inputs above 2^24 elements). On a GPU, NOLAH's step with kthvalue took 1.3 s on the 350M shapes
    (bench/RESULTS.md), so CUDA tensors take a radix sort instead (not yet timed there); on a CPU kthvalue is O(n)."""
    flat = x.flatten()
    k = max(1, math.ceil(percentile / 100 * flat.numel()))
    if flat.is_cuda:
        return flat.sort().values[k - 1]
    return flat.kthvalue(k).values
