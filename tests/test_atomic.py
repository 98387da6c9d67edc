"""Atomic writes: the old file or the new one, never a mix, and nothing left beside it."""
import pytest

from orthonoise.run.atomic import write_atomic, write_text_atomic


def test_the_new_content_replaces_the_old_and_no_temporary_file_remains(tmp_path):
    path = tmp_path / "summary.json"
    write_text_atomic(path, "old")
    assert write_atomic(path, lambda f: f.write(b"new") and "returned") == "returned"
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_a_write_that_fails_half_way_leaves_the_old_file(tmp_path):
    path = tmp_path / "summary.json"
    write_text_atomic(path, "old")

    def half_then_crash(f):
        f.write(b"ne")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        write_atomic(path, half_then_crash)
    assert path.read_text() == "old"
