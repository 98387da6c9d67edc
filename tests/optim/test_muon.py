import copy
import importlib.util
import math

import pytest
import torch
from hydra.utils import instantiate

from orthonoise.errors import ArgumentError
from orthonoise.optim import NOLAH, REGISTRY, IsotropicNoise, Muon, OrthoNoise, perturbation
from orthonoise.optim import muon as muon_module
from orthonoise.optim.noise import RANK_METHODS, effective_rank, haar_from_gaussian
from orthonoise.optim.orthogonalize import MUON_COEFFICIENTS, coefficient_schedule, newton_schulz
from orthonoise.optim.update import damp_large_gradients, gate_gradient, percentile_value, sigmoid_projection

SHAPES = [(48, 16), (16, 48), (32, 32)]


def make_params(shapes=SHAPES, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]


def run(opt, params, steps=4, seed=1, grad_scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p in params:
            p.grad = (grad_scale * torch.randn(p.shape, generator=gen)).to(p.dtype)
        opt.step()


@pytest.mark.parametrize("kwargs", [
    dict(lr=0.02, weight_decay=0.0),
    dict(lr=0.01, weight_decay=0.1, adjust_lr_fn="match_rms_adamw"),
    dict(lr=0.02, weight_decay=0.01, nesterov=False, momentum=0.9, ns_steps=4),
    dict(lr=0.02, ns_coefficients=(3.0, -3.2, 1.2), adjust_lr_fn="original"),
])
def test_same_update_as_torch_muon(kwargs):
    ours, ref = make_params(), make_params()
    run(Muon(ours, **kwargs), ours)
    run(torch.optim.Muon(ref, **kwargs), ref)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, atol=2e-3, rtol=0)  # bf16 rounding of the update, times lr


def test_orthonoise_with_alpha_zero_is_muon_exactly():
    base, noisy, iso = make_params(), make_params(), make_params()
    run(Muon(base, lr=0.02), base)
    run(OrthoNoise(noisy, lr=0.02, alpha=0.0, seed=3), noisy)
    run(IsotropicNoise(iso, lr=0.02, alpha=0.0, seed=3), iso)
    for a, b, c in zip(base, noisy, iso):
        assert torch.equal(a, b) and torch.equal(a, c)


@pytest.mark.parametrize("into_buffer", [False, True])
def test_orthonoise_step_by_hand(into_buffer):
    """One step on one matrix, recomputed from the definition: U = lerp(g, B, μ) + α‖g‖·Q (or B += α‖g‖·Q)."""
    (p,) = make_params([(24, 8)])
    w0, g = p.detach().clone(), torch.randn(24, 8)
    p.grad = g.clone()
    opt = OrthoNoise([p], lr=0.1, weight_decay=0.0, alpha=0.05, seed=11, ns_steps_noise=4,
                     noise_into_buffer=into_buffer)
    opt.step()
    gen = torch.Generator().manual_seed(((11 * 1_000_003 + 1) * 1_000_033 + 0) % 2**63)
    G = torch.empty(1, 24, 8)
    G[0].normal_(generator=gen)
    noise = 0.05 * g.norm() * haar_from_gaussian(G)[0]
    buf = 0.05 * g  # lerp(0, g, 1 − 0.95)
    U = g.lerp(buf + noise, 0.95) if into_buffer else g.lerp(buf, 0.95) + noise
    O = newton_schulz(U[None], coefficient_schedule(MUON_COEFFICIENTS, 4))[0]
    torch.testing.assert_close(p.detach(), w0 - 0.1 * math.sqrt(3) * O.float(), atol=1e-6, rtol=0)
    expected_buf = buf + noise if into_buffer else buf
    torch.testing.assert_close(opt.state[p]["momentum_buffer"], expected_buf)
    m = opt.metrics()
    assert m["noise_frac"] == 1.0 and m["alpha"] == pytest.approx(0.05)
    assert m["noise_ratio"] == pytest.approx((noise.norm() / buf.norm()).item(), rel=1e-5)


def test_isotropic_noise_has_the_orthogonal_norm_but_not_its_direction():
    ps_o, ps_i = make_params([(40, 10)]), make_params([(40, 10)])
    o, i = OrthoNoise(ps_o, alpha=0.1, seed=5), IsotropicNoise(ps_i, alpha=0.1, seed=5)
    run(o, ps_o, steps=1)
    run(i, ps_i, steps=1)
    assert o.metrics()["noise_ratio"] == pytest.approx(i.metrics()["noise_ratio"])
    assert not torch.allclose(ps_o[0], ps_i[0])


