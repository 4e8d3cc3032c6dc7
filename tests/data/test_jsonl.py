"""Tests of mlic.data.formats.jsonl: records, unknowns, attributes, and the errors of each line."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import error_of, jsonl, write
from mlic.data.formats import detect_format
from mlic.data.formats.jsonl import read_jsonl
from mlic.schema import Attribute, LabelSchema


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


def test_json_nested_too_deeply_is_invalid_json_at_its_line(tmp_path):
    f = write(tmp_path / "d.jsonl", '{"path": "a.jpg"}\n' + "[" * 100_000 + "\n")
    assert error_of(read_jsonl, f) == f"{f}:2: invalid JSON: nested too deeply"
    deep = write(tmp_path / "d.json", "[" * 100_000)
    assert error_of(detect_format, deep).startswith(f"{deep}: not a COCO file")
