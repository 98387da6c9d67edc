"""Throughput accounting for the trainer and the benches: step-time split, tokens/s, peak memory, MFU.

MFU = 6·N·tokens_per_s / peak dense bf16 FLOP/s of the device (N = all parameters, the tied embedding
counted once; attention's T² term is left out, as in the usual 6N rule). Timing uses CUDA events recorded
every step and read only when a row is logged, so steps that are not logged never wait on the GPU.
"""
from __future__ import annotations

import statistics
import time

import torch

# Dense (no sparsity) bf16 tensor-core peak, TFLOP/s, from the vendors' datasheets. First match wins,
# so the more specific names come first. `hardware.peak_tflops` overrides this for any device.
PEAK_BF16_TFLOPS: list[tuple[tuple[str, ...], float]] = [
    (("H200",), 989.0),
    (("H100", "PCIE"), 756.0),
    (("H100", "NVL"), 835.0),
    (("H100",), 989.0),  # SXM (the name reads e.g. "NVIDIA H100 80GB HBM3")
    (("H800",), 989.0),
    (("GH200",), 989.0),
    (("A100",), 312.0),
    (("A800",), 312.0),
    (("L40S",), 362.0),
    (("A10G",), 70.0),
]


def peak_bf16_flops(device_name: str | None, override_tflops: float | None = None) -> float | None:
    """Peak dense bf16 FLOP/s for a device name (torch.cuda.get_device_name), or None when unknown."""
    if override_tflops:
        return float(override_tflops) * 1e12
    if not device_name:
        return None
    name = device_name.upper()
    for keys, tflops in PEAK_BF16_TFLOPS:
        if all(k in name for k in keys):
            return tflops * 1e12
    return None


def device_peak_flops(device: torch.device, override_tflops: float | None = None) -> float | None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return peak_bf16_flops(name, override_tflops)


def mfu(n_params: int, tokens_per_s: float, peak_flops: float | None) -> float | None:
    """Model FLOP utilisation, 6·N·tokens/s over peak; None when the peak is unknown."""
    if not peak_flops or not tokens_per_s:
        return None
    return 6.0 * n_params * tokens_per_s / peak_flops


class StepTimer:
    """Marks points of one training step: start() ... mark("fwd_bwd") ... mark("optimizer").

    On CUDA it records events (no synchronisation); `read()` waits for the last one and returns seconds per
    segment. On the CPU, where work is synchronous, it reads the host clock.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self._marks: list[tuple[str, object]] = []

    def _now(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def start(self) -> None:
        self._marks = [("start", self._now())]

    def mark(self, name: str) -> None:
        self._marks.append((name, self._now()))

    def read(self) -> dict[str, float]:
        """{segment name: seconds} for each mark since start()."""
        if len(self._marks) < 2:
            return {}
        if self.cuda:
            self._marks[-1][1].synchronize()
        out = {}
        for (_, a), (name, b) in zip(self._marks, self._marks[1:]):
            out[name] = a.elapsed_time(b) / 1e3 if self.cuda else b - a
        return out


class PerfMeter:
    """Per-step throughput numbers for metrics rows, and their run medians for the summary.

    The first `warmup_steps` steps (compilation, autotuning, allocator growth) stay out of the medians.
    """

    def __init__(self, device: torch.device, n_params: int, tokens_per_step: int,
                 peak_tflops: float | None = None, warmup_steps: int = 3):
        self.device, self.n_params, self.tokens_per_step = device, n_params, tokens_per_step
        self.peak_flops = device_peak_flops(device, peak_tflops)
        self.warmup_steps = warmup_steps
        self.timer = StepTimer(device)
        self.step_times: list[float] = []
        self.splits: dict[str, list[float]] = {}
        self._seen = 0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def start(self) -> None:
        self.timer.start()

    def mark(self, name: str) -> None:
        self.timer.mark(name)

    def end_step(self, step_time_s: float, log: bool) -> dict:
        """Record one step's wall time (host clock after the step's loss was read back); on logged steps also
        read the event split. Returns the perf fields for the metrics row (empty when not logged)."""
        self._seen += 1
        counted = self._seen > self.warmup_steps
        if counted:
            self.step_times.append(step_time_s)
        if not log:
            return {}
        row = {"tokens_per_s": round(self.tokens_per_step / step_time_s, 1) if step_time_s > 0 else None}
        for name, seconds in self.timer.read().items():
            row[f"{name}_s"] = round(seconds, 5)
            if counted:
                self.splits.setdefault(name, []).append(seconds)
        m = mfu(self.n_params, row["tokens_per_s"], self.peak_flops)
        if m is not None:
            row["mfu"] = round(m, 4)
        mem = peak_memory_gib(self.device)
        if mem is not None:
            row["peak_mem_gib"] = round(mem, 2)
        return row

    def summary(self) -> dict:
        """Medians over the counted steps (fields are None when no step was counted)."""
        step = statistics.median(self.step_times) if self.step_times else None
        tps = self.tokens_per_step / step if step else None
        out = {"median_step_s": round(step, 4) if step else None,
               "median_tokens_per_s": round(tps, 1) if tps else None}
        for name, values in self.splits.items():
            out[f"median_{name}_s"] = round(statistics.median(values), 5)
        m = mfu(self.n_params, tps, self.peak_flops)
        out["mfu"] = round(m, 4) if m is not None else None
        out["peak_flops_tflops"] = self.peak_flops / 1e12 if self.peak_flops else None
        mem = peak_memory_gib(self.device)
        out["peak_mem_gib"] = round(mem, 2) if mem is not None else None
        return out


def peak_memory_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30
