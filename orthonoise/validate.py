"""Every mistake a config can hold, found before any compute.

`validate(cfg)` raises one ConfigError whose message names the key, the bad value and what is allowed;
train.py prints it as a single `error:` line (no traceback) and exits non-zero. Unknown keys and group
options never get here: Hydra refuses them with its own message.
"""
from __future__ import annotations

import difflib
import errno
import functools
import inspect
import logging
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable

import torch
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from orthonoise import REPO_ROOT
from orthonoise.errors import ArgumentError, ConfigError
from orthonoise.lm import hub


def _int(low: int) -> tuple[Callable, str]:
    return (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low), f"an integer ≥ {low}"


def _number(test: Callable, allowed: str) -> tuple[Callable, str]:
    return (lambda v: _is_number(v) and test(v)), allowed


def _optional(rule: tuple[Callable, str]) -> tuple[Callable, str]:
    return (lambda v: v is None or rule[0](v)), rule[1] + " or null"


def _one_of(*choices: str) -> tuple[Callable, str]:
    return (lambda v: v in choices), "one of " + ", ".join(choices)


def _int_in(low: int, high: int, high_text: str) -> tuple[Callable, str]:
    return (lambda v: _int(low)[0](v) and v < high), f"an integer in [{low}, {high_text})"


# key → (test, what is allowed). The optimizers check their own arguments (see _check_optimizer).
RULES: dict[str, tuple[Callable, str]] = {
    "seed": _int_in(0, 2**64, "2^64"),  # torch.manual_seed's range
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
    "hardware.device": _one_of("cpu", "cuda"),
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
    "logger.mode": _one_of("online", "offline", "disabled"),
}


def validate(cfg: DictConfig, world_size: int = 1) -> None:
    """All checks, cheapest first; `world_size` is the number of processes actually launched."""
    validate_settings(cfg)
    _check_hardware(cfg.hardware, world_size)
    check_writable_dir("data.cache_dir", cfg.data.cache_dir)
    _check_hub(cfg)


def validate_settings(cfg: DictConfig) -> None:
    """The checks that hold on any machine (the sweep preflight runs these on a login node)."""
    check_known_keys(cfg)
    check_value_types(cfg)
    check_finite(cfg)
    for key, (test, allowed) in RULES.items():
        value = OmegaConf.select(cfg, key, throw_on_missing=True)
        if not test(value):
            raise ConfigError(f"{key}={value!r} is out of range: must be {allowed}")
    check_consistency(cfg)
    check_top_level_keys(cfg)
    _check_sequence_length(cfg)
    _check_model(cfg.model)
    _check_optimizer(cfg, "optimizer")
    _check_optimizer(cfg, "adamw")
    _check_data_path(cfg.data)


ROOT = REPO_ROOT


def check_top_level_keys(cfg: DictConfig) -> None:
    """A top-level key that no config file declares (`+preset=tiny` without `-cd sweeps`, `+sed=3`) would be
    carried along and read by nothing: the run would silently be another run than the one asked for."""
    known = _declared_top_level_keys()
    unknown = sorted(key for key in cfg if key not in known)
    if not unknown:
        return
    key = unknown[0]
    hint = (f"; {key} is a config group of sweeps/: it needs `-cd sweeps -cn <sweep>`, "
            f"e.g. python train.py -m -cd sweeps -cn phase31 +{key}=..." if (ROOT / "sweeps" / key).is_dir() else "")
    raise ConfigError(f"{key}={OmegaConf.select(cfg, key)!r} is not a setting: the top-level keys are "
                      f"{', '.join(sorted(known - {'hydra'}))}{hint}")


@functools.cache
def _declared_top_level_keys() -> frozenset[str]:
    """conf/config.yaml's keys and config groups, and the keys the sweep files add (objective, ...)."""
    keys = {"hydra"}
    for path in [ROOT / "conf" / "config.yaml", *sorted((ROOT / "sweeps").glob("*.yaml"))]:
        raw = OmegaConf.load(path)
        keys.update(key for key in raw if key != "defaults")
        if path.parent.name == "conf":
            keys.update(next(iter(entry)) for entry in raw.defaults if isinstance(entry, DictConfig))
    return frozenset(keys)


def _check_sequence_length(cfg: DictConfig) -> None:
    limit = cfg.model.config.get("max_position_embeddings")
    if limit and cfg.data.seq_len > limit:
        raise ConfigError(f"data.seq_len={cfg.data.seq_len} is out of range: model={cfg.model.preset} supports "
                          f"at most {limit} tokens (model.config.max_position_embeddings)")


