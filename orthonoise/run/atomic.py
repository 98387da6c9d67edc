"""Files a reader never sees half-written: write beside the target, fsync, then rename over it."""
import os
from pathlib import Path
from typing import BinaryIO, Callable, TypeVar

T = TypeVar("T")


def write_atomic(path: Path, write: Callable[[BinaryIO], T]) -> T:
    """Run `write(f)` on a temporary file next to `path`, then rename it into place; returns what `write` returned.

    A kill at any moment leaves the old file or the new one, never a mix; only a stray `*.tmp` can remain.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # parallel jobs writing one cache file don't collide
    try:
        with open(tmp, "wb") as f:
            result = write(f)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename makes it visible
        os.replace(tmp, path)
    except BaseException as err:  # a full disk, Ctrl-C: no half file left behind
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and not err.filename:  # a write() error names no file: name the target
            raise OSError(err.errno, err.strerror or str(err), str(path)) from err
        raise
    return result


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda f: f.write(text.encode()))
