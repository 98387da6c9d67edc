"""Every mistake a config can hold, found before any compute.

`validate(cfg)` raises one ConfigError whose message names the key, the bad value and what is allowed;
train.py prints it as a single `error:` line (no traceback) and exits non-zero. Unknown keys and group
options never get here: Hydra refuses them with its own message.
"""
from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Callable

import torch
from omegaconf import DictConfig, OmegaConf

from orthonoise import hub
from orthonoise.errors import ArgumentError, ConfigError


def _int(low: int) -> tuple[Callable, str]:
    return (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low), f"an integer ≥ {low}"


def _number(test: Callable, allowed: str) -> tuple[Callable, str]:
    return (lambda v: _is_number(v) and test(v)), allowed


def _optional(rule: tuple[Callable, str]) -> tuple[Callable, str]:
    return (lambda v: v is None or rule[0](v)), rule[1] + " or null"


def _one_of(*choices: str) -> tuple[Callable, str]:
    return (lambda v: v in choices), "one of " + ", ".join(choices)


# key → (test, what is allowed). The optimizers check their own arguments (see _check_optimizer).
RULES: dict[str, tuple[Callable, str]] = {
    "seed": _int(0),
    "trainer.max_steps": _int(1),
    "trainer.warmup_steps": _int(0),
    "trainer.lr_decay": _one_of("constant", "linear", "cosine"),
    "trainer.min_lr_ratio": _number(lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "trainer.grad_clip": _optional(_number(lambda v: v > 0, "a number > 0")),
    "trainer.eval_every": _int(1),
    "trainer.eval_batches": _int(0),
    "trainer.final_eval_batches": _int(0),
    "trainer.log_every": _int(1),
    "trainer.checkpoint_every": _int(1),
    "trainer.keep_checkpoints": _int(1),
    "trainer.diverge_loss": _number(lambda v: v > 0, "a number > 0"),
    "trainer.skip_nonfinite": _int(0),
    "hardware.precision": _one_of("fp32", "bf16"),
    "hardware.batch_size": _int(1),
    "hardware.grad_accum": _int(1),
    "hardware.world_size": _int(1),
    "hardware.num_threads": _optional(_int(1)),
    "data.seq_len": _int(2),
    "data.val_fraction": _number(lambda v: 0 < v < 1, "a number in (0, 1)"),
    "data.num_examples": _optional(_int(1)),
    "optimizer.lr": _number(lambda v: v > 0, "a number > 0"),
    "adamw.lr": _number(lambda v: v > 0, "a number > 0"),
}


def validate(cfg: DictConfig, world_size: int = 1) -> None:
    """All checks, cheapest first; `world_size` is the number of processes actually launched."""
    validate_settings(cfg)
    _check_hardware(cfg.hardware, world_size)
    _check_hub(cfg)


def validate_settings(cfg: DictConfig) -> None:
    """The checks that hold on any machine (the sweep preflight runs these on a login node)."""
    for key, (test, allowed) in RULES.items():
        value = OmegaConf.select(cfg, key, throw_on_missing=True)
        if not test(value):
            raise ConfigError(f"{key}={value!r} is out of range: must be {allowed}")
    _check_sequence_length(cfg)
    _check_model(cfg.model)
    _check_optimizer(cfg, "optimizer")
    _check_optimizer(cfg, "adamw")
    _check_data_path(cfg.data)


def _check_sequence_length(cfg: DictConfig) -> None:
    limit = cfg.model.config.get("max_position_embeddings")
    if limit and cfg.data.seq_len > limit:
        raise ConfigError(f"data.seq_len={cfg.data.seq_len} is out of range: model={cfg.model.preset} supports "
                          f"at most {limit} tokens (model.config.max_position_embeddings)")


def _check_model(model: DictConfig) -> None:
    """The architecture's arithmetic, on the config alone (no weights are built)."""
    from orthonoise.model import granite_config

    c = model.config
    test, allowed = _int(1)
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "mamba_n_heads",
                "mamba_d_head", "mamba_d_state", "mamba_n_groups", "mamba_d_conv", "intermediate_size"):
        if key in c and not test(c[key]):
            raise ConfigError(f"model.config.{key}={c[key]!r} is out of range: must be {allowed}")
    for part, whole in (("num_attention_heads", "hidden_size"), ("num_key_value_heads", "num_attention_heads")):
        if c[whole] % c[part]:
            raise ConfigError(f"model.config.{part}={c[part]} is out of range: must divide "
                              f"model.config.{whole}={c[whole]}")
    try:  # transformers' own checks; the vocabulary size is irrelevant here
        granite_config(model, vocab_size=None if c.vocab_size else 256)
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - transformers raises several types (a strict-dataclass error, ValueError)
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise ConfigError(f"model.config (model={model.preset}) is inconsistent: {lines[-1]}") from None


