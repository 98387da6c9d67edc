"""orthonoise.perf: peak-FLOPs lookup, MFU, the step timer, and the trainer's throughput fields."""
import json

import pytest
import torch

from orthonoise import perf
from orthonoise.trainer import train
from tests.conftest import FAST


@pytest.mark.parametrize("name,tflops", [
    ("NVIDIA H100 80GB HBM3", 989), ("NVIDIA H100 PCIe", 756), ("NVIDIA H100 NVL", 835),
    ("NVIDIA H200", 989), ("NVIDIA A100-SXM4-80GB", 312), ("Some Future GPU", None), (None, None),
])
def test_peak_flops_by_device_name(name, tflops):
    peak = perf.peak_bf16_flops(name)
    assert peak == (tflops * 1e12 if tflops else None)


def test_override_wins_and_mfu():
    assert perf.peak_bf16_flops("NVIDIA H100 PCIe", override_tflops=500) == 500e12
    assert perf.device_peak_flops(torch.device("cpu")) is None
    assert perf.device_peak_flops(torch.device("cpu"), 1.0) == 1e12
    # 6 · 340M params · 40,960 tokens/s = 83.6 TFLOP/s = 8.45% of 989
    assert perf.mfu(340_332_224, 40_960, 989e12) == pytest.approx(6 * 340_332_224 * 40_960 / 989e12)
    assert perf.mfu(1, 1.0, None) is None


def test_meter_on_cpu():
    meter = perf.PerfMeter(torch.device("cpu"), n_params=1000, tokens_per_step=100, peak_tflops=1e-9, warmup_steps=1)
    for _ in range(3):
        meter.start()
        torch.randn(64, 64) @ torch.randn(64, 64)
        meter.mark("fwd_bwd")
        meter.mark("optimizer")
        row = meter.end_step(0.5, log=True)
    assert row["tokens_per_s"] == 200.0 and row["fwd_bwd_s"] >= 0 and row["optimizer_s"] >= 0
    assert row["mfu"] == pytest.approx(6 * 1000 * 200 / 1e3, rel=1e-3)
    summary = meter.summary()
    assert summary["median_step_s"] == 0.5 and summary["median_tokens_per_s"] == 200.0
    assert {"median_fwd_bwd_s", "median_optimizer_s", "peak_mem_gib", "mfu"} <= summary.keys()


def test_trainer_logs_throughput(compose_cfg, tmp_path):
    cfg = compose_cfg(*FAST, "trainer.max_steps=5", "+hardware.peak_tflops=0.001")
    summary = train(cfg, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in rows if "train_loss" in r]
    assert {"tokens_per_s", "fwd_bwd_s", "optimizer_s", "mfu"} <= trained[-1].keys()
    assert summary["median_step_s"] > 0 and summary["median_fwd_bwd_s"] > 0 and summary["mfu"] > 0
    assert summary["peak_flops_tflops"] == 0.001
