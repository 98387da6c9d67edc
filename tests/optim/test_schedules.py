import pytest

from orthonoise.optim.schedules import SCHEDULES, alpha_at, check_schedule, warmup_decay


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_endpoints_and_hold(schedule):
    end = 1e-3 if schedule != "constant" else 1e-2
    assert alpha_at(0, 1e-2, schedule, 0.1, 1000) == pytest.approx(1e-2)
    assert alpha_at(1000, 1e-2, schedule, 0.1, 1000) == pytest.approx(end)
    assert alpha_at(5000, 1e-2, schedule, 0.1, 1000) == pytest.approx(end)


def test_midpoints():
    assert alpha_at(500, 1e-2, "linear", 0.1, 1000) == pytest.approx(5.5e-3)
    assert alpha_at(500, 1e-2, "exponential", 0.1, 1000) == pytest.approx(1e-2 * 0.1**0.5)
    assert alpha_at(500, 1e-2, "cosine", 0.1, 1000) == pytest.approx(5.5e-3)
    assert alpha_at(250, 1e-2, "cosine", 0.1, 1000) > alpha_at(250, 1e-2, "linear", 0.1, 1000)


def test_monotone_decay():
    for schedule in ("linear", "exponential", "cosine"):
        values = [alpha_at(t, 1.0, schedule, 0.1, 100) for t in range(0, 120)]
        assert all(a >= b for a, b in zip(values, values[1:]))


@pytest.mark.parametrize("args", [("step", 0.1, 10), ("linear", 0.1, 0), ("exponential", 0.0, 10), ("cosine", -1, 10)])
def test_bad_schedules(args):
    with pytest.raises(ValueError):
        check_schedule(*args)


@pytest.mark.parametrize("shape", SCHEDULES)
def test_the_ramp_warms_up_linearly_then_decays_to_its_end_and_holds(shape):
    end = 1.0 if shape == "constant" else 0.1
    assert [warmup_decay(s, 4, 20, 0.1, shape) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert warmup_decay(4, 4, 20, 0.1, shape) == 1.0  # the decay starts where the warmup ends
    assert warmup_decay(20, 4, 20, 0.1, shape) == pytest.approx(end) == warmup_decay(500, 4, 20, 0.1, shape)
    with pytest.raises(ValueError):
        warmup_decay(5, 4, 20, 0.1, "step")


def test_lr_and_alpha_follow_the_one_ramp(compose_cfg):
    """The trainer's lr multiplier is the ramp with trainer.warmup_steps; alpha is it without a warmup."""
    from orthonoise.trainer import lr_multiplier

    trainer = compose_cfg("trainer.max_steps=30", "trainer.warmup_steps=5", "trainer.lr_decay=linear").trainer
    multiplier = lr_multiplier(trainer)
    assert [multiplier(s) for s in range(40)] == [warmup_decay(s, 5, 30, trainer.min_lr_ratio, "linear")
                                                  for s in range(40)]
    for shape in SCHEDULES:
        assert [alpha_at(t, 2e-3, shape, 0.1, 30) for t in range(40)] == [2e-3 * warmup_decay(t, 0, 30, 0.1, shape)
                                                                         for t in range(40)]
