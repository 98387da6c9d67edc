"""One process per run directory: an OS lock on `<run dir>/run.lock`, held for the run's whole life.

Two launches of one command (a double click, a relaunched sweep while the first still runs, torchrun workers
orphaned by a killed agent) would otherwise train twice into one directory: every metric row twice, and one
process's checkpoint clean-up deleting the other's half-written checkpoint. `fcntl.flock` is released by the
kernel when the holding process exits in any way (crash, SIGKILL, OOM kill), so a lock left by a dead process
never blocks anyone; the file itself stays, holding the last holder's pid, host and start time for the message.
Under DDP only rank 0 takes it (orthonoise/trainer.py tells the other ranks the outcome).
flock works across hosts on NFSv4 and Lustre (Linux emulates it with POSIX locks there); on file systems without
lock support the open or flock call fails and the run stops with an error naming the file.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path

from orthonoise.errors import RunRefused
from orthonoise.run.rundir import LOCK_FILE

_held: dict[Path, int] = {}  # run dirs this process holds, with the lock's fd: a probe from here must not see itself


class RunDirBusy(RunRefused):
    """Another live process holds the run directory."""


class LockLost(RunRefused):
    """The lock file this process holds was deleted or replaced: another process may hold the directory now."""


def _holder_text(fd: int) -> str:
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {holder['pid']} on {holder['host']} (since {holder['started_at']})"
    except (ValueError, KeyError, TypeError, OSError):
        return "another process (it has not written its pid yet)"


def _open(run_dir: Path) -> int:
    path = Path(run_dir) / LOCK_FILE
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise RunRefused(f"cannot create the lock file {path}: {err.strerror}; the run directory must be "
                         f"writable (choose another with hydra.run.dir=...)") from None


@contextlib.contextmanager
def hold(run_dir: Path):
    """Hold `run_dir` until the block ends; RunDirBusy (naming the holder) when a live process holds it."""
    run_dir = Path(run_dir).resolve()
    fd = _open(run_dir)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder_text(fd)
        os.close(fd)
        raise RunDirBusy(f"{run_dir} is in use by {holder}: one process per run directory. Wait for it to "
                         f"finish, or stop it, then launch again (it resumes from the newest checkpoint)") from None
    except OSError as err:
        os.close(fd)
        raise RunRefused(f"cannot lock {run_dir / LOCK_FILE}: {err.strerror}") from None
    me = {"pid": os.getpid(), "host": socket.gethostname(), "argv": sys.argv,
          "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(me).encode(), 0)
    _held[run_dir] = fd
    try:
        yield
    finally:
        _held.pop(run_dir, None)
        os.close(fd)  # releases the lock; the kernel does the same if this process dies first


def check_still_held(run_dir: Path) -> None:
    """LockLost when `run_dir`'s lock file is no longer the file this process locked: deleting run.lock (by hand,
    by a clean-up script) would otherwise let a second process lock a new one and train here too. Called before
    each write of the run's records; a no-op in a process that does not hold `run_dir` (DDP ranks other than 0)."""
    run_dir = Path(run_dir).resolve()
    if (fd := _held.get(run_dir)) is None:
        return
    try:
        on_disk = os.stat(run_dir / LOCK_FILE)
    except FileNotFoundError:
        on_disk = None
    mine = os.fstat(fd)
    if on_disk is None or (on_disk.st_dev, on_disk.st_ino) != (mine.st_dev, mine.st_ino):
        raise LockLost(f"{run_dir / LOCK_FILE} was {'deleted' if on_disk is None else 'replaced'} while this process "
                       f"held it: another launch may be training in {run_dir} now, so this one stops without "
                       f"writing more. Make sure no other process uses that directory, then launch again: it resumes "
                       f"from the newest checkpoint")


def held_elsewhere(run_dir: Path) -> bool:
    """Whether another live process holds `run_dir` now (then nothing in it may be written by this one)."""
    run_dir = Path(run_dir).resolve()
    if run_dir in _held or not (run_dir / LOCK_FILE).exists():
        return False
    try:
        fd = os.open(run_dir / LOCK_FILE, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)