def _check_model(model: DictConfig) -> None:
    """The architecture's arithmetic, on the config alone (no weights are built)."""
    from orthonoise.lm.model import granite_config

    c = model.config
    _check_attention_layers(c)
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
        first_line = str(err).splitlines()[0]
        raise ConfigError(f"{node}._target_={cfg[node]._target_!r} cannot be imported: {first_line}") from None
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
    tokenizer = data.tokenizer
    if tokenizer != "bpe" and _looks_local(tokenizer) and not Path(tokenizer).expanduser().is_dir():
        raise ConfigError(f"data.tokenizer={tokenizer!r} does not exist (expected bpe, a hub id, or a local folder "
                          f"holding tokenizer.json / tokenizer_config.json)")
    if path and data.name == "local":
        from orthonoise.lm.data import read_local_texts

        read_local_texts(path)  # binary or non-UTF-8 files are named now, not tokenized as noise


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
               f"'sample/10BT/000_*' --local-dir DIR`, copy DIR here and set data.path=DIR data.config_name=null "
               f"data.streaming=false; "
               f"or train on data=local")
    else:
        how = (f"on a machine with internet run `hf download {repo}`, then copy its cache "
               f"({os.environ.get('HF_HOME', '~/.cache/huggingface')}) here or point HF_HOME at a copy")
        if key == "model.hub_id":
            how += "; or train from scratch with model.pretrained=false"
    raise ConfigError(f"{key}={repo!r} needs the Hugging Face hub, which cannot be reached from this machine, and "
                      f"there is no local copy. To make it available: {how}")


# ---- Keys, types, finiteness, cross-checks, files and folders (the bad inputs of docs/faults.md) ----
# The shipped configs are the schema: a key no option of its group (or section of conf/config.yaml) defines is a
# typo, and a key every option gives as true/false (a number) takes only true/false (a number).

CONF_DIR = ROOT / "conf"
GROUPS = ("model", "data", "optimizer", "noise", "hardware", "logger")  # conf/<group>/<option>.yaml
SECTIONS = ("trainer", "adamw")  # plain nodes of conf/config.yaml
FREE_FORM = ("hardware.step_time_s",)  # keyed by model preset: any name is fine
BPE_MIN_VOCAB = 257  # a byte-level BPE starts from the 256 byte tokens, plus <|endoftext|>


def _leaves(node, prefix: str):
    """(dotted key, value) of every entry of a plain container, dicts included, depth first."""
    for key, value in node.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        yield dotted, value
        if isinstance(value, dict):
            yield from _leaves(value, dotted)


@functools.cache
def shipped_values() -> dict[str, list]:
    """Every value any shipped option gives each dotted key of the groups and sections (interpolations raw)."""
    values: dict[str, list] = {}
    sources = [(group, OmegaConf.load(f)) for group in GROUPS for f in sorted((CONF_DIR / group).glob("*.yaml"))]
    root = OmegaConf.load(CONF_DIR / "config.yaml")
    sources += [(section, root[section]) for section in SECTIONS]
    for group, node in sources:
        for key, value in _leaves(OmegaConf.to_container(node, resolve=False), group):
            if key != f"{group}.defaults":
                values.setdefault(key, []).append(value)
    return values


def _constructor_arguments(target: str) -> set[str] | None:
    """The keyword arguments an optimizer class takes (its own and its bases'), or None if it cannot be imported."""
    from hydra.utils import get_class

    try:
        cls = get_class(target)
    except Exception:  # noqa: BLE001 - _check_optimizer reports an unimportable _target_
        return None
    return {"_target_", "_partial_", *_defaults(cls)} - {"self", "params"}


def _known_at(parent: str, raw_node: dict) -> set[str] | None:
    """The keys allowed directly under `parent`; None when any key is."""
    if parent in ("optimizer", "adamw"):
        return _constructor_arguments(str(raw_node.get("_target_")))
    if parent in FREE_FORM:
        return None
    known = {key.rsplit(".", 1)[1] for key in shipped_values() if key.rsplit(".", 1)[0] == parent}
    if parent == "model.config":  # any GraniteMoeHybridConfig argument, not only those the presets set
        from transformers import GraniteMoeHybridConfig

        known |= set(GraniteMoeHybridConfig().to_dict()) | set(inspect.signature(GraniteMoeHybridConfig).parameters)
    return known or None  # a mapping the shipped configs never open (e.g. model.config.rope_parameters) is free