def test_noise_schedule_drives_alpha():
    params = make_params()
    opt = OrthoNoise(params, alpha=1e-2, schedule="linear", end_factor=0.1, schedule_steps=4, seed=0)
    run(opt, params, steps=2)
    assert opt.metrics()["alpha"] == pytest.approx(1e-2 * (1 - 0.9 * 2 / 4))
    run(opt, params, steps=5)
    assert opt.metrics()["alpha"] == pytest.approx(1e-3)


def test_adaptive_triggering_only_noises_low_rank_momentum():
    low, full = torch.nn.Parameter(torch.zeros(32, 32)), torch.nn.Parameter(torch.zeros(32, 32))
    opt = OrthoNoise([low, full], alpha=1e-2, rank_threshold=0.5, rank_every=2, seed=0)
    for _ in range(3):
        low.grad = torch.outer(torch.randn(32), torch.randn(32))  # rank ≤ 3 after 3 steps
        full.grad = torch.randn(32, 32)
        opt.step()
    assert opt.state[low]["noised"] and not opt.state[full]["noised"]
    assert opt.metrics()["noise_frac"] == 0.5


def test_nolah_gate():
    g = torch.tensor([[-2.0, -0.5], [0.0, 1.0]])
    expected = torch.tensor([[math.tanh(-2) * 2, math.tanh(-0.5) * 0.5], [0.0, math.tanh(1.0)]])
    torch.testing.assert_close(gate_gradient(g), expected)


def test_nolah_percentile_scaling():
    g = torch.arange(1.0, 21.0).reshape(4, 5)  # 90th percentile of 1..20 is the 18th smallest: 18
    assert percentile_value(g, 90.0).item() == 18.0
    buf = torch.ones(4, 5)
    damp_large_gradients(buf, -g, percentile=90.0, scale=0.5)  # |g| is what counts
    expected = torch.ones(4, 5)
    expected.view(-1)[18:] = 0.5
    torch.testing.assert_close(buf, expected)


def test_nolah_projection():
    U = torch.tensor([[-1.0, 0.0, 2.0]])
    expected = torch.tensor([[-1 / (1 + math.e), 0.0, 2 / (1 + math.exp(-2))]])
    torch.testing.assert_close(sigmoid_projection(U), expected)


@pytest.mark.parametrize("part", ["gate", "momentum_scaling", "projection"])
def test_each_nolah_part_changes_the_step(part):
    """The toggles reach the step: each part alone moves the weights away from Muon's."""
    base, nolah = make_params(), make_params()
    run(Muon(base, lr=0.02), base)
    only = {k: k == part for k in ("gate", "momentum_scaling", "projection")}
    run(NOLAH(nolah, lr=0.02, scale=0.5, **only), nolah)
    assert not all(torch.equal(a, b) for a, b in zip(base, nolah))


def test_nolah_with_every_part_off_is_muon():
    base, nolah = make_params(), make_params()
    run(Muon(base, lr=0.02), base)
    run(NOLAH(nolah, lr=0.02, gate=False, momentum_scaling=False, projection=False), nolah)
    for a, b in zip(base, nolah):
        assert torch.equal(a, b)


