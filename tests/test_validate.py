"""Bad input: one message naming the key, the bad value and what is allowed, before any compute."""
import pytest
import torch

from orthonoise import validate as validate_module
from orthonoise.errors import ConfigError
from orthonoise.validate import validate
from tests.conftest import FAST

BAD_INPUTS = [  # (overrides, what the message must say)
    (["optimizer=orthonoise", "optimizer.alpha=-0.1"], "optimizer.alpha=-0.1 is out of range: must be ≥ 0"),
    (["optimizer=orthonoise", "optimizer.rank_threshold=1.5"], "optimizer.rank_threshold=1.5 is out of range: must be in (0, 1]"),
    (["optimizer=isotropic", "optimizer.ns_steps_noise=0"], "optimizer.ns_steps_noise=0 is out of range: must be an integer ≥ 1"),
    (["optimizer=orthonoise", "noise=linear", "noise.end_factor=-1"], "noise.end_factor=-1 is out of range: must be ≥ 0"),
    (["optimizer=orthonoise", "noise=cosine", "noise.steps=0"], "noise.steps=0 is out of range: must be ≥ 1"),
    (["optimizer=nolah", "optimizer.percentile=100"], "optimizer.percentile=100 is out of range: must be in (0, 100)"),
    (["optimizer=orthonoise", "optimizer.alpha=1e-3x"], "optimizer.alpha='1e-3x' is out of range: must be a number"),
    (["optimizer._target_=orthonoise.optim.Nope"], "optimizer._target_='orthonoise.optim.Nope' cannot be imported"),
    (["optimizer.ns_steps=0"], "optimizer.ns_steps=0 is out of range: must be an integer ≥ 1"),
    (["optimizer.orthogonalizer=qr"], "optimizer.orthogonalizer='qr' is out of range: must be one of"),
    (["optimizer.momentum=1.0"], "optimizer.momentum=1.0 is out of range: must be in [0, 1)"),
    (["optimizer.lr=-0.02"], "optimizer.lr=-0.02 is out of range: must be a number > 0"),
    (["optimizer=adamw", "optimizer.lr=0"], "optimizer.lr=0 is out of range: must be a number > 0"),
    (["adamw.lr=-1"], "adamw.lr=-1 is out of range: must be a number > 0"),
    (["trainer.max_steps=0"], "trainer.max_steps=0 is out of range: must be an integer ≥ 1"),
    (["trainer.max_steps=1.5"], "trainer.max_steps=1.5 is out of range: must be an integer ≥ 1"),
    (["trainer.checkpoint_every=0"], "trainer.checkpoint_every=0 is out of range: must be an integer ≥ 1"),
    (["trainer.keep_checkpoints=0"], "trainer.keep_checkpoints=0 is out of range"),
    (["trainer.skip_nonfinite=-1"], "trainer.skip_nonfinite=-1 is out of range: must be an integer ≥ 0"),
    (["trainer.grad_clip=0"], "trainer.grad_clip=0 is out of range: must be a number > 0 or null"),
    (["trainer.lr_decay=step"], "trainer.lr_decay='step' is out of range: must be one of constant, linear, cosine"),
    (["trainer.min_lr_ratio=2"], "trainer.min_lr_ratio=2 is out of range: must be a number in [0, 1]"),
    (["hardware.batch_size=0"], "hardware.batch_size=0 is out of range: must be an integer ≥ 1"),
    (["hardware.grad_accum=-2"], "hardware.grad_accum=-2 is out of range"),
    (["hardware.precision=fp16"], "hardware.precision='fp16' is out of range: must be one of fp32, bf16"),
    (["data.seq_len=4096"], "data.seq_len=4096 is out of range: model=tiny supports at most 2048 tokens"),
    (["data.seq_len=1"], "data.seq_len=1 is out of range: must be an integer ≥ 2"),
    (["data.val_fraction=1.5"], "data.val_fraction=1.5 is out of range: must be a number in (0, 1)"),
    (["data.path=/no/such/folder"], "data.path='/no/such/folder' does not exist (expected a .txt file or a folder"),
    (["data=fineweb-edu"], "data.tokenizer is null: data=fineweb-edu uses the model's tokenizer (model.hub_id)"),
    (["model.config.num_attention_heads=5"], "model.config.num_attention_heads=5 is out of range: must divide model.config.hidden_size=192"),
    (["model.config.num_key_value_heads=4"], "model.config.num_key_value_heads=4 is out of range: must divide model.config.num_attention_heads=6"),
    (["model.config.hidden_size=-5"], "model.config.hidden_size=-5 is out of range: must be an integer ≥ 1"),
    (["model.config.mamba_n_heads=7"], "model.config (model=tiny) is inconsistent: ValueError: mamba_n_heads must divide"),
    (["model.config.attention_layers=[9]"], "model.config.attention_layers [9] must name layers in [0, 4)"),
    (["optimizer=nolah", "optimizer.gate=maybe"], "optimizer.gate='maybe' is out of range: must be true or false"),
    (["hardware.world_size=2"], "hardware.world_size=2 (hardware=cpu) but 1 process(es) were launched"),
    (["seed=-3"], "seed=-3 is out of range: must be an integer ≥ 0"),
]


