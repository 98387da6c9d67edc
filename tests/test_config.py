"""Every option of every config group composes, and the composed values are the ones the contract names."""
import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from tests.conftest import CONF


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["model", "data", "optimizer", "noise", "hardware", "logger"])
def test_every_option_of_every_group_composes(compose_cfg, group):
    names = options(group)
    assert names, f"config group {group} is empty"
    for name in names:
        cfg = compose_cfg(f"{group}={name}")
        OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves


def test_defaults_are_the_embedded_cpu_run(compose_cfg):
    cfg = compose_cfg()
    assert cfg.model.preset == "tiny" and not cfg.model.pretrained
    assert cfg.data.name == "local" and cfg.hardware.device == "cpu" and cfg.logger.mode == "offline"
    assert cfg.optimizer._target_ == "orthonoise.optim.OrthoNoise"  # the method under study (README: why)
    for key in ("max_steps", "eval_every", "warmup_steps", "lr_decay", "checkpoint_every"):
        assert key in cfg.trainer


def test_granite_presets_carry_the_spec_values(compose_cfg):
    small = compose_cfg("model=granite-350m", "hardware=h100").model
    assert small.hub_id == "ibm-granite/granite-4.0-h-350m-base"
    assert (small.config.hidden_size, small.config.num_hidden_layers, small.config.vocab_size) == (768, 32, 100352)
    assert list(small.config.attention_layers) == [10, 13, 17, 27]
    large = compose_cfg("model=granite-1b").model
    assert (large.config.hidden_size, large.config.num_hidden_layers, large.config.logits_scaling) == (1536, 40, 6.0)


def test_h100x4_inherits_h100_with_four_processes(compose_cfg):
    hw = compose_cfg("hardware=h100x4").hardware
    assert (hw.device, hw.precision, hw.world_size) == ("cuda", "bf16", 4)


def test_typo_in_a_key_is_refused(compose_cfg):
    with pytest.raises(ConfigCompositionException):
        compose_cfg("trainer.max_step=5")
    with pytest.raises(ConfigCompositionException):
        compose_cfg("optimizer=muonn")