def _check_hardware(hw: DictConfig, world_size: int) -> None:
    if hw.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"hardware={hw.name} needs a CUDA GPU but none is visible here; use hardware=cpu")
    if hw.device == "cuda" and hw.world_size > torch.cuda.device_count():
        raise ConfigError(f"hardware={hw.name} needs {hw.world_size} GPUs (hardware.world_size), "
                          f"{torch.cuda.device_count()} visible")
    if hw.world_size != world_size:
        raise ConfigError(
            f"hardware.world_size={hw.world_size} (hardware={hw.name}) but {world_size} process(es) were launched: "
            f"launch with `torchrun --nproc_per_node {hw.world_size} train.py ...` or a submitit_slurm launcher "
            f"with tasks_per_node={hw.world_size}, or set hardware.world_size={world_size}"
        )


def _check_optimizer(cfg: DictConfig, node: str) -> None:
    """Build the optimizer on one dummy matrix: its constructor checks every argument and raises ArgumentError
    naming the argument, which becomes the config key (or the key it is interpolated from, e.g. noise.*)."""
    from hydra.utils import get_class, instantiate

    raw = OmegaConf.to_container(cfg[node], resolve=False)

    def key_of(arg: str) -> str:
        source = raw.get(arg)
        return source[2:-1] if isinstance(source, str) and source.startswith("${") else f"{node}.{arg}"

    try:
        cls = get_class(cfg[node]._target_)
    except Exception as err:  # noqa: BLE001 - hydra raises ImportError or ValueError, wrapped differently by version
        raise ConfigError(f"{node}._target_={cfg[node]._target_!r} cannot be imported: {str(err).splitlines()[0]}") from None
    for name, default in _defaults(cls).items():  # a number given as text (alpha=1e-3x), a flag as a word
        value = cfg[node].get(name)
        if name not in raw or value is None:
            continue
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"{key_of(name)}={value!r} is out of range: must be true or false")
        if _is_number(default) and not _is_number(value):
            raise ConfigError(f"{key_of(name)}={value!r} is out of range: must be a number")
    try:
        instantiate(cfg[node], _convert_="all")([torch.nn.Parameter(torch.zeros(2, 2))])
    except ArgumentError as err:  # names the constructor argument: the key it came from, and the config's value
        if err.name in raw:
            value = OmegaConf.select(cfg, f"{node}.{err.name}")
            raise ConfigError(f"{key_of(err.name)}={value!r} is out of range: must be {err.requirement}") from None
        raise ConfigError(f"{node} ({cfg[node]._target_}): {err}") from None
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{node} ({cfg[node]._target_}): {str(err).splitlines()[0]}") from None


def _defaults(cls) -> dict:
    """Keyword defaults of a class's constructor, including those its subclasses pass on through **kwargs."""
    defaults = {}
    for klass in reversed(cls.__mro__):
        if "__init__" in vars(klass):
            for name, param in inspect.signature(klass.__init__).parameters.items():
                if param.default is not inspect.Parameter.empty:
                    defaults[name] = param.default
    return defaults


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _looks_local(path: str) -> bool:
    return path.startswith(("/", "./", "../", "~")) or Path(path).exists()


def _check_data_path(data: DictConfig) -> None:
    if not data.tokenizer:
        raise ConfigError(f"data.tokenizer is null: data={data.name} uses the model's tokenizer (model.hub_id), and "
                          f"this model has none; set data.tokenizer=<hub id or local folder>, or use data=local")
    path = data.get("path")
    if path and _looks_local(path) and not Path(path).expanduser().exists():
        what = ("a .txt file or a folder of .txt files" if data.name == "local"
                else "a local dataset folder, or a hub dataset id such as HuggingFaceFW/fineweb-edu")
        raise ConfigError(f"data.path={path!r} does not exist (expected {what})")


def _check_hub(cfg: DictConfig) -> None:
    """What only the Hugging Face hub can supply must be reachable, or already in the local cache."""
    needed = []
    if cfg.model.pretrained:
        needed.append(("model.hub_id", cfg.model.hub_id, "model"))
    if cfg.data.name != "local" and cfg.data.tokenizer != "bpe" and not _looks_local(cfg.data.tokenizer):
        needed.append(("data.tokenizer", cfg.data.tokenizer, "model"))
    if cfg.data.name != "local" and not _looks_local(cfg.data.path):
        needed.append(("data.path", cfg.data.path, "dataset"))
    missing = [(key, repo, kind) for key, repo, kind in needed
               if kind == "dataset" and cfg.data.streaming or not hub.in_local_cache(repo, kind)]
    if not missing or hub.hub_reachable():
        return
    key, repo, kind = missing[0]
    if kind == "dataset":
        how = (f"on a machine with internet run `hf download {repo} --repo-type dataset --include "
               f"'sample/10BT/000_*' --local-dir DIR`, copy DIR here and set data.path=DIR data.streaming=false; "
               f"or train on data=local")
    else:
        how = (f"on a machine with internet run `hf download {repo}`, then copy its cache "
               f"({os.environ.get('HF_HOME', '~/.cache/huggingface')}) here or point HF_HOME at a copy")
        if key == "model.hub_id":
            how += "; or train from scratch with model.pretrained=false"
    raise ConfigError(f"{key}={repo!r} needs the Hugging Face hub, which cannot be reached from this machine, and "
                      f"there is no local copy. To make it available: {how}")