@pytest.mark.parametrize("cls,kwargs", [
    (OrthoNoise, dict(alpha=0.05)),
    (OrthoNoise, dict(alpha=0.05, noise_into_buffer=True, schedule="linear", schedule_steps=3)),
    (OrthoNoise, dict(alpha=0.05, rank_threshold=0.99, rank_every=2)),
    (IsotropicNoise, dict(alpha=0.05)),
    (OrthoNoise, dict(alpha=0.05, perturb="update")),
])
def test_noise_drawn_ahead_gives_the_same_steps(cls, kwargs, monkeypatch):
    """prepare() before each step (what the trainer does) changes nothing but when the noise is drawn."""
    shapes = SHAPES + [(48, 16)]  # two matrices of one shape: a batched draw
    direct, ahead = make_params(shapes), make_params(shapes)
    run(cls(direct, lr=0.02, seed=5, **kwargs), direct, steps=5)

    opt = cls(ahead, lr=0.02, seed=5, **kwargs)
    draws = []
    unit_noise = opt.noise.unit
    monkeypatch.setattr(opt.noise, "unit", lambda group, shape, keys, *a: draws.append(list(keys)) or
                        unit_noise(group, shape, keys, *a))
    gen = torch.Generator().manual_seed(1)
    for step in range(5):
        opt.prepare()
        if step == 2:
            opt.prepare()  # as after a skipped step: nothing is drawn twice
        for p in ahead:
            p.grad = torch.randn(p.shape, generator=gen)
        before = len(draws)
        opt.step()
        if kwargs.get("rank_threshold") is None:
            assert len(draws) == before, "step() drew noise that prepare() had drawn"
        assert not opt.noise.prepared  # taken, none left behind
    for a, b in zip(direct, ahead):
        assert torch.equal(a, b)
    if kwargs.get("rank_threshold") is None:
        assert sum(map(len, draws)) == 5 * len(shapes)  # every matrix once a step, all of it ahead


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("sampler", ["cholesky", "polar"])
def test_noise_drawn_ahead_on_a_side_stream_gives_the_same_steps(sampler):
    shapes = [(512, 128), (128, 512), (512, 128), (96, 96)]
    results = []
    for ahead in (False, True):
        params = [torch.nn.Parameter(p.detach().cuda()) for p in make_params(shapes)]
        opt = OrthoNoise(params, lr=0.02, alpha=0.05, seed=5, sampler=sampler)
        gen = torch.Generator().manual_seed(1)
        for _ in range(3):
            if ahead:
                opt.prepare()
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen).cuda()
            opt.step()
        results.append(params)
    for a, b in zip(*results):  # cuBLAS on two streams need not round alike (torch's reproducibility notes)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_drawn_ahead_noise_is_dropped_with_the_state_it_was_drawn_for():
    params = make_params()
    opt = OrthoNoise(params, lr=0.02, alpha=0.05, seed=5)
    other = OrthoNoise(make_params(), lr=0.02, alpha=0.05, seed=6)
    opt.prepare()
    assert len(opt.noise.prepared) == len(params)
    opt.load_state_dict(other.state_dict())  # another seed: what was drawn for seed 5 must not be used
    assert not opt.noise.prepared


EVERY_VARIANT = [
    lambda ps: Muon(ps), lambda ps: Muon(ps, orthogonalizer="svd"), lambda ps: OrthoNoise(ps, alpha=0.1),
    lambda ps: OrthoNoise(ps, alpha=0.1, rank_threshold=0.5, rank_every=1, noise_into_buffer=True),
    lambda ps: OrthoNoise(ps, alpha=0.1, sampler="qr"), lambda ps: OrthoNoise(ps, alpha=0.1, sampler="polar"),
    lambda ps: IsotropicNoise(ps, alpha=0.1), lambda ps: NOLAH(ps),
    lambda ps: OrthoNoise(ps, alpha=0.1, perturb="update"), lambda ps: IsotropicNoise(ps, alpha=0.1, perturb="update"),
]


@pytest.mark.parametrize("make", EVERY_VARIANT)
def test_zero_gradients_give_no_nan(make):
    params = make_params()
    opt = make(params)
    run(opt, params, steps=2, grad_scale=0.0)
    assert all(torch.isfinite(p).all() for p in params)
    assert all(math.isfinite(v) for v in opt.metrics().values())


@pytest.mark.parametrize("make", EVERY_VARIANT)
def test_degenerate_matrices_give_no_nan(make):
    """Vectors as matrices (1×n, n×1, 1×1), rank-1 and all-zero gradients, tiny ones, and all-zero momentum."""
    gen = torch.Generator().manual_seed(0)
    shapes = [(1, 16), (16, 1), (1, 1), (24, 8), (8, 24), (12, 12)]
    params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
    opt = make(params)
    for step in range(4):
        for p in params:
            m, n = p.shape
            rank_one = torch.randn(m, 1, generator=gen) @ torch.randn(1, n, generator=gen)
            p.grad = [rank_one, torch.zeros(m, n), rank_one * 1e-30, torch.randn(m, n, generator=gen)][step]
        opt.step()
        assert all(torch.isfinite(p).all() for p in params), f"non-finite weights after step {step + 1}"
    assert all(math.isfinite(v) for v in opt.metrics().values())


