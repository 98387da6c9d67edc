"""The local corpus: a fixed 95/5 split, cached, and batches that replay exactly from their state."""
import pytest
import torch
from omegaconf import OmegaConf

from orthonoise.errors import ConfigError
from orthonoise.lm.data import Batches, load_corpus, split_windows
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
    r0 = Batches(corpus.train, 2, seed=5, rank=0, world_size=2)
    r1 = Batches(corpus.train, 2, seed=5, rank=1, world_size=2)
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


def _local(tmp_path, path, **settings):
    cfg = OmegaConf.load(CONF / "data" / "local.yaml")
    cfg.path, cfg.cache_dir, cfg.vocab_size, cfg.seq_len = str(path), str(tmp_path / "cache"), 300, 16
    for key, value in settings.items():
        cfg[key] = value
    return cfg


def _entries(tmp_path):
    return sorted((tmp_path / "cache").glob("local-*"))


def test_the_cache_keys_on_file_contents(tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text("the quick brown fox jumps over the lazy dog. " * 300)
    cfg = _local(tmp_path, folder)
    first = load_corpus(cfg)
    assert torch.equal(load_corpus(cfg).train, first.train) and len(_entries(tmp_path)) == 1  # same bytes: a hit
    (folder / "a.txt").write_text("a stitch in time saves nine, said the tailor. " * 300)  # edited in place
    edited = load_corpus(cfg)
    assert len(_entries(tmp_path)) == 2 and not torch.equal(edited.train[:4], first.train[:4])
    (folder / "b.txt").write_text("an extra file joins the corpus. " * 300)  # a file added to the folder
    grown = load_corpus(cfg)
    assert len(_entries(tmp_path)) == 3 and len(grown.train) > len(edited.train)
    assert len(_entries(tmp_path)) == 3 and torch.equal(load_corpus(_local(tmp_path, folder)).train, grown.train)


@pytest.mark.parametrize("damage", ["truncate", "flip a byte", "foreign file"])
def test_a_damaged_cache_entry_is_rebuilt_with_a_warning(tmp_path, caplog, damage):
    (tmp_path / "a.txt").write_text("the quick brown fox jumps over the lazy dog. " * 300)
    cfg = _local(tmp_path, tmp_path / "a.txt")
    good = load_corpus(cfg)
    tensors = _entries(tmp_path)[0] / "windows.pt"
    raw = tensors.read_bytes()
    if damage == "truncate":
        tensors.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip a byte":  # inside the tensor data: the zip still opens, the checksum does not match
        at = raw.index(good.train[0].numpy().tobytes())
        tensors.write_bytes(raw[:at] + bytes([raw[at] ^ 0xFF]) + raw[at + 1 :])
    else:
        torch.save({"train": torch.zeros(2, 17, dtype=torch.int32)}, tensors)
    (_entries(tmp_path)[0] / "tokenizer.json").write_text("{half a tokeni")
    rebuilt = load_corpus(cfg)
    assert f"cache entry {tensors} is damaged" in caplog.text and "rebuilding it" in caplog.text
    assert torch.equal(rebuilt.train, good.train) and torch.equal(rebuilt.val, good.val)
    assert torch.equal(load_corpus(cfg).train, good.train)  # and the rebuilt entry reads back


@pytest.mark.parametrize("content,message", [
    (bytes(range(256)) * 4, "is binary (a NUL byte at offset 0): data=local reads UTF-8 text files only"),
    ("café olé ".encode("latin-1") * 50, "is not UTF-8 text (byte 0xe9 at offset 3): data=local reads UTF-8 text "
                                         "files only; convert it, e.g. `iconv -f latin1 -t utf-8`"),
])
def test_binary_or_non_utf8_text_is_refused_naming_the_file(tmp_path, content, message):
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "good.txt").write_text("fine text. " * 100)
    (folder / "bad.txt").write_bytes(content)
    with pytest.raises(ConfigError) as err:
        load_corpus(_local(tmp_path, folder))
    assert str(err.value) == f"data.path={str(folder)!r}: {folder / 'bad.txt'} {message}"
    assert not _entries(tmp_path)  # refused before anything was cached