@pytest.mark.parametrize("overrides,message", BAD_INPUTS, ids=[" ".join(o) for o, _ in BAD_INPUTS])
def test_bad_input_names_key_value_and_what_is_allowed(compose_cfg, overrides, message):
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg(*overrides))
    assert str(err.value).startswith(message)


def test_a_gpu_preset_on_a_cpu_box(compose_cfg):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="hardware=h100 needs a CUDA GPU but none is visible here; use hardware=cpu"):
        validate(compose_cfg("hardware=h100"))


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No hub and an empty hub cache, whatever this machine has."""
    monkeypatch.setattr(validate_module.hub, "hub_reachable", lambda: False)
    monkeypatch.setattr(validate_module.hub, "in_local_cache", lambda repo, kind="model": False)


def test_pretrained_weights_offline_say_how_to_get_them(compose_cfg, offline):
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg("model=granite-350m", "model.pretrained=true"))
    message = str(err.value)
    assert message.startswith("model.hub_id='ibm-granite/granite-4.0-h-350m-base' needs the Hugging Face hub")
    assert "hf download ibm-granite/granite-4.0-h-350m-base" in message and "model.pretrained=false" in message


def test_streaming_dataset_offline_says_how_to_make_it_local(compose_cfg, offline, monkeypatch):
    monkeypatch.setattr(validate_module.hub, "in_local_cache", lambda repo, kind="model": kind == "model")
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg("data=fineweb-edu", "model=granite-350m"))
    message = str(err.value)
    assert message.startswith("data.path='HuggingFaceFW/fineweb-edu' needs the Hugging Face hub")
    assert "--repo-type dataset" in message and "data.streaming=false" in message and "data=local" in message


def test_hub_presets_pass_when_the_hub_is_reachable(compose_cfg, monkeypatch):
    monkeypatch.setattr(validate_module.hub, "hub_reachable", lambda: True)
    validate(compose_cfg("data=fineweb-edu", "model=granite-1b", "model.pretrained=true"))


@pytest.mark.parametrize("group,options", [
    ("optimizer", ["muon", "adamw", "orthonoise", "isotropic", "nolah"]),
    ("noise", ["constant", "linear", "exponential", "cosine"]),
    ("model", ["tiny", "granite-350m", "granite-1b"]),
])
def test_every_shipped_option_is_valid(compose_cfg, monkeypatch, group, options):
    monkeypatch.setattr(validate_module.hub, "hub_reachable", lambda: True)  # the granite presets load hub weights
    for option in options:
        validate(compose_cfg(f"{group}={option}", "optimizer=orthonoise" if group == "noise" else "seed=0"))


def test_the_trainer_validates_before_any_compute(compose_cfg, tmp_path, monkeypatch):
    from orthonoise import trainer

    def no_compute(*args, **kwargs):
        raise AssertionError("compute started before the config was checked")

    monkeypatch.setattr(trainer, "load_corpus", no_compute)
    monkeypatch.setattr(trainer, "build_model", no_compute)
    with pytest.raises(ConfigError, match="optimizer.alpha"):
        trainer.train(compose_cfg(*FAST, "optimizer=orthonoise", "optimizer.alpha=-1"), tmp_path)
    assert not (tmp_path / "metrics.jsonl").exists()
