"""Tests of mlic.data.file_checks: missing, corrupt and duplicate files, sizes, in-memory images."""

from __future__ import annotations

import shutil

import numpy as np
from PIL import Image

from mlic.data import multidigits
from mlic.data.describe import describe
from mlic.data.file_checks import check_files
from mlic.data.inspect_text import format_description
from mlic.data.manifest import Manifest
from mlic.schema import Attribute, LabelSchema

SCHEMA = LabelSchema(("cat", "dog", "sky", "owl"), (Attribute("size", ("small", "large")),))


def write_png(path, size=(8, 6), value=0, mode="L") -> None:
    Image.new(mode, size, value).save(path)


def test_files_missing_corrupt_duplicate_and_sizes(tmp_path):
    write_png(tmp_path / "a.png", (8, 6), 10)
    shutil.copy(tmp_path / "a.png", tmp_path / "a_copy.png")
    write_png(tmp_path / "b.png", (8, 6), 200)  # same size in bytes maybe, other content
    noise = np.random.default_rng(0).integers(0, 256, (10, 20, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "c.png")
    (tmp_path / "text.png").write_text("not an image")
    whole = (tmp_path / "c.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(whole[: len(whole) // 2])  # header intact, body cut
    names = ["a.png", "a_copy.png", "b.png", "c.png", "text.png", "cut.png", "gone.png", "a.png"]
    m = Manifest(SCHEMA, [str(tmp_path / n) for n in names], np.zeros((8, 4)), np.full((8, 1), -1))
    header = check_files(m)
    assert header["checked"] == "header" and header["files"] == 7
    assert header["missing"] == {"count": 1, "paths": [str(tmp_path / "gone.png")]}
    assert [c["path"] for c in header["corrupt"]["files"]] == [str(tmp_path / "text.png")]
    assert header["duplicates"]["groups"] == 1 and header["duplicates"]["redundant_files"] == 1
    assert sorted(header["duplicates"]["examples"][0]) == [
        str(tmp_path / "a.png"),
        str(tmp_path / "a_copy.png"),
    ]
    assert header["duplicate_entries"] == {"count": 1, "paths": [str(tmp_path / "a.png")]}
    assert header["width"] == {"min": 8, "median": 8, "max": 20}
    assert header["height"] == {"min": 6, "median": 6, "max": 10}
    assert header["modes"] == {"L": 3, "RGB": 2} and header["formats"] == {"PNG": 5}
    full = check_files(m, full=True, workers=2)
    assert full["checked"] == "full"
    assert sorted(c["path"] for c in full["corrupt"]["files"]) == [
        str(tmp_path / n) for n in ("cut.png", "text.png")
    ]
    text = format_description(describe(m, full=True))
    assert "missing      1" in text and "corrupt      2" in text and "gone.png" in text


def test_in_memory_images_report_sizes_and_equal_arrays():
    m = multidigits("test", 30)
    m.pixels[7] = m.pixels[3]
    files = describe(m)["files"]
    assert files["checked"] == "in-memory" and files["missing"]["count"] == 0
    assert files["duplicates"]["examples"] == [[m.paths[3], m.paths[7]]]
    assert files["width"] == {"min": 64, "median": 64, "max": 64} and files["modes"] == {"L": 30}


def test_paths_the_os_cannot_take_are_reported_not_raised(tmp_path):
    """os.stat raised ValueError for a NUL character or a lone surrogate in a path."""
    paths = [str(tmp_path / "a\x00b.png"), str(tmp_path / "\ud800.png")]
    m = Manifest(SCHEMA, paths, np.zeros((2, 4)), np.full((2, 1), -1))
    files = check_files(m)
    assert files["corrupt"] == {"count": 2, "files": [{"path": p, "error": "not a file path"} for p in paths]}
