"""Tests of mlic.data.formats.csv_multihot: label and attribute columns, cell values, a naive reader."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from helpers import error_of, write
from mlic.data.formats import csv_multihot
from mlic.data.formats.csv_multihot import read_multihot_csv
from mlic.schema import Attribute, LabelSchema

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
    monkeypatch.setattr(csv_multihot, "MAX_CODES", 4)
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
