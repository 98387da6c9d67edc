"""Noise-scale (alpha) schedules: alpha(t) for optimizer step t = 1, 2, ...; alpha(0) = alpha.

Every schedule goes from `alpha` at t = 0 to `alpha * end_factor` at t = `steps` and holds it after that
(`constant` ignores both). The plan's annealing 1e-2 → 1e-3 over 1000 steps is alpha=1e-2, end_factor=0.1,
steps=1000; the configs default `steps` to the run's length (conf/noise/).
"""
import math

from orthonoise.errors import ArgumentError

SCHEDULES = ("constant", "linear", "exponential", "cosine")


def alpha_at(t: int, alpha: float, schedule: str, end_factor: float, steps: int) -> float:
    if schedule == "constant":
        return alpha
    x = min(t, steps) / steps
    if schedule == "linear":
        return alpha * (1 + (end_factor - 1) * x)
    if schedule == "exponential":
        return alpha * end_factor**x
    if schedule == "cosine":
        return alpha * (end_factor + (1 - end_factor) * 0.5 * (1 + math.cos(math.pi * x)))
    raise ValueError(f"unknown noise schedule {schedule!r}; choose one of {SCHEDULES}")


def check_schedule(schedule: str, end_factor: float, steps: int) -> None:
    if schedule not in SCHEDULES:
        raise ArgumentError("schedule", schedule, f"one of {SCHEDULES}")
    if schedule != "constant" and steps < 1:
        raise ArgumentError("schedule_steps", steps, f"≥ 1 for the {schedule} schedule")
    if schedule != "constant" and (end_factor < 0 or (schedule == "exponential" and end_factor == 0)):
        raise ArgumentError("end_factor", end_factor, "≥ 0 (> 0 for exponential)")
