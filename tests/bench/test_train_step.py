"""bench/train_step.py on the CPU: the tiny preset, user configuration vs ours, a couple of steps."""
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_train_step", ROOT / "bench" / "train_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_run_prints_the_ratio_table(tmp_path, capsys):
    bench = load_bench()
    rows = bench.main(["--device", "cpu", "--optimizers", "muon", "--steps", "1", "--warmup", "1",
                       "--seq", "16", "--batch", "1", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert [(r["who"], r["optimizer"], r["status"]) for r in rows] == [
        ("user", "muon-svd", "ok"), ("ours", "muon", "ok")]
    assert all(r["step_s"] > 0 and r["fwd_bwd_s"] > 0 and r["optimizer_s"] > 0 for r in rows)
    assert rows[0]["loss"] == "full" and rows[1]["loss"] == "fused"
    assert "| tiny | user | torch | full | 1×16 | muon-svd |" in out and "speed-up/token" in out
    saved = json.loads((tmp_path / "results.json").read_text())
    assert len(saved["rows"]) == 2 and (tmp_path / "table.md").read_text().startswith("device: cpu")


def test_optimizer_nodes_resolve_without_hydra():
    bench = load_bench()
    node = bench.optimizer_node("orthonoise", seed=3)
    assert node["_target_"] == "orthonoise.optim.OrthoNoise" and node["seed"] == 3
    assert node["momentum"] == 0.95 and node["schedule"] == "constant"  # from muon.yaml and noise/constant.yaml
    assert bench.optimizer_node("muon", orthogonalizer="svd")["orthogonalizer"] == "svd"
