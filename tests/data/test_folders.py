"""Tests of mlic.data.formats.folders: one folder per label, merged images, errors, fuzzing."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import error_of, folders, fuzz, image, read_or_error, write
from mlic.data.formats import load_data
from mlic.data.formats.folders import read_folders
from mlic.schema import LabelSchema


# -- folders ------------------------------------------------------------------------
def test_folders_merge_an_image_found_under_several_labels(tmp_path):
    root = folders(tmp_path / "data")
    with pytest.warns(UserWarning, match=r"without images: \['empty'\]"):
        m = read_folders(root)
    assert m.schema == LabelSchema(("bird", "cat", "dog", "empty"))
    names = [str(Path(p).relative_to(root)) for p in m.paths]
    assert names == ["c.png", "e.webp", "bird/sub/d.JPG", "cat/a.png", "dog/b.jpg"]
    np.testing.assert_array_equal(
        m.labels, [[0, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0]]
    )
    assert m.meta["format"] == "folders" and m.missing_files() == []


def test_folders_with_a_schema_drop_unknown_folders_with_one_warning(tmp_path):
    root = tmp_path / "data"
    for rel in ("cat/a.png", "dog/a.png", "fox/b.png", "fox/c.png"):
        image(root / rel)
    with pytest.warns(UserWarning, match=r"'fox' \(2 rows\)") as record:
        m = read_folders(root, schema=LabelSchema(("dog", "cat")))
    assert len(record) == 1 and m.meta["dropped"] == ["fox"]
    np.testing.assert_array_equal(m.labels, [[1, 1], [0, 0], [0, 0]])


def test_folders_errors(tmp_path):
    write(tmp_path / "text" / "cat" / "a.txt", "x")
    assert "no image files found" in error_of(read_folders, tmp_path / "text")
    assert "no such folder" in error_of(read_folders, tmp_path / "nope")
    image(tmp_path / "loose" / "a.png")
    assert "no labels" in error_of(read_folders, tmp_path / "loose")


ODD_NAMES = ["cat", "dog", ".hidden", "__MACOSX", "a.png", "b.JPG", "c.txt", "d.png.txt", " ", "é"]


ANY_NAME = st.characters(exclude_characters="/\x00", exclude_categories=("Cs",))


FOLDER_NAMES = st.sampled_from([*ODD_NAMES, "Annotations", "x" * 250]) | st.text(
    ANY_NAME, min_size=1, max_size=6
)


PNG = b"\x89PNG\r\n\x1a\n"  # folder readers look at names only


@fuzz(400)
@given(
    entries=st.lists(
        st.tuples(
            st.lists(FOLDER_NAMES, min_size=1, max_size=3),
            st.sampled_from(["image", "image", "junk", "folder", "loop", "broken link", "bytes name"]),
        ),
        max_size=6,
    ),
    how=st.sampled_from(["load", "read"]),
)
def test_fuzz_folders_read_or_name_the_folder(entries, how):
    """Generated label-folder trees (hidden, ignored, non-UTF-8 and odd names, symlink loops, no images)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        root.mkdir()
        for parts, kind in entries:
            if parts[-1] in (".", ".."):
                continue
            path = root.joinpath(*parts)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                if kind == "folder":
                    path.mkdir(exist_ok=True)
                elif kind == "loop":
                    path.symlink_to(root)
                elif kind == "broken link":
                    path.symlink_to(root / "nowhere")
                elif kind == "bytes name":
                    os.mkdir(os.fsencode(path) + b"\xff")
                    open(os.fsencode(path) + b"\xff/x.png", "wb").close()
                else:
                    path.write_bytes(PNG if kind == "image" else b"junk")
            except OSError:  # a name the file system refuses (too long), or one taken by a folder
                continue
        call = (lambda: load_data(root)) if how == "load" else (lambda: read_folders(root))
        m = read_or_error(call, root)
        if m is not None and m.meta["format"] == "folders":
            assert all(p.startswith(str(root)) and os.path.isfile(p) for p in m.paths)