@pytest.mark.parametrize("cls,kwargs", [
    (Muon, {}), (NOLAH, {}),
    (OrthoNoise, dict(alpha=0.05, rank_threshold=0.9, rank_every=3, schedule="cosine", schedule_steps=6, seed=1)),
    (OrthoNoise, dict(alpha=0.05, noise_into_buffer=True, sampler="qr", seed=2)),
    (IsotropicNoise, dict(alpha=0.05, seed=3)),
    (IsotropicNoise, dict(alpha=0.05, perturb="update", schedule="linear", schedule_steps=4, seed=4)),
])
def test_state_dict_round_trip_resumes_exactly(cls, kwargs):
    straight = make_params()
    run(cls(straight, lr=0.02, **kwargs), straight, steps=6, seed=7)

    first = make_params()
    opt = cls(first, lr=0.02, **kwargs)
    gen = torch.Generator().manual_seed(7)
    for _ in range(3):
        for p in first:
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
    saved, weights = copy.deepcopy(opt.state_dict()), [p.detach().clone() for p in first]

    resumed = [torch.nn.Parameter(w) for w in weights]
    opt2 = cls(resumed, lr=0.5, **(kwargs | {"seed": 999} if "seed" in kwargs else kwargs))
    opt2.load_state_dict(saved)  # the saved settings (lr, seed, step) win over the constructor's
    for _ in range(3):
        for p in resumed:
            p.grad = torch.randn(p.shape, generator=gen)
        opt2.step()
    for a, b in zip(straight, resumed):
        assert torch.equal(a, b)


def test_a_state_dict_from_before_a_setting_existed_takes_its_default():
    params = make_params()
    opt = OrthoNoise(params, lr=0.02, alpha=0.05, seed=1)
    run(opt, params, steps=1)
    saved = copy.deepcopy(opt.state_dict())
    for group in saved["param_groups"]:
        del group["perturb"]  # as a checkpoint written before `perturb` existed
    resumed = OrthoNoise(params, lr=0.02, alpha=0.05, seed=1)
    resumed.load_state_dict(saved)
    run(resumed, params, steps=1)
    assert resumed.param_groups[0]["perturb"] == "momentum" and resumed.param_groups[0]["step"] == 2


@pytest.mark.parametrize("cls,kwargs,match", [
    (OrthoNoise, dict(alpha=-1e-3), "alpha"),
    (IsotropicNoise, dict(rank_threshold=0.0), "rank_threshold"),
    (OrthoNoise, dict(rank_threshold=1.5), "rank_threshold"),
    (Muon, dict(ns_steps=0), "ns_steps"),
    (OrthoNoise, dict(ns_steps_noise=0), "ns_steps_noise"),
    (OrthoNoise, dict(schedule="step"), "schedule"),
    (Muon, dict(orthogonalizer="qr"), "orthogonalizer"),
    (Muon, dict(ns_kernel="cublas"), "ns_kernel"),
    (IsotropicNoise, dict(rank_method="qr"), "rank_method"),
    (OrthoNoise, dict(ns_kernel="triton_symmetric", orthogonalizer="svd"), "ns_kernel"),
    (OrthoNoise, dict(sampler="householder"), "sampler"),
    (Muon, dict(adjust_lr_fn="sqrt"), "adjust_lr_fn"),
    (Muon, dict(ns_coefficients="cubic"), "ns_coefficients"),
    (NOLAH, dict(percentile=100), "percentile"),
    (NOLAH, dict(scale=0.0), "scale"),
    (Muon, dict(lr=-0.1), "lr"),
    (Muon, dict(weight_decay=-1.0), "weight_decay"),
    (OrthoNoise, dict(momentum=1.0), "momentum"),
    (OrthoNoise, dict(schedule="linear", end_factor=-0.5), "end_factor"),
    (IsotropicNoise, dict(schedule="cosine", schedule_steps=0), "schedule_steps"),
])
def test_bad_settings_fail_at_construction(cls, kwargs, match):
    """Each names its argument (the config check turns it into the config key): as data, and in the message."""
    with pytest.raises(ArgumentError, match=f"^{match} must be") as err:
        cls(make_params(), **kwargs)
    assert err.value.name == match and err.value.value == kwargs.get(match, err.value.value)


def test_triton_symmetric_needs_triton(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "triton" else real(name, *args))
    with pytest.raises(ArgumentError, match="^ns_kernel must be torch where triton is not installed"):
        Muon(make_params(), ns_kernel="triton_symmetric")


def test_a_checkpoint_from_before_ns_kernel_resumes_with_torch_kernels():
    params = make_params()
    saved = Muon(params, lr=0.02).state_dict()
    for group in saved["param_groups"]:
        del group["ns_kernel"]
    resumed = Muon(params, lr=0.02)
    resumed.load_state_dict(saved)
    run(resumed, params, steps=1)
    assert resumed.param_groups[0]["ns_kernel"] == "torch"


