"""The Granite presets build to the published sizes; the tiny one is a real Mamba2 + attention hybrid."""
import pytest
import torch
from omegaconf import OmegaConf

from orthonoise.errors import ConfigError
from orthonoise.lm.model import build_model, count_parameters, granite_config
from tests.conftest import CONF


def preset(name):
    return OmegaConf.load(CONF / "model" / f"{name}.yaml")


def meta_params(name) -> int:
    from transformers import GraniteMoeHybridForCausalLM

    with torch.device("meta"):
        return count_parameters(GraniteMoeHybridForCausalLM(granite_config(preset(name))))


def test_350m_config_gives_exactly_the_published_parameter_count():
    assert meta_params("granite-350m") == 340_332_224


def test_1b_config_gives_about_1_46b_parameters():
    assert abs(meta_params("granite-1b") - 1.46e9) < 0.01e9


def test_tiny_is_a_hybrid_that_takes_the_tokenizer_vocab():
    model = build_model(preset("tiny"), vocab_size=512)
    assert model.config.vocab_size == 512
    assert set(model.config.layer_types) == {"linear_attention", "full_attention"}
    logits = model(input_ids=torch.randint(512, (2, 16))).logits
    assert logits.shape == (2, 16, 512) and torch.isfinite(logits).all()


def test_tokenizer_larger_than_the_model_vocab_is_refused():
    with pytest.raises(ConfigError, match="vocab_size"):
        granite_config(preset("granite-350m"), vocab_size=200_000)


def test_pretrained_without_hub_fails_fast_and_clearly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = preset("granite-350m")
    cfg.hub_id = "no-such-org/no-such-model"
    with pytest.raises(ConfigError, match="cannot load pretrained weights"):
        build_model(cfg)
