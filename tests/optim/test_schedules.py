import pytest

from orthonoise.optim.schedules import SCHEDULES, alpha_at, check_schedule


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