@pytest.mark.parametrize("cls", [Muon, OrthoNoise, IsotropicNoise, NOLAH])
def test_non_matrix_is_refused(cls):
    with pytest.raises(ValueError, match="2-D"):
        cls([torch.nn.Parameter(torch.zeros(4, 1, 3))])


def test_metrics_keys():
    params = make_params()
    muon, noisy = Muon(params), OrthoNoise(make_params(), alpha=1e-3)
    assert muon.metrics() == {}  # nothing to measure before the first step
    run(muon, params, steps=1)
    run(noisy, noisy.param_groups[0]["params"], steps=1)
    assert set(muon.metrics()) == {"eff_rank", "eff_rank_frac"}
    m = noisy.metrics()
    assert set(m) == {"eff_rank", "eff_rank_frac", "noise_frac", "noise_ratio", "alpha"}
    assert 0 < m["eff_rank_frac"] <= 1 and m["noise_frac"] == 1.0 and m["noise_ratio"] > 0


def test_rank_method_gives_the_same_metric_and_gate(monkeypatch):
    """rank_method=gram (float64 Gram eigenvalues) reports the eval's effective rank and drives rank_threshold's gate
    as svd does; only its cost differs (bench/optimizer.py times both)."""
    asked = []

    def spy(X, method="svd"):
        asked.append(method)
        return effective_rank(X, method)
    monkeypatch.setattr(muon_module, "effective_rank", spy)
    monkeypatch.setattr(perturbation, "effective_rank", spy)
    by_method = {}
    for method in RANK_METHODS:
        asked.clear()
        params = make_params()
        opt = OrthoNoise(params, alpha=1e-3, seed=0, rank_threshold=0.9, rank_method=method)
        run(opt, params, steps=3)
        gates = [opt.state[p]["rank_ok"] for p in params]
        by_method[method] = (opt.metrics()["eff_rank"], gates, [p.detach().clone() for p in params])
        assert asked and set(asked) == {method}  # the gate's passes and the metric's
    (svd_rank, svd_gates, svd_params), (gram_rank, gram_gates, gram_params) = by_method.values()
    assert gram_rank == pytest.approx(svd_rank, rel=1e-5) and gram_gates == svd_gates
    assert all(torch.equal(a, b) for a, b in zip(svd_params, gram_params))


def test_lr_is_read_from_the_group_each_step():
    params = make_params([(8, 8)])
    opt = Muon(params, lr=0.02)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.0)
    before = params[0].detach().clone()
    run(opt, params, steps=1)
    sched.step()
    assert torch.equal(params[0], before)


def test_seed_defaults_to_torch_rng():
    torch.manual_seed(123)
    a = OrthoNoise(make_params()).param_groups[0]["seed"]
    torch.manual_seed(123)
    assert OrthoNoise(make_params()).param_groups[0]["seed"] == a


def test_percentile_by_sort_equals_kthvalue():
    """The CUDA path (a full sort) and the CPU path (kthvalue) pick the same element."""
    x = torch.randn(1000, 37).abs()
    for percentile in (50.0, 95.0, 99.9):
        k = math.ceil(percentile / 100 * x.numel())
        assert x.flatten().sort().values[k - 1] == percentile_value(x, percentile)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_registered_kind_steps_bf16_parameters(compose_cfg, name):
    """With its shipped settings, as the config builds it: the update is applied in the parameters' dtype."""
    make = instantiate(compose_cfg(f"optimizer={name}").optimizer, _convert_="all")
    params = [torch.nn.Parameter(p.detach().bfloat16()) for p in make_params()]
    before = [p.detach().clone() for p in params]
    run(make(params), params, steps=2)
    for p, b in zip(params, before):
        assert p.dtype == torch.bfloat16 and torch.isfinite(p).all() and not torch.equal(p, b)


@pytest.mark.parametrize("make", EVERY_VARIANT)
def test_every_noise_option_steps_bf16_parameters(make):
    params = [torch.nn.Parameter(p.detach().bfloat16()) for p in make_params()]
    opt = make(params)
    run(opt, params, steps=2)
    assert all(p.dtype == torch.bfloat16 and torch.isfinite(p).all() for p in params)
    assert all(math.isfinite(v) for v in opt.metrics().values())