def check_known_keys(cfg: DictConfig) -> None:
    """A key inside a group or section that no shipped option defines (`+trainer.max_stepz=5`, a typo in a sweep
    file) is refused, with the nearest known key. Unknown top-level keys are checked elsewhere."""
    raw = OmegaConf.to_container(cfg, resolve=False)
    for section in GROUPS + SECTIONS:
        nodes = [(section, raw.get(section))]
        while nodes:
            parent, node = nodes.pop()
            if not isinstance(node, dict):
                continue
            known = _known_at(parent, node)
            for key, value in node.items():
                if known is not None and key not in known:
                    close = difflib.get_close_matches(key, known, n=1)
                    hint = f" (did you mean {parent}.{close[0]}?)" if close else ""
                    raise ConfigError(f"{parent}.{key}={value!r} is not a setting{hint}: {parent} takes "
                                      f"{_known_text(parent, known)}")
                if parent not in ("optimizer", "adamw"):
                    nodes.append((f"{parent}.{key}", value))


def _known_text(parent: str, known: set[str]) -> str:
    if parent == "model.config":  # the transformers config has dozens: name the shipped ones
        shipped = {key.rsplit(".", 1)[1] for key in shipped_values() if key.rsplit(".", 1)[0] == parent}
        return ", ".join(sorted(shipped)) + " or any other transformers.GraniteMoeHybridConfig argument"
    return ", ".join(sorted(k for k in known if not k.startswith("_")))


def check_value_types(cfg: DictConfig) -> None:
    """A key that every shipped option sets to true/false (to a number) takes only that (or null where shipped)."""
    raw = OmegaConf.to_container(cfg, resolve=False)
    for key, value in _leaves(raw, ""):
        shipped = [v for v in shipped_values().get(key, []) if not _is_interpolation(v)]
        typed = [v for v in shipped if v is not None]
        if not typed or _is_interpolation(value) or (value is None and len(typed) < len(shipped)):
            continue
        if all(isinstance(v, bool) for v in typed) and not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} is out of range: must be true or false")
        if all(_is_number(v) for v in typed) and not _is_number(value):
            raise ConfigError(f"{key}={value!r} is out of range: must be a number")


def clamp_warmup(cfg: DictConfig) -> None:
    """A run shorter than its warmup (a smoke test: `trainer.max_steps=5` alone) warms up over all its steps,
    with one warning line, instead of being refused. Changes `cfg` in place, so the run's record (identity,
    `.hydra/config.yaml`) holds the warmup it ran with; a second call changes nothing."""
    trainer = cfg.trainer
    warmup, steps = trainer.get("warmup_steps"), trainer.get("max_steps")
    if all(isinstance(v, int) and not isinstance(v, bool) for v in (warmup, steps)) and warmup > steps >= 1:
        logging.getLogger(__name__).warning(
            "trainer.warmup_steps=%d is more than trainer.max_steps=%d: the learning rate warms up over all %d "
            "steps (trainer.warmup_steps=%d)", warmup, steps, steps, steps)
        trainer.warmup_steps = steps


def check_finite(cfg: DictConfig) -> None:
    """NaN and ±inf are no setting's meaning; reported where they are set, not where they are interpolated to."""
    for key, value in _leaves(OmegaConf.to_container(cfg, resolve=False), ""):
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, float) and not math.isfinite(item):
                raise ConfigError(f"{key}={value!r} is out of range: must be a finite number")


def check_consistency(cfg: DictConfig) -> None:
    """Settings that are each fine alone but contradict another, or are only sometimes present."""
    for node in ("optimizer", "adamw"):
        betas = cfg[node].get("betas")
        if betas is not None and not (len(betas) == 2 and all(_is_number(b) and 0 <= b < 1 for b in betas)):
            raise ConfigError(f"{node}.betas={list(betas)!r} is out of range: must be two numbers in [0, 1), "
                              f"e.g. [0.9, 0.95]")
    names = sorted({v for v in shipped_values()["data.name"]})
    if cfg.data.name not in names:
        raise ConfigError(f"data.name={cfg.data.name!r} is out of range: must be one of {', '.join(names)} "
                          f"(it says how data.path is read; pick the data group instead, e.g. data=local)")
    vocab, model_vocab = cfg.data.get("vocab_size"), cfg.model.config.get("vocab_size")
    if cfg.data.tokenizer == "bpe" and not (_int(BPE_MIN_VOCAB)[0](vocab)):
        raise ConfigError(f"data.vocab_size={vocab!r} is out of range: must be an integer ≥ {BPE_MIN_VOCAB} "
                          f"(the 256 byte tokens and <|endoftext|> of data.tokenizer=bpe)")
    if cfg.data.tokenizer == "bpe" and model_vocab is not None and model_vocab < vocab:
        raise ConfigError(f"model.config.vocab_size={model_vocab} is out of range: must be ≥ data.vocab_size={vocab} "
                          f"(the tokenizer's size), or null to take the tokenizer's")
    if not (OmegaConf.is_list(cfg.tags) and all(isinstance(t, str) for t in cfg.tags)):
        raise ConfigError(f"tags={cfg.tags!r} is out of range: must be a list of strings, e.g. 'tags=[baseline]'")
    if not (cfg.phase is None or isinstance(cfg.phase, (str, int, float)) and not isinstance(cfg.phase, bool)):
        raise ConfigError(f"phase={cfg.phase!r} is out of range: must be a phase name such as '3.1', or null")
    _check_ns_kernel_device(cfg)


