"""Tests of mlic.fileio: atomic writes leave the old file or the new one, never a temp file; checksums."""

from __future__ import annotations

import hashlib

import pytest

from mlic.fileio import atomic_open, atomic_write_bytes, atomic_write_text, sha256_file


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_atomic_write_text_writes_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "a.json"
    atomic_write_text(path, "first ✓\n")
    assert path.read_text(encoding="utf-8") == "first ✓\n"
    atomic_write_text(path, "second")
    assert path.read_text(encoding="utf-8") == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_atomic_write_bytes(tmp_path):
    path = tmp_path / "w.bin"
    atomic_write_bytes(path, bytes(range(256)))
    assert path.read_bytes() == bytes(range(256))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.bin"]


def test_atomic_write_creates_parent_folders(tmp_path):
    path = tmp_path / "a" / "b" / "c.txt"
    atomic_write_text(path, "x")
    assert path.read_text() == "x"


def test_an_error_inside_atomic_open_keeps_the_old_content(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_open(path) as f:
        f.write("half of the new con")
        raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_an_error_inside_atomic_open_creates_nothing(tmp_path):
    path = tmp_path / "new.json"
    with pytest.raises(KeyboardInterrupt), atomic_open(path, "w") as f:
        f.write("partial")
        raise KeyboardInterrupt
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_the_new_content_appears_only_on_success(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("old")
    with atomic_open(path) as f:
        f.write("new")
        f.flush()
        assert path.read_text() == "old"  # readers still see the old file while writing
        assert len(leftovers(tmp_path)) == 1
    assert path.read_text() == "new"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("data", [b"", b"abc", bytes(range(256)) * 9000], ids=["empty", "short", "2MB"])
def test_sha256_file_matches_hashlib(tmp_path, data):
    path = tmp_path / "f"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    assert sha256_file(str(path)) == hashlib.sha256(data).hexdigest()
