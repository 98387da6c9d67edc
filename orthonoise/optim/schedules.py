"""The one warmup/decay ramp, and the noise scale (alpha) schedules built on it.

`warmup_decay` is a multiplier: linear warmup to 1, then a decay from 1 to `end` that holds after `total`. The
trainer's learning rate follows it (trainer.warmup_steps, max_steps, min_lr_ratio, lr_decay), and so does alpha
(no warmup): alpha(t) for optimizer step t = 1, 2, ... goes from `alpha` at t = 0 to `alpha * end_factor` at
t = `steps` and holds it after that (`constant` ignores both). The plan's annealing 1e-2 → 1e-3 over 1000 steps is
alpha=1e-2, end_factor=0.1, steps=1000; the configs default `steps` to the run's length (conf/noise/).
"""
import math

from orthonoise.errors import ArgumentError

SCHEDULES = ("constant", "linear", "exponential", "cosine")


def warmup_decay(step: int, warmup: int, total: int, end: float, shape: str) -> float:
    """(step + 1)/warmup for step < warmup; then 1 at step = warmup to `end` at step = total along `shape` (one of
    SCHEDULES), held after."""
    if step < warmup:
        return (step + 1) / warmup
    if shape == "constant":
        return 1.0
    x = min(1.0, (step - warmup) / max(1, total - warmup))
    if shape == "linear":
        return 1 + (end - 1) * x
    if shape == "exponential":
        return end**x
    if shape == "cosine":
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * x))
    raise ValueError(f"unknown schedule {shape!r}; choose one of {SCHEDULES}")


def alpha_at(t: int, alpha: float, schedule: str, end_factor: float, steps: int) -> float:
    return alpha * warmup_decay(t, 0, steps, end_factor, schedule)


def check_schedule(schedule: str, end_factor: float, steps: int) -> None:
    if schedule not in SCHEDULES:
        raise ArgumentError("schedule", schedule, f"one of {SCHEDULES}")
    if schedule != "constant" and steps < 1:
        raise ArgumentError("schedule_steps", steps, f"≥ 1 for the {schedule} schedule")
    if schedule != "constant" and (end_factor < 0 or (schedule == "exponential" and end_factor == 0)):
        raise ArgumentError("end_factor", end_factor, "≥ 0 (> 0 for exponential)")