def test_a_megabyte_without_whitespace_trains_in_bounded_time(tmp_path):
    # one 1 MB "word" made the BPE trainer run for minutes; the trainer now sees it in BPE_WORD_CHARS pieces
    (tmp_path / "long.txt").write_text("x" * 1_000_000 + "\n" + "the cat sat on the mat. " * 500)
    corpus = load_corpus(_local(tmp_path, tmp_path / "long.txt", seq_len=64))
    assert len(corpus.train) > 10 and corpus.vocab_size <= 300


@pytest.mark.parametrize("settings", [{}, {"val_fraction": 0.9}])
def test_a_corpus_with_no_training_windows_says_what_to_change(tmp_path, settings):
    text = "too short for even one window of text. " * 3 if settings else "too short."  # 3 windows, 0 windows
    (tmp_path / "small.txt").write_text(text)
    with pytest.raises(ConfigError, match=r"^data.seq_len=16 is out of range for this corpus: .* leaving none to "
                                           r"train on: use more text \(data.path\), a smaller data.seq_len"):
        load_corpus(_local(tmp_path, tmp_path / "small.txt", **settings))


def test_preparation_shows_progress_when_slow(tmp_path, monkeypatch, capsys):
    from orthonoise.lm import data

    monkeypatch.setattr(data, "PROGRESS_AFTER_S", 0.0)  # "slow" from the first item on
    (tmp_path / "a.txt").write_text("the quick brown fox jumps over the lazy dog.\n" * 3000)
    load_corpus(_local(tmp_path, tmp_path / "a.txt"))
    err = capsys.readouterr().err
    assert "reading text files" in err and "training BPE" in err and "tokenizing" in err


def test_a_stop_signal_during_preparation_stops_it_and_caches_nothing(tmp_path, monkeypatch):
    import os
    import signal

    from orthonoise.lm.data import PreparationStopped
    from orthonoise.run import preemption

    monkeypatch.setattr(preemption, "_stopped_by", None)  # the flag outlives a run: leave none behind
    (tmp_path / "a.txt").write_text("the quick brown fox jumps over the lazy dog.\n" * 3000)
    with preemption.Preemption(), pytest.raises(PreparationStopped, match="SIGTERM received while preparing"):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives now; the next file, piece or batch stops
        load_corpus(_local(tmp_path, tmp_path / "a.txt"))
    assert not list((tmp_path / "cache").rglob("windows.pt"))


def test_sigterm_during_data_preparation_ends_the_run_interrupted(tmp_path):
    import json
    import signal
    import subprocess
    import sys

    from tests.conftest import FAST, ROOT

    proc = subprocess.Popen([sys.executable, "train.py", *FAST, f"data.cache_dir={tmp_path / 'cache'}",
                             f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in proc.stdout:  # the installed plays, with a fresh cache: seconds of BPE training and tokenizing
        seen.append(line)
        if "preparing local corpus" in line:
            break
    proc.send_signal(signal.SIGTERM)
    output = "".join(seen) + proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, output
    assert "SIGTERM received while preparing the corpus: stopped before training" in output
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "interrupted"
    assert not list((tmp_path / "cache").rglob("windows.pt")) and not (tmp_path / "run" / "metrics.jsonl").exists()


def test_the_remedies_in_these_errors_work(tmp_path):
    import shutil
    import subprocess

    latin = tmp_path / "latin.txt"
    latin.write_bytes("café olé, dit le garçon. ".encode("latin-1") * 80)
    with pytest.raises(ConfigError, match="convert it, e.g. `iconv -f latin1 -t utf-8`"):
        load_corpus(_local(tmp_path, latin))
    if shutil.which("iconv"):  # do what the message says
        latin.write_bytes(subprocess.run(["iconv", "-f", "latin1", "-t", "utf-8", str(latin)], capture_output=True,
                                         check=True).stdout)
    else:
        latin.write_text(latin.read_bytes().decode("latin-1"))
    assert len(load_corpus(_local(tmp_path, latin)).train) > 10
    small = tmp_path / "small.txt"
    small.write_text("a short text of a few words, said twice. " * 2)
    with pytest.raises(ConfigError, match="a smaller data.seq_len"):
        load_corpus(_local(tmp_path, small, seq_len=64))
    assert len(load_corpus(_local(tmp_path, small, seq_len=4)).train) >= 1
