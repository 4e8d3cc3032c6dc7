"""Tests of mlic.data.sources: every format, path rule, schema rule and error message."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st
from PIL import Image

from conftest import fuzz, mutated, read_or_error
from mlic.data import load_data, sources
from mlic.data.sources import (
    FORMATS,
    detect_format,
    load_source,
    read_jsonl,
    read_multihot_csv,
    read_tags_csv,
)
from mlic.errors import ConfigError, DataError
from mlic.schema import Attribute, LabelSchema


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(path)
    return path


def jsonl(path: Path, *records: object) -> Path:
    return write(path, "\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")


def error_of(call, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        call(*args, **kwargs)
    return str(info.value)


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


# -- multi-hot CSV --------------------------------------------------------------
MULTIHOT = (
    "path,cat,dog,size,count\n"
    "a.png,1,0,low,2\n"
    "b.png,0.0,TRUE,high,10\n"
    "c.png,,-1,,1\n"
    "d.png, yes ,No,medium,\n"
    "e.png,false,1.0, low ,2\n"
)


def test_multihot_infers_labels_and_attributes(tmp_path):
    m = read_multihot_csv(write(tmp_path / "m.csv", MULTIHOT))
    assert m.schema.labels == ("cat", "dog")
    assert m.schema.attributes == (
        Attribute("size", ("high", "low", "medium")),
        Attribute("count", ("1", "2", "10")),
    )
    np.testing.assert_array_equal(m.labels, [[1, 0], [0, 1], [-1, -1], [1, 0], [0, 1]])
    np.testing.assert_array_equal(m.attributes, [[1, 1], [0, 2], [-1, 0], [2, -1], [1, 1]])
    assert m.attributes.dtype == np.int64
    assert m.meta["format"] == "csv-multihot"


def test_multihot_with_schema_matches_columns_by_name(tmp_path):
    f = write(tmp_path / "m.csv", MULTIHOT)
    schema = LabelSchema(("dog", "bird", "cat"), (Attribute("size", ("low", "medium", "high", "huge")),))
    with pytest.warns(UserWarning, match=r"'count' \(4 rows\)") as record:
        m = read_multihot_csv(f, schema=schema)
    assert len(record) == 1
    np.testing.assert_array_equal(m.labels[:, 1], -1)  # no column for 'bird'
    np.testing.assert_array_equal(m.labels[:, [0, 2]], [[0, 1], [1, 0], [-1, -1], [0, 1], [1, 0]])
    np.testing.assert_array_equal(m.attributes[:, 0], [0, 2, -1, 1, 0])
    assert m.meta["dropped"] == ["count"]


def test_multihot_schema_label_column_with_bad_value(tmp_path):
    f = write(tmp_path / "m.csv", "path,cat,dog\na.png,1,0\nb.png,0,maybe\n")
    message = error_of(read_multihot_csv, f, schema=LabelSchema(("cat", "dog")))
    assert "m.csv:3: field 'dog'" in message and "'maybe'" in message


def test_multihot_schema_attribute_class_not_in_schema(tmp_path):
    f = write(tmp_path / "m.csv", "img,size\na.png,low\nb.png,\nc.png,huge\nd.png,huge\n")
    schema = LabelSchema(attributes=(Attribute("size", ("low", "high")),))
    message = error_of(read_multihot_csv, f, schema=schema)
    assert "m.csv:4: field 'size'" in message and "'huge'" in message and "['low', 'high']" in message


def test_multihot_single_class_attribute_is_an_error(tmp_path):
    f = write(tmp_path / "m.csv", "path,cat,colour\na.png,1,red\nb.png,0,\n")
    message = error_of(read_multihot_csv, f)
    assert "m.csv" in message and "'colour'" in message and "at least 2" in message


def test_multihot_minus_one_in_an_attribute_column_is_unknown(tmp_path):
    f = write(tmp_path / "m.csv", "path,cat,size\na.png,1,s\nb.png,0,-1\nc.png,1,l\n")
    m = read_multihot_csv(f)
    assert m.schema.attributes == (Attribute("size", ("l", "s")),)
    np.testing.assert_array_equal(m.attributes[:, 0], [1, -1, 0])


def test_multihot_too_many_distinct_values(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "_MAX_CODES", 4)
    f = write(tmp_path / "m.csv", "path,id\na.png,1\nb.png,2\nc.png,3\nd.png,4\ne.png,5\n")
    message = error_of(read_multihot_csv, f)
    assert message.startswith(f"{f}:6:") and "distinct values" in message


@pytest.mark.parametrize(
    ("header", "expected"),
    [("path,cat,cat\n", "duplicate column names ['cat']"), ("path,cat,\n", "column 2 has no name")],
)
def test_multihot_bad_header_names(tmp_path, header, expected):
    message = error_of(read_multihot_csv, write(tmp_path / "m.csv", header + "a.png,1,0\n"))
    assert "m.csv:1:" in message and expected in message


def test_multihot_matches_a_naive_reader(tmp_path):
    rng = np.random.default_rng(0)
    n, k = 300, 40
    spellings = np.array(["1", "0", "", "-1", "true", "no", "1.0"])
    cells = spellings[rng.integers(0, len(spellings), size=(n, k))]
    sizes = np.array(["s", "m", "l", ""])[rng.integers(0, 4, size=n)]
    f = tmp_path / "big.csv"
    with f.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["size", *[f"l{j}" for j in range(k)], "file"])
        for i in range(n):
            writer.writerow([sizes[i], *cells[i], f"{i}.jpg"])
    m = read_multihot_csv(f)
    value = {"1": 1, "true": 1, "1.0": 1, "0": 0, "no": 0, "": -1, "-1": -1}
    np.testing.assert_array_equal(m.labels, np.vectorize(value.get)(cells))
    assert m.schema.attributes == (Attribute("size", ("l", "m", "s")),)
    np.testing.assert_array_equal(m.attributes[:, 0], [{"l": 0, "m": 1, "s": 2, "": -1}[s] for s in sizes])
    assert m.paths[7] == str(tmp_path / "7.jpg")


# -- JSON lines -----------------------------------------------------------------
def test_jsonl_labels_attributes_unknowns(tmp_path):
    f = jsonl(
        tmp_path / "d.jsonl",
        {"path": "a.jpg", "labels": ["dog", "cat"], "attributes": {"size": "low", "n": 10}},
        "",
        {"path": "b.jpg", "unknown": ["bird"], "attributes": {"n": 2, "size": None}},
        {"path": "c.jpg", "attributes": {"size": "high", "n": "2"}, "extra": 1},
        "   ",
        {"path": "d.jpg", "labels": ["cat"], "unknown": ["dog"]},
    )
    m = read_jsonl(f)
    assert m.schema.labels == ("bird", "cat", "dog")
    assert m.schema.attributes == (Attribute("size", ("high", "low")), Attribute("n", ("2", "10")))
    np.testing.assert_array_equal(m.labels, [[0, 1, 1], [-1, 0, 0], [0, 0, 0], [0, 1, -1]])
    np.testing.assert_array_equal(m.attributes, [[1, 1], [-1, 0], [0, 0], [-1, -1]])
    assert m.paths == [str(tmp_path / f"{c}.jpg") for c in "abcd"]
    assert m.meta["format"] == "jsonl"


def test_jsonl_with_schema_drops_and_warns_once(tmp_path):
    f = jsonl(
        tmp_path / "d.jsonl",
        {"path": "a.jpg", "labels": ["cat", "fox"], "attributes": {"size": "low", "age": "old"}},
        {"path": "b.jpg", "labels": ["fox"], "unknown": ["cat"]},
    )
    schema = LabelSchema(("dog", "cat"), (Attribute("size", ("high", "low")),))
    with pytest.warns(UserWarning) as record:
        m = read_jsonl(f, schema=schema, images_root=tmp_path / "img")
    assert len(record) == 1
    assert "'fox' (2 rows)" in str(record[0].message) and "'age' (1 row)" in str(record[0].message)
    np.testing.assert_array_equal(m.labels, [[0, 1], [0, -1]])
    np.testing.assert_array_equal(m.attributes, [[1], [-1]])
    assert m.paths[0] == str(tmp_path / "img" / "a.jpg")


def test_jsonl_label_both_present_and_unknown_is_an_error_at_its_line(tmp_path):
    f = jsonl(
        tmp_path / "d.jsonl", {"path": "a.jpg"}, {"path": "b.jpg", "labels": ["cat"], "unknown": ["cat"]}
    )
    message = error_of(read_jsonl, f)
    assert "d.jsonl:2: field 'unknown'" in message and "['cat'] also listed under 'labels'" in message


def test_jsonl_attribute_class_not_in_schema(tmp_path):
    f = jsonl(tmp_path / "d.jsonl", {"path": "a.jpg"}, {"path": "b.jpg", "attributes": {"size": "huge"}})
    schema = LabelSchema(attributes=(Attribute("size", ("low", "high")),))
    message = error_of(read_jsonl, f, schema=schema)
    assert "d.jsonl:2: field 'attributes.size'" in message and "'huge'" in message


@pytest.mark.parametrize(
    ("bad", "field", "expected"),
    [
        ('{"path": "b.jpg", "labels": "cat"}', "field 'labels'", "must be a list of strings, got 'cat'"),
        ('{"path": "b.jpg", "labels": ["cat", 3]}', "field 'labels'", "must be a list of strings"),
        ('{"path": "b.jpg", "unknown": {"a": 1}}', "field 'unknown'", "must be a list of strings"),
        ('{"path": "b.jpg", "labels": ["cat", " "]}', "field 'labels'", "empty label name"),
        ('{"path": "b.jpg", "attributes": ["size"]}', "field 'attributes'", "must be an object"),
        ('{"path": "b.jpg", "attributes": {"size": [1]}}', "field 'attributes.size'", "class name"),
        ('{"path": "b.jpg", "attributes": {"size": true}}', "field 'attributes.size'", "class name"),
        ('{"path": "b.jpg", "attributes": {"": "x"}}', "field 'attributes'", "empty attribute name"),
        ('{"labels": ["cat"]}', "field 'path'", "got nothing"),
        ('{"path": 3}', "field 'path'", "must be a string"),
        ('{"path": "  "}', "field 'path'", "empty image path"),
        ('{"path": "b.jpg", "labels": ["cat"]', "", "invalid JSON"),
        ('["b.jpg", "cat"]', "", "expected a JSON object"),
    ],
)
def test_jsonl_bad_lines_name_file_line_and_field(tmp_path, bad, field, expected):
    f = jsonl(tmp_path / "data.jsonl", {"path": "a.jpg", "labels": ["cat"]}, "", bad)
    message = error_of(read_jsonl, f)
    assert message.startswith(f"{f}:3: {field}")
    assert expected in message


def test_jsonl_label_and_attribute_with_one_name_is_rejected(tmp_path):
    first = {"path": "a.jpg", "labels": ["size"], "attributes": {"size": "a"}}
    f = jsonl(tmp_path / "d.jsonl", first, {"path": "b.jpg", "attributes": {"size": "b"}})
    message = error_of(read_jsonl, f)
    assert "d.jsonl" in message and "duplicate" in message and "size" in message


def test_jsonl_attribute_without_classes_is_rejected(tmp_path):
    f = jsonl(tmp_path / "d.jsonl", {"path": "a.jpg", "labels": ["x"], "attributes": {"size": None}})
    message = error_of(read_jsonl, f)
    assert "d.jsonl" in message and "'size'" in message and "0 class" in message


# -- detection and load_source --------------------------------------------------
@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("a.jsonl", '{"path": "x"}\n', "jsonl"),
        ("a.NDJSON", '{"path": "x"}\n', "jsonl"),
        ("a.csv", "image_name,tags\nx,y\n", "csv-tags"),
        ("a.csv", "\n\ufeffPath, Labels \nx,y\n", "csv-tags"),
        ("a.csv", "path,cat,dog\nx,1,0\n", "csv-multihot"),
        ("a.tsv", "path\tCategories\nx\ty\n", "csv-tags"),
        ("a.txt", "path,cat\nx,1\n", "csv-multihot"),
    ],
)
def test_detect_format(tmp_path, name, text, expected):
    assert detect_format(write(tmp_path / name, text)) == expected


def test_detect_format_errors(tmp_path):
    message = error_of(detect_format, write(tmp_path / "a.xml", "<x/>"))
    assert "a.xml" in message and all(f in message for f in FORMATS)
    assert "file not found" in error_of(detect_format, tmp_path / "missing.csv")
    assert "empty" in error_of(detect_format, write(tmp_path / "e.csv", "\n\n"))


def test_load_source_dispatches_and_format_overrides(tmp_path):
    f = write(tmp_path / "m.txt", '{"path": "a.jpg", "labels": ["x"]}\n')
    assert load_source(f, format="jsonl").meta["format"] == "jsonl"
    g = write(tmp_path / "g.csv", "path,cat\na.jpg,1\n")
    assert load_source(g).meta["format"] == "csv-multihot"
    assert load_source(g, format="csv-tags", tags_column="cat").schema.labels == ("1",)
    h = write(tmp_path / "h.csv", "path,tags\na.jpg,x|y\n")
    assert load_source(h, tag_separator="|").schema.labels == ("x", "y")


def test_load_source_unknown_format_suggests_the_closest(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_source(tmp_path / "a.csv", format="csv_multihot")
    message = str(info.value)
    assert all(f in message for f in FORMATS) and "did you mean 'csv-multihot'" in message


# -- errors common to the readers ------------------------------------------------
READERS = [read_tags_csv, read_multihot_csv, read_jsonl, load_source]


@pytest.mark.parametrize("reader", READERS)
def test_file_not_found(tmp_path, reader):
    message = error_of(reader, tmp_path / "nope.csv" if reader is not read_jsonl else tmp_path / "n.jsonl")
    assert "file not found" in message


@pytest.mark.parametrize("reader", [read_tags_csv, read_multihot_csv, read_jsonl])
@pytest.mark.parametrize("text", ["", "\n  \n", "\ufeff"])
def test_empty_file(tmp_path, reader, text):
    f = write(tmp_path / "empty.csv", text)
    assert error_of(reader, f) == f"{f}: the file is empty"


def test_not_utf8_names_the_line(tmp_path):
    f = write(tmp_path / "l.csv", b"path,tags\na.jpg,cat\nb.jpg,caf\xe9\n")
    message = error_of(read_tags_csv, f)
    assert message.startswith(f"{f}:3:") and "UTF-8" in message


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


@pytest.mark.parametrize("reader", [read_tags_csv, read_multihot_csv])
def test_csv_wrong_number_of_fields(tmp_path, reader):
    f = write(tmp_path / "l.csv", 'path,tags\na.jpg,"x\ny"\n\nb.jpg,x,extra\n')
    message = error_of(reader, f)
    assert message.startswith(f"{f}:5:") and "3 fields" in message and "header has 2" in message


@pytest.mark.parametrize("reader", [read_tags_csv, read_multihot_csv])
def test_csv_empty_path(tmp_path, reader):
    f = write(tmp_path / "l.csv", "image,tags\na.jpg,1\n  ,1\n")
    message = error_of(reader, f)
    assert message.startswith(f"{f}:3: field 'image':") and "empty image path" in message


def test_csv_module_errors_become_data_errors(tmp_path):
    f = write(tmp_path / "l.csv", "path,tags\na.jpg," + "x" * 200 + "\n")
    old = csv.field_size_limit(50)
    try:
        message = error_of(read_tags_csv, f)
    finally:
        csv.field_size_limit(old)
    assert message.startswith(f"{f}:2:") and "malformed CSV" in message


def test_no_labels_found(tmp_path):
    message = error_of(read_tags_csv, write(tmp_path / "l.csv", "path,tags\na.jpg,\n"))
    assert "l.csv" in message and "no labels" in message


# -- fuzzing ------------------------------------------------------------------------
# Malformed CSV and JSON lines meet one of two outcomes: a consistent manifest, or an MlicError
# whose message names the file. MLIC_FUZZ_EXAMPLES=20000 runs that many random cases instead of
# the fixed (derandomized) ones.


FUZZ_SCHEMA = LabelSchema(("cat", "dog"), (Attribute("size", ("small", "large")),))
BIG_DIGITS = "9" * 5000  # more digits than int() converts by default
CELLS = [
    "", " ", "1", "0", "-1", "1.0", "-1.0", "true", "False", "yes", "no", "2", "nan", "inf", "-0", "1e999",
    "²", "٣", "x" + BIG_DIGITS, "cat", "dog", "cat dog", "small", "large", "a.jpg", "b", "x/y.png",
    "../up.jpg", "/abs.jpg", "a\x00b", "d\x00/x.jpg", "a" * 300, "a" * 300 + "/b", '"', '""', ",", "\t",
    "\n", "\r", "\ufeff", "\u2028", "é",
]  # fmt: skip
HEADER_CELLS = [
    "path", "image", "Image_Name", "file", "tags", "labels", "Label", "cat", "dog", "size", "", " ",
]  # fmt: skip
CSV_SEEDS = [
    b"path,tags\na.jpg,dog cat\nb.jpg,\nc,dog\n",
    b"path,cat,dog,size\na.jpg,1,0,small\nb.jpg,0,,large\nc.jpg,-1,true,\n",
    b"image\ttags\ta\tb\na.png\tcat\t1\t2\n",
    b'\xef\xbb\xbfpath,tags\r\n"a,1.jpg","cat,dog"\r\n',
]
JSONL_SEEDS = [
    b'{"path": "a.jpg", "labels": ["cat"], "unknown": ["dog"], "attributes": {"size": "small"}}\n'
    b'{"path": "b.jpg", "labels": [], "attributes": {"size": 2}}\n\n{"path": "c"}\n',
]
TOKENS = [
    b",", b"\t", b'"', b"\n", b"\r\n", b"\r", b"\x00", b"\xff", b"\xc3", b"\xef\xbb\xbf", b"[", b"]", b"{",
    b"}", b":", b"null", b"NaN", b"-Infinity", b"1e999", BIG_DIGITS.encode(), "²".encode(), b"true",
    b'"path"', b"[" * 3000, b'"' + b"a" * 300 + b'"',
]  # fmt: skip


def _encode(draw, text: str) -> bytes:
    data = text.encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    return data


@st.composite
def csv_texts(draw) -> bytes:
    """Plausible CSV: a header from likely column names, rows of odd cells, quoted or not, any width."""
    cell = st.sampled_from(CELLS) | st.text(max_size=6)
    width = draw(st.integers(1, 5))
    header = draw(
        st.lists(st.sampled_from(HEADER_CELLS) | st.text(max_size=4), min_size=width, max_size=width)
    )
    rows = [header, *draw(st.lists(st.lists(cell, max_size=width + 1), max_size=6))]
    delimiter = draw(st.sampled_from([",", "\t", ";"]))
    if draw(st.booleans()):
        out = io.StringIO()
        quoting = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]))
        csv.writer(out, delimiter=delimiter, quoting=quoting).writerows(rows)
        text = out.getvalue()
    else:  # no quoting at all: delimiters, quotes and newlines inside cells break the rows
        newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
        text = newline.join(delimiter.join(r) for r in rows) + draw(st.sampled_from(["", newline]))
    return _encode(draw, text)


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(CELLS)
    | st.text(max_size=5)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda v: st.lists(v, max_size=3) | st.dictionaries(st.text(max_size=4), v, max_size=3),
    max_leaves=6,
)
NAMES = st.sampled_from(["cat", "dog", "", " ", "cat ", "size", "a.jpg", "²"]) | st.text(max_size=4)


@st.composite
def jsonl_texts(draw) -> bytes:
    """Plausible JSON lines: records whose every field may be missing, null or of a wrong type."""
    lines = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["record", "record", "record", "value", "raw"]))
        if kind == "raw":
            lines.append(
                draw(st.sampled_from(["", "{", "[" * 3000, '{"path": ' + BIG_DIGITS + "}", "nul\x00"]))
            )
            continue
        if kind == "value":
            lines.append(json.dumps(draw(JSON_VALUES)))
            continue
        record = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "path": st.sampled_from(CELLS) | JSON_VALUES,
                    "labels": st.lists(NAMES, max_size=3) | JSON_VALUES,
                    "unknown": st.lists(NAMES, max_size=3) | JSON_VALUES,
                    "attributes": st.dictionaries(NAMES, NAMES | JSON_SCALARS, max_size=3) | JSON_VALUES,
                },
            )
        )
        lines.append(json.dumps(record, ensure_ascii=draw(st.booleans())))
    return _encode(draw, "\n".join(lines) + draw(st.sampled_from(["", "\n", "\r\n"])))


OPTIONS = [  # options of load_data, most of them for CSV
    {}, {}, {"tag_separator": ","}, {"path_column": "image"}, {"tags_column": "labels"},
    {"images_root": "/nowhere"},
]  # fmt: skip


@fuzz(1500)
@given(
    data=csv_texts() | jsonl_texts() | mutated(CSV_SEEDS + JSONL_SEEDS, TOKENS),
    name=st.sampled_from(["d.csv", "d.tsv", "d.txt", "d.jsonl", "d.ndjson", "d.json"]),
    format=st.sampled_from([None, None, "csv-tags", "csv-multihot", "jsonl"]),
    schema=st.sampled_from([None, None, FUZZ_SCHEMA]),
    options=st.sampled_from(OPTIONS),
)
def test_fuzz_text_sources_read_or_name_the_file(data, name, format, schema, options):
    """Generated and mutated CSV and JSON lines, read by ``load_data`` or a given reader, schema or not."""
    note(f"{name}: {data!r}")  # the file's bytes: some Hypothesis installs print blank arguments
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / name
        f.write_bytes(data)
        png(Path(tmp) / "b.png")
        if format is None:
            read_or_error(lambda: load_data(f, schema=schema, **options), f)
        else:
            read_or_error(lambda: load_source(f, format=format, schema=schema, **options), f)


# Regressions that the fuzzing found: each raised something other than an MlicError, or read nonsense.
def test_odd_attribute_classes_sort_in_a_total_order(tmp_path):
    """A superscript digit and a 5,000-digit run crashed the natural sort; NaN made it hash-dependent."""
    f = write(tmp_path / "m.csv", f"path,size\na.jpg,²\nb.jpg,x{BIG_DIGITS}\nc.jpg,nan\nd.jpg,3\n")
    m = read_multihot_csv(f)
    assert m.schema.attribute("size").classes == ("3", "nan", "²", "x" + BIG_DIGITS)


def test_json_nested_too_deeply_is_invalid_json_at_its_line(tmp_path):
    f = write(tmp_path / "d.jsonl", '{"path": "a.jpg"}\n' + "[" * 100_000 + "\n")
    assert error_of(read_jsonl, f) == f"{f}:2: invalid JSON: nested too deeply"
    deep = write(tmp_path / "d.json", "[" * 100_000)
    assert error_of(detect_format, deep).startswith(f"{deep}: not a COCO file")


@pytest.mark.parametrize("reader", [read_tags_csv, read_multihot_csv])
def test_csv_with_a_header_only_is_an_error_not_an_empty_manifest(tmp_path, reader):
    f = write(tmp_path / "h.csv", "path,tags,cat\n")
    assert error_of(reader, f, schema=FUZZ_SCHEMA) == f"{f}: no rows below the header"


@pytest.mark.parametrize("cell", ["a\\u0000b.jpg", "\\ud800.jpg", "dir\\u0000/x"])
def test_image_paths_the_os_cannot_take_are_refused_at_their_line(tmp_path, cell):
    """A NUL or a lone surrogate in a path raised ValueError in os.listdir, or wherever the path was read."""
    f = write(tmp_path / "p.jsonl", f'{{"path": "ok.jpg"}}\n{{"path": "{cell}"}}\n')
    message = error_of(read_jsonl, f)
    assert message.startswith(f"{f}:2: field 'path': not a file path")
    g = write(tmp_path / "p.csv", "path,tags\na\x00b,cat\n")
    assert error_of(read_tags_csv, g).startswith(f"{g}:2: field 'path': not a file path")
