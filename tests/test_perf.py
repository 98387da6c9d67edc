"""orthonoise.perf: peak-FLOPs lookup, MFU, the step timer, and the trainer's throughput fields; which blocks are
compiled, and the CUDA graph's refusal off CUDA (capture and replay themselves run on a GPU only: bench/gpu.sh)."""
import json
import logging

import pytest
import torch
from omegaconf import OmegaConf

from orthonoise.lm.loss import causal_lm_loss
from orthonoise.lm.model import build_model
from orthonoise.perf.compilation import compile_blocks
from orthonoise.perf.cuda_graph import try_cuda_graph
from orthonoise.perf.meter import PerfMeter, device_peak_flops, mfu, peak_bf16_flops
from tests.conftest import CONF, read_metrics


@pytest.mark.parametrize("name,tflops", [
    ("NVIDIA H100 80GB HBM3", 989), ("NVIDIA H100 PCIe", 756), ("NVIDIA H100 NVL", 835),
    ("NVIDIA H200", 989), ("NVIDIA A100-SXM4-80GB", 312), ("Some Future GPU", None), (None, None),
])
def test_peak_flops_by_device_name(name, tflops):
    peak = peak_bf16_flops(name)
    assert peak == (tflops * 1e12 if tflops else None)


def test_override_wins_and_mfu():
    assert peak_bf16_flops("NVIDIA H100 PCIe", override_tflops=500) == 500e12
    assert device_peak_flops(torch.device("cpu")) is None
    assert device_peak_flops(torch.device("cpu"), 1.0) == 1e12
    # 6 · 340M params · 40,960 tokens/s = 83.6 TFLOP/s = 8.45% of 989
    assert mfu(340_332_224, 40_960, 989e12) == pytest.approx(6 * 340_332_224 * 40_960 / 989e12)
    assert mfu(1, 1.0, None) is None


def test_meter_on_cpu():
    meter = PerfMeter(torch.device("cpu"), n_params=1000, tokens_per_step=100, peak_tflops=1e-9, warmup_steps=1)
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


def test_trainer_logs_throughput(trained_run):
    summary = json.loads((trained_run / "summary.json").read_text())  # the shared run sets hardware.peak_tflops=0.001
    rows = read_metrics(trained_run)
    trained = [r for r in rows if "train_loss" in r]
    assert {"tokens_per_s", "fwd_bwd_s", "optimizer_s", "mfu"} <= trained[-1].keys()
    assert summary["median_step_s"] > 0 and summary["median_fwd_bwd_s"] > 0 and summary["mfu"] > 0
    assert summary["peak_flops_tflops"] == 0.001


def tiny_model() -> torch.nn.Module:
    return build_model(OmegaConf.load(CONF / "model" / "tiny.yaml"), vocab_size=256)


def test_compile_blocks_marks_the_blocks_around_the_mamba_mixer():
    model = tiny_model()
    layers = model.model.layers
    attention = [layer.self_attn for layer in layers if getattr(layer, "self_attn", None) is not None]
    # Module.compile only wraps the call; Inductor runs at the first forward, which this test never makes.
    assert compile_blocks(model) == 3 * len(layers) + len(attention) + 1  # two norms and the MLP a layer, final norm
    compiled = [m for m in model.modules() if getattr(m, "_compiled_call_impl", None) is not None]
    assert set(map(id, compiled)) == set(map(id, [*attention, model.model.norm, *(
        m for layer in layers for m in (layer.input_layernorm, layer.post_attention_layernorm, layer.shared_mlp))]))
    assert not any(getattr(layer, "mamba", None) in compiled for layer in layers)


def test_cuda_graph_is_refused_off_cuda_with_a_warning(caplog):
    log = logging.getLogger("test_perf")
    with caplog.at_level(logging.WARNING, logger="test_perf"):
        graph = try_cuda_graph(tiny_model(), causal_lm_loss, torch.zeros(2, 9, dtype=torch.long), bf16=False,
                               grad_accum=1, world_size=1, log=log)
    assert graph is False and "forward+backward runs eagerly" in caplog.text
