"""Tests of mlic.data.formats.csv_tags: tags CSV columns, separators, paths and schemas."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from helpers import error_of, png, write
from mlic.data.formats import load_source
from mlic.data.formats.csv_multihot import read_multihot_csv
from mlic.data.formats.csv_tags import read_tags_csv
from mlic.errors import DataError
from mlic.schema import Attribute, LabelSchema


# -- tags CSV -------------------------------------------------------------------
def test_tags_csv_infers_sorted_labels_and_ignores_extra_whitespace(tmp_path):
    f = write(tmp_path / "labels.csv", "path,tags\na.jpg,dog cat\nb.jpg,\nc.jpg,   dog    dog \n")
    m = read_tags_csv(f)
    assert m.schema == LabelSchema(("cat", "dog"))
    np.testing.assert_array_equal(m.labels, [[1, 1], [0, 0], [0, 1]])
    assert m.labels.dtype == np.int8
    assert m.attributes.shape == (3, 0)
    assert m.paths == [str(tmp_path / n) for n in ("a.jpg", "b.jpg", "c.jpg")]
    assert m.source == str(f)
    assert m.meta["format"] == "csv-tags"


def test_planet_layout_infers_image_extensions(tmp_path):
    images = tmp_path / "train-jpg"
    png(images / "train_0.jpg")
    png(images / "train_1.png")
    png(images / "train_2.TIF")
    f = write(
        tmp_path / "train_v2.csv",
        "image_name,tags\ntrain_0,haze primary\ntrain_1,clear primary water\ntrain_2,\ntrain_3,haze\n",
    )
    m = load_source(f, images_root=images)
    assert m.meta["format"] == "csv-tags"
    assert m.schema.labels == ("clear", "haze", "primary", "water")
    assert m.paths[:3] == [str(images / n) for n in ("train_0.jpg", "train_1.png", "train_2.TIF")]
    assert m.paths[3] == str(images / "train_3")  # missing: left as written, for check_files to report
    np.testing.assert_array_equal(m.labels[1], [1, 0, 1, 1])
    with pytest.raises(DataError, match="1 of 4 image files are missing"):
        m.check_files()


def test_path_that_exists_without_suffix_is_kept(tmp_path):
    write(tmp_path / "img0", b"x")
    png(tmp_path / "img0.jpg")
    m = read_tags_csv(write(tmp_path / "l.csv", "file,labels\nimg0,a\n"))
    assert m.paths == [str(tmp_path / "img0")]


@pytest.mark.parametrize("separator", [",", "|", ";"])
def test_tags_csv_custom_separator(tmp_path, separator):
    cell = f" a{separator}b{separator}{separator} c {separator}"
    f = write(tmp_path / "l.csv", f'image,labels\nx.png,"{cell}"\ny.png,""\n')
    m = read_tags_csv(f, separator=separator)
    assert m.schema.labels == ("a", "b", "c")
    np.testing.assert_array_equal(m.labels, [[1, 1, 1], [0, 0, 0]])


def test_tags_csv_named_columns_any_case_extra_columns_tsv_and_bom(tmp_path):
    f = write(tmp_path / "l.tsv", "\ufeffId\tImage_Path\tWidth\tKeywords\n1\ta.jpg\t8\tx y\n")
    m = load_source(f, tags_column="keywords")
    assert m.schema.labels == ("x", "y")
    assert m.paths == [str(tmp_path / "a.jpg")]
    m2 = read_tags_csv(f, path_column="image_path", tags_column="Keywords")
    np.testing.assert_array_equal(m2.labels, m.labels)


def test_relative_paths_resolve_against_images_root_or_the_file_folder(tmp_path):
    absolute = tmp_path / "elsewhere" / "z.jpg"
    f = write(tmp_path / "meta" / "l.csv", f"path,tags\nsub/a.jpg,t\n../b.jpg,t\n{absolute},t\n")
    m = read_tags_csv(f)
    assert m.paths == [
        str(tmp_path / "meta" / "sub" / "a.jpg"),
        str(tmp_path / "b.jpg"),
        str(absolute),
    ]
    root = tmp_path / "imgs"
    m = read_tags_csv(f, images_root=root)
    assert m.paths == [str(root / "sub" / "a.jpg"), str(tmp_path / "b.jpg"), str(absolute)]
    old = os.getcwd()
    try:
        os.chdir(tmp_path)
        m = read_tags_csv(Path("meta/l.csv"), images_root="imgs")
    finally:
        os.chdir(old)
    assert all(os.path.isabs(p) for p in m.paths)
    assert m.paths[0] == str(root / "sub" / "a.jpg")
    assert m.source == os.path.join("meta", "l.csv")


def test_tags_csv_with_schema_drops_unknown_tags_with_one_warning(tmp_path):
    f = write(tmp_path / "l.csv", "path,tags\na.jpg,cat bird\nb.jpg,bird fish\nc.jpg,dog\n")
    schema = LabelSchema(("dog", "cat"), (Attribute("size", ("s", "l")),))
    with pytest.warns(UserWarning) as record:
        m = read_tags_csv(f, schema=schema)
    assert len(record) == 1
    message = str(record[0].message)
    assert "l.csv" in message and "'bird' (2 rows)" in message and "'fish' (1 row)" in message
    assert m.schema is schema
    np.testing.assert_array_equal(m.labels, [[0, 1], [0, 0], [1, 0]])
    np.testing.assert_array_equal(m.attributes, [[-1], [-1], [-1]])
    assert m.meta["dropped"] == ["bird", "fish"]


def test_no_warning_when_schema_covers_the_data(tmp_path):
    f = write(tmp_path / "l.csv", "path,tags\na.jpg,cat\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = read_tags_csv(f, schema=LabelSchema(("cat", "dog")))
    assert "dropped" not in m.meta


def test_tags_csv_missing_columns_list_header_and_candidates(tmp_path):
    f = write(tmp_path / "l.csv", "picture,tags\na.jpg,x\n")
    message = error_of(read_tags_csv, f)
    assert message.startswith(f"{f}:1:") and "['picture', 'tags']" in message and "'image_name'" in message
    message = error_of(read_tags_csv, write(tmp_path / "k.csv", "path,kinds\na.jpg,x\n"))
    assert "k.csv:1:" in message and "'categories'" in message and "['path', 'kinds']" in message
    message = error_of(read_tags_csv, f, path_column="photo")
    assert "'photo'" in message and "['picture', 'tags']" in message
    message = error_of(read_multihot_csv, write(tmp_path / "h.csv", "\n\nid,cat\na.jpg,1\n"))
    assert message.startswith(f"{tmp_path / 'h.csv'}:3:") and "['id', 'cat']" in message
