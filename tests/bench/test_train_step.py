"""bench/train_step.py on the CPU: the tiny preset, user configuration vs ours, a couple of steps."""
import json
from pathlib import Path

import pytest

from tests.conftest import load_bench

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration  # the bench script trains the tiny model in this process
def test_cpu_run_prints_the_ratio_table(tmp_path, capsys):
    bench = load_bench("train_step")
    rows = bench.main(["--device", "cpu", "--optimizers", "muon,orthonoise:sampler=qr,isotropic:alpha=-1",
                       "--steps", "1", "--warmup", "1", "--seq", "16", "--batch", "1", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert [(r["who"], r["optimizer"], r["status"]) for r in rows] == [
        ("user", "muon-svd", "ok"), ("ours", "muon", "ok"), ("ours", "orthonoise:sampler=qr", "ok"),
        ("ours", "isotropic:alpha=-1", "error: ArgumentError: alpha must be ≥ 0, got -1")]  # the override arrives
    assert all(r["step_s"] > 0 and r["fwd_bwd_s"] > 0 and r["optimizer_s"] > 0 for r in rows[:3])
    assert rows[0]["loss"] == "full" and rows[1]["loss"] == "fused"
    assert "| tiny | user | torch | full | 1×16 | muon-svd |" in out and "speed-up/token" in out
    saved = json.loads((tmp_path / "results.json").read_text())
    assert len(saved["rows"]) == 4 and (tmp_path / "table.md").read_text().startswith("device: cpu")


def test_bench_optimizers_are_the_trainers():
    """The bench builds its optimizers through orthonoise.optim.build_optimizers on the composed config."""
    import torch
    from omegaconf import OmegaConf

    from orthonoise.lm.model import build_model
    from orthonoise.optim import OrthoNoise

    bench = load_bench("train_step")
    model = build_model(OmegaConf.load(ROOT / "conf" / "model" / "tiny.yaml"), vocab_size=64)
    matrices, rest = bench.build_optimizers(model, "orthonoise", orthogonalizer="svd")
    assert isinstance(matrices, OrthoNoise) and isinstance(rest, torch.optim.AdamW)
    group = matrices.param_groups[0]
    assert group["orthogonalizer"] == "svd" and group["momentum"] == 0.95 and group["schedule"] == "constant"


@pytest.mark.integration  # the bench script trains the tiny model in this process
def test_skip_user_leaves_out_the_users_configuration():
    bench = load_bench("train_step")
    rows = bench.main(["--device", "cpu", "--optimizers", "muon", "--skip-user", "tiny", "--steps", "1",
                       "--warmup", "1", "--seq", "16", "--batch", "1"])
    assert [(r["who"], r["optimizer"]) for r in rows] == [("ours", "muon")]