def _check_ns_kernel_device(cfg: DictConfig) -> None:
    """The Triton Newton–Schulz kernels need a CUDA GPU (the optimizer's own check covers the kernel's name)."""
    kernel = cfg.optimizer.get("ns_kernel", "torch")
    if kernel == "triton_symmetric" and cfg.hardware.device != "cuda":
        raise ConfigError(f"optimizer.ns_kernel={kernel!r} is out of range: must be torch on "
                          f"hardware.device={cfg.hardware.device} (the Triton kernels run on CUDA GPUs only; "
                          f"e.g. hardware=h100, or optimizer.ns_kernel=torch)")


def _check_attention_layers(c: DictConfig) -> None:
    layers, n = c.get("attention_layers"), c.get("num_hidden_layers")
    ok = (OmegaConf.is_list(layers) and len(layers) > 0 and isinstance(n, int)
          and all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n for i in layers))
    if not ok:
        shown = list(layers) if OmegaConf.is_list(layers) else layers
        raise ConfigError(f"model.config.attention_layers={shown!r} is out of range: must be a non-empty list of "
                          f"layer indices in [0, {n}) (model.config.num_hidden_layers={n})")


def _is_interpolation(value) -> bool:
    return isinstance(value, str) and value.startswith("${")


def _unwritable(path: Path) -> str | None:
    """Why `path` cannot be (made) a folder this process writes in, or None. Tried with a real file: root ignores
    permission bits, and only a read-only file system (or /proc) stops it."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():  # mkdir would stop at it with FileExistsError
            return f"cannot be a folder: {existing} is a symbolic link to {os.readlink(existing)}, which does not exist"
        existing = existing.parent
    if not existing.is_dir():
        return f"cannot be a folder: {existing} is a file"
    try:
        _probe_write(existing)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"{FULL_DISK} ({existing}: {err.strerror}): free space there, or choose a folder on another disk"
        return f"is not writable ({existing}: {err.strerror})"
    return None


FULL_DISK = "is on a full disk"


def _probe_write(folder: Path) -> None:
    """Write and sync as much as Hydra's `.hydra/*.yaml` take, in a file that vanishes: creating a file succeeds on
    a full disk, writing to it does not."""
    with tempfile.TemporaryFile(dir=folder) as f:
        f.write(b"\0" * (64 << 10))
        f.flush()
        os.fsync(f.fileno())


def check_writable_dir(key: str, path) -> None:
    path = Path(str(path)).expanduser()
    if why := _unwritable(path):
        remedy = "" if why.startswith(FULL_DISK) else "; choose a folder this user can write to"
        raise ConfigError(f"{key}={str(path)!r} {why}{remedy}")


def check_run_dir(run_dir, key: str = "hydra.run.dir") -> None:
    """The run directory and what the trainer writes in it can be written, before anything is computed."""
    from orthonoise.run.checkpoint import DIRNAME
    from orthonoise.run.rundir import HYDRA_DIR, METRICS_FILE, SUMMARY_FILE

    run_dir = Path(str(run_dir)).expanduser()
    check_writable_dir(key, run_dir)
    for sub in (HYDRA_DIR, DIRNAME):
        if (run_dir / sub).exists() and (why := _unwritable(run_dir / sub)):
            raise ConfigError(f"{key}={str(run_dir)!r}: its {sub}/ {why}; remove it or choose another run directory")
    for name in (SUMMARY_FILE, METRICS_FILE):
        if (run_dir / name).exists() and not (run_dir / name).is_file():
            raise ConfigError(f"{key}={str(run_dir)!r}: its {name} is not a file; remove it or choose another "
                              f"run directory")


class OutputDirCheck(Callback):
    """Hydra callback (conf/config.yaml, hydra.callbacks): the run or sweep directory must be writable before
    Hydra creates it and writes .hydra/ there; otherwise one `error:` line and exit status 1."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        from orthonoise.run.identity import remember_hydra_files

        self._check(lambda: check_run_dir(config.hydra.run.dir))
        remember_hydra_files(config.hydra.run.dir)  # before Hydra overwrites them: a run without identity.json

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self._check(lambda: check_writable_dir("hydra.sweep.dir", config.hydra.sweep.dir))

    @staticmethod
    def _check(check: Callable[[], None]) -> None:
        try:
            check()
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(1)
