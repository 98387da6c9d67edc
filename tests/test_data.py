"""The local corpus: a fixed 95/5 split, cached, and batches that replay exactly from their state."""
import pytest
import torch
from omegaconf import OmegaConf

from orthonoise.data import Batches, load_corpus, split_windows
from orthonoise.errors import ConfigError
from tests.conftest import CONF


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(OmegaConf.load(CONF / "data" / "local.yaml"))


def test_local_corpus_is_real_text_in_a_95_5_split(corpus):
    assert corpus.vocab_size == 8192
    assert corpus.train.shape[1] == corpus.val.shape[1] == 129
    share = len(corpus.val) / (len(corpus.train) + len(corpus.val))
    assert 0.045 < share < 0.055
    assert len(corpus.train) > 5000 and int(corpus.train.max()) < corpus.vocab_size


def test_windows_shift_by_seq_len_and_split_is_disjoint():
    ids = torch.arange(1001)
    train, val = split_windows(ids, seq_len=10, val_fraction=0.1)
    assert len(train) + len(val) == 100 and len(val) == 10
    starts = {int(w[0]) for w in torch.cat([train, val])}
    assert starts == set(range(0, 1000, 10))
    assert all(int(w[-1]) - int(w[0]) == 10 for w in train)


def test_batches_replay_from_state_and_ranks_take_disjoint_slices(corpus):
    a = Batches(corpus.train, 4, seed=1)
    a.next()
    state = a.state_dict()
    expected = a.next()
    b = Batches(corpus.train, 4, seed=99)
    b.load_state_dict(state)
    assert torch.equal(b.next(), expected)
    r0, r1 = Batches(corpus.train, 2, seed=5, rank=0, world_size=2), Batches(corpus.train, 2, seed=5, rank=1, world_size=2)
    assert torch.equal(torch.cat([r0.next(), r1.next()]), Batches(corpus.train, 4, seed=5).next())


def test_local_path_trains_on_your_own_text_files(tmp_path):
    folder = tmp_path / "texts"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("the quick brown fox jumps over the lazy dog. " * 400)
    (folder / "sub" / "b.txt").write_text("a stitch in time saves nine. " * 400)
    (folder / "skipped.md").write_text("not a text file " * 1000)
    cfg = OmegaConf.load(CONF / "data" / "local.yaml")
    cfg.path, cfg.cache_dir, cfg.vocab_size, cfg.seq_len = str(folder), str(tmp_path / "cache"), 300, 16
    corpus = load_corpus(cfg)
    assert corpus.vocab_size <= 300 and corpus.train.shape[1] == 17
    # only the two .txt files were read: ~1000 tokens each at most, far fewer than Shakespeare's ~1.5M
    assert 10 < len(corpus.train) + len(corpus.val) < 2000


def test_a_folder_without_text_files_is_refused(tmp_path):
    cfg = OmegaConf.load(CONF / "data" / "local.yaml")
    cfg.path, cfg.cache_dir = str(tmp_path), str(tmp_path / "cache")
    with pytest.raises(ConfigError, match="holds no .txt files"):
        load_corpus(cfg)
