"""Build a Granite-4.0-H hybrid (Mamba2 + attention) from a `model` config node."""
import logging

import torch
from omegaconf import DictConfig, OmegaConf

from orthonoise.errors import ConfigError

log = logging.getLogger(__name__)


def granite_config(model_cfg: DictConfig, vocab_size: int | None = None):
    """The transformers config of a preset; `vocab_size` fills a preset whose own is null."""
    from transformers import GraniteMoeHybridConfig

    kwargs = OmegaConf.to_container(model_cfg.config, resolve=True)
    attention = set(kwargs.pop("attention_layers"))
    n_layers = kwargs["num_hidden_layers"]
    if not attention or max(attention) >= n_layers:
        raise ConfigError(f"model.config.attention_layers {sorted(attention)} must name layers in [0, {n_layers})")
    kwargs["layer_types"] = ["full_attention" if i in attention else "linear_attention" for i in range(n_layers)]
    if kwargs.get("vocab_size") is None:
        if vocab_size is None:
            raise ConfigError("model.config.vocab_size is null and no tokenizer gave one")
        kwargs["vocab_size"] = vocab_size
    elif vocab_size is not None and vocab_size > kwargs["vocab_size"]:
        raise ConfigError(f"tokenizer has {vocab_size} tokens but model.config.vocab_size is {kwargs['vocab_size']}")
    return GraniteMoeHybridConfig(**kwargs)


def build_model(model_cfg: DictConfig, vocab_size: int | None = None) -> torch.nn.Module:
    """From-scratch init from config, or the hub weights when `model.pretrained` (fine-tuning)."""
    from transformers import GraniteMoeHybridForCausalLM

    mamba_kernel_path()  # hands mamba_ssm a conv1d kernel where causal-conv1d is missing
    if model_cfg.pretrained:
        if not model_cfg.hub_id:
            raise ConfigError(f"model.pretrained=true needs model.hub_id (preset {model_cfg.preset} has none)")
        try:
            model = GraniteMoeHybridForCausalLM.from_pretrained(model_cfg.hub_id, dtype=torch.float32)
        except OSError as err:
            raise ConfigError(
                f"cannot load pretrained weights '{model_cfg.hub_id}' (no hub access and no local copy in HF_HOME?): "
                f"{str(err).splitlines()[0]}. Use model.pretrained=false to train from scratch."
            ) from None
        model.config.mamba_chunk_size = model_cfg.config.mamba_chunk_size
    else:
        model = GraniteMoeHybridForCausalLM(granite_config(model_cfg, vocab_size))
    if model_cfg.activation_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def mamba_kernel_path() -> str:
    """Which Mamba2 implementation training takes: 'mamba_ssm+causal_conv1d' (fused Triton scan, CUDA conv),
    'mamba_ssm+triton_conv1d' (causal-conv1d missing: orthonoise's Triton conv stands in) or 'torch' (slow scan)."""
    from orthonoise.lm import kernels

    return kernels.install()
