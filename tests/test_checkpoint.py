"""Checkpoint files: last K kept, atomic, checksummed, loaded without pickle, every RNG restored."""
import logging
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from orthonoise.errors import ConfigError
from orthonoise.run.checkpoint import (
    checkpoint_paths,
    load_checkpoint,
    remove_stale_tmp,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def state(step: int) -> dict:
    return {"step": step, "model": {"w": torch.full((64, 64), float(step))}, "rng": rng_state()}


def test_only_the_newest_k_are_kept_and_no_temporary_file_is_left(tmp_path):
    for step in (10, 20, 30, 40):
        save_checkpoint(tmp_path, state(step), step, keep=2)
    assert [p.name for p in checkpoint_paths(tmp_path)] == ["step-00000030.pt", "step-00000040.pt"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step-00000030.pt", "step-00000030.sha256", "step-00000040.pt", "step-00000040.sha256"]
    loaded, path = load_checkpoint(tmp_path)
    assert loaded["step"] == 40 and path.name == "step-00000040.pt"


def test_a_run_without_checkpoints_starts_fresh(tmp_path):
    assert load_checkpoint(tmp_path) == (None, None)


@pytest.mark.parametrize("damage", ["truncate", "flip_a_byte", "no_checksum"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog, damage):
    save_checkpoint(tmp_path, state(10), 10, keep=3)
    newest = save_checkpoint(tmp_path, state(20), 20, keep=3)
    data = bytearray(newest.read_bytes())
    if damage == "truncate":  # e.g. the disk filled up
        newest.write_bytes(data[: len(data) // 2])
    elif damage == "flip_a_byte":  # in the tensor data: torch.load alone would read it without complaint
        data[len(data) // 2] ^= 0xFF
        newest.write_bytes(data)
    else:  # killed between the checkpoint's rename and its checksum's
        newest.with_suffix(".sha256").unlink()
    with caplog.at_level(logging.WARNING):
        loaded, path = load_checkpoint(tmp_path)
    assert loaded["step"] == 10 and torch.equal(loaded["model"]["w"], torch.full((64, 64), 10.0))
    assert "step-00000020.pt is unusable" in caplog.text


def test_a_half_written_temporary_file_is_ignored_and_cleaned_up_unless_its_writer_lives(tmp_path):
    save_checkpoint(tmp_path, state(10), 10)
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    try:
        stale = tmp_path / "checkpoints" / f"step-00000020.pt.{dead.stdout.strip()}.tmp"
        live = tmp_path / "checkpoints" / f"step-00000020.pt.{writer.pid}.tmp"  # another process, writing now
        for path in (stale, live):
            path.write_bytes(b"half a checkpoint")
        assert load_checkpoint(tmp_path)[0]["step"] == 10
        remove_stale_tmp(tmp_path)
        assert not stale.exists() and live.exists()
    finally:
        writer.kill()
        writer.wait()


def test_rotation_tolerates_a_checkpoint_deleted_meanwhile(tmp_path, monkeypatch):
    from orthonoise.run import checkpoint

    save_checkpoint(tmp_path, state(10), 10, keep=1)
    listed = checkpoint.checkpoint_paths
    ghost = tmp_path / "checkpoints" / "step-00000005.pt"  # listed, then deleted by hand before the rotation got to it
    monkeypatch.setattr(checkpoint, "checkpoint_paths", lambda run_dir: [ghost, *listed(run_dir)])
    save_checkpoint(tmp_path, state(20), 20, keep=1)
    assert [p.name for p in listed(tmp_path)] == ["step-00000020.pt"]


def test_no_readable_checkpoint_is_an_error_not_a_silent_restart(tmp_path):
    path = save_checkpoint(tmp_path, state(10), 10)
    path.write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="none of the 1 checkpoints"):
        load_checkpoint(tmp_path)


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, monkeypatch):
    """weights_only loading: a pickle that calls os.system is rejected even with a valid checksum."""
    monkeypatch.chdir(tmp_path)
    save_checkpoint(tmp_path, state(10), 10)
    save_checkpoint(tmp_path, {"step": 20, "payload": RunsCode()}, 20)
    loaded, _ = load_checkpoint(tmp_path)
    assert loaded["step"] == 10 and not (tmp_path / "pwned").exists()


def test_every_rng_is_restored():
    saved = rng_state()
    first = (random.random(), np.random.rand(), torch.rand(3))
    set_rng_state(saved)
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == again[0] and first[1] == again[1] and torch.equal(first[2], again[2])


def test_rng_state_survives_the_weights_only_round_trip(tmp_path):
    save_checkpoint(tmp_path, state(1), 1)
    expected = (random.random(), np.random.rand(), torch.rand(3))  # what follows the saved state
    set_rng_state(load_checkpoint(tmp_path)[0]["rng"])
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert expected[0] == got[0] and expected[1] == got[1] and torch.equal(expected[2], got[2])


class FullDisk:
    """A file on a disk that fills up after `room` bytes: write() raises ENOSPC, as the OS does."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def write(self, data) -> int:
        if len(data) > self.room:
            import errno

            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_a_full_disk_while_a_checkpoint_is_written_names_the_file_and_leaves_no_tmp(tmp_path, monkeypatch):
    import errno

    from orthonoise.run import atomic

    state = {"w": torch.randn(256, 256)}
    save_checkpoint(tmp_path, state, 1)
    real_open = open
    monkeypatch.setattr(atomic, "open", lambda path, mode: FullDisk(real_open(path, mode), room=4096),
                        raising=False)
    with pytest.raises(OSError) as full:
        save_checkpoint(tmp_path, state, 2)
    target = tmp_path / "checkpoints" / "step-00000002.pt"
    assert full.value.errno == errno.ENOSPC and full.value.filename == str(target)
    assert "No space left on device" in str(full.value)  # not torch's "enforce fail at inline_container.cc"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000001.pt", "step-00000001.sha256"]
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(tmp_path)[0]["w"], state["w"])  # the one before is intact
