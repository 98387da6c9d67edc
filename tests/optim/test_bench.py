"""bench/optimizer.py's hand-written matrix shapes are the ones the real Granite presets build."""
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from orthonoise.lm.model import granite_config
from orthonoise.optim.params import split_parameters
from tests.conftest import load_bench

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("preset,yaml,params,matrices", [
    ("350m", "granite-350m", 340_332_224, 136),
    ("1b", "granite-1b", None, 168),
])
def test_bench_shapes_are_the_models(preset, yaml, params, matrices):
    from transformers import GraniteMoeHybridForCausalLM

    with torch.device("meta"):
        model = GraniteMoeHybridForCausalLM(granite_config(OmegaConf.load(ROOT / "conf" / "model" / f"{yaml}.yaml")))
    if params is not None:
        assert sum(p.numel() for p in model.parameters()) == params
    hidden, _ = split_parameters(model)
    bench = load_bench("optimizer")
    shapes = bench.matrix_shapes(**bench.PRESETS[preset])
    assert [tuple(p.shape) for _, p in hidden] == shapes and len(shapes) == matrices
