"""Tests of mlic.schema: target encoding, logit layout, JSON round trips and the errors of bad schemas."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlic.errors import SchemaError
from mlic.schema import UNKNOWN, Attribute, LabelSchema

LABELS = ("cat", "dog", "bird")
SIZE = Attribute("size", ("small", "medium", "large"))
INDOOR = Attribute("indoor", ("no", "yes"))
MIXED = LabelSchema(LABELS, (SIZE, INDOOR))
LABELS_ONLY = LabelSchema(LABELS)
ATTRIBUTES_ONLY = LabelSchema(attributes=(SIZE, INDOOR))


# -- encode / decode -------------------------------------------------------------------------------
def test_encode_present_absent_unknown_and_attributes():
    labels, attributes = MIXED.encode(["dog"], {"size": "large", "indoor": "no"}, unknown=["bird"])
    assert labels.dtype == np.int8 and attributes.dtype == np.int64
    np.testing.assert_array_equal(labels, [0, 1, UNKNOWN])
    np.testing.assert_array_equal(attributes, [2, 0])


def test_encode_attribute_none_or_missing_is_unknown():
    labels, attributes = MIXED.encode([], {"size": None})
    np.testing.assert_array_equal(labels, [0, 0, 0])
    np.testing.assert_array_equal(attributes, [UNKNOWN, UNKNOWN])
    _, attributes = MIXED.encode(attributes={"indoor": "yes"})
    np.testing.assert_array_equal(attributes, [UNKNOWN, 1])


def test_decode_inverts_encode():
    labels, attributes = MIXED.encode(["cat", "bird"], {"indoor": "yes"}, unknown=["dog"])
    assert MIXED.decode(labels, attributes) == {
        "labels": ["cat", "bird"],
        "unknown": ["dog"],
        "attributes": {"size": None, "indoor": "yes"},
    }


def test_encode_decode_round_trip_labels_only_and_attributes_only():
    labels, attributes = LABELS_ONLY.encode(["bird"])
    assert labels.shape == (3,) and attributes.shape == (0,)
    assert LABELS_ONLY.decode(labels, attributes) == {"labels": ["bird"], "unknown": [], "attributes": {}}
    labels, attributes = ATTRIBUTES_ONLY.encode(attributes={"size": "small", "indoor": "yes"})
    assert labels.shape == (0,)
    np.testing.assert_array_equal(attributes, [0, 1])
    assert ATTRIBUTES_ONLY.decode(labels, attributes)["attributes"] == {"size": "small", "indoor": "yes"}


def test_encode_unknown_label_is_an_error():
    with pytest.raises(SchemaError, match="'horse'"):
        MIXED.encode(["horse"])
    with pytest.raises(SchemaError, match="'horse'"):
        MIXED.encode(unknown=["horse"])


def test_encode_unknown_attribute_or_class_lists_the_valid_ones():
    with pytest.raises(SchemaError, match="'colour'") as info:
        MIXED.encode(attributes={"colour": "red"})
    assert "size" in str(info.value) and "indoor" in str(info.value)
    with pytest.raises(SchemaError, match="'huge'") as info:
        MIXED.encode(attributes={"size": "huge"})
    assert "['small', 'medium', 'large']" in str(info.value)


# -- layout ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("schema", "num_outputs", "label_slice", "attribute_slices"),
    [
        (LABELS_ONLY, 3, slice(0, 3), ()),
        (ATTRIBUTES_ONLY, 5, slice(0, 0), (slice(0, 3), slice(3, 5))),
        (MIXED, 8, slice(0, 3), (slice(3, 6), slice(6, 8))),
    ],
    ids=["labels-only", "attributes-only", "mixed"],
)
def test_logit_layout(schema, num_outputs, label_slice, attribute_slices):
    assert schema.num_outputs == num_outputs
    assert schema.label_slice == label_slice
    assert schema.attribute_slices == attribute_slices
    # The slices tile the logits exactly: every column belongs to one output, in order.
    columns = list(range(num_outputs))
    tiled = columns[schema.label_slice] + [c for sl in schema.attribute_slices for c in columns[sl]]
    assert tiled == columns


def test_lookups():
    assert MIXED.n_labels == 3 and MIXED.n_attributes == 2
    assert MIXED.attribute_names == ("size", "indoor")
    assert MIXED.label_index("bird") == 2
    assert MIXED.attribute("indoor") is INDOOR
    with pytest.raises(SchemaError, match="'horse'"):
        MIXED.label_index("horse")
    with pytest.raises(SchemaError, match="'colour'"):
        MIXED.attribute("colour")


def test_attributes_may_be_given_as_tuples():
    schema = LabelSchema(LABELS, (("size", ["small", "medium", "large"]),))
    assert schema.attributes == (SIZE,)
    assert isinstance(schema.attributes[0].classes, tuple)


# -- serialisation ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "schema", [LABELS_ONLY, ATTRIBUTES_ONLY, MIXED], ids=["labels", "attributes", "mixed"]
)
def test_json_round_trip(schema):
    text = schema.to_json()
    assert json.loads(text) == schema.to_dict()
    again = LabelSchema.from_json(text)
    assert again == schema
    assert again.num_outputs == schema.num_outputs
    assert again.attribute_slices == schema.attribute_slices
    assert [again.label_index(n) for n in schema.labels] == list(range(schema.n_labels))


def test_from_dict_defaults_missing_sections_to_empty():
    assert LabelSchema.from_dict({"labels": ["a", "b"]}) == LabelSchema(("a", "b"))
    assert LabelSchema.from_dict({"attributes": [{"name": "s", "classes": ["x", "y"]}]}) == LabelSchema(
        attributes=(Attribute("s", ("x", "y")),)
    )


@pytest.mark.parametrize(
    "text",
    ["{not json", "", '{"labels": ["a"],}'],
    ids=["garbage", "empty", "trailing-comma"],
)
def test_from_json_rejects_malformed_json(text):
    with pytest.raises(SchemaError, match="not valid JSON"):
        LabelSchema.from_json(text)


@pytest.mark.parametrize(
    "text",
    [
        "[1]",
        '"labels"',
        "null",
        '{"labels": null}',
        '{"attributes": [{"classes": ["a", "b"]}]}',
        '{"attributes": [{"name": "size"}]}',
        '{"attributes": [["size", ["a", "b"]]]}',
        '{"attributes": 3}',
    ],
    ids=[
        "list",
        "string",
        "null",
        "labels-null",
        "attribute-without-name",
        "attribute-without-classes",
        "attribute-as-list",
        "attributes-not-a-list",
    ],
)
def test_from_json_rejects_malformed_structure(text):
    with pytest.raises(SchemaError, match="malformed schema"):
        LabelSchema.from_json(text)


def test_from_dict_rejects_bad_names_with_schema_error():
    with pytest.raises(SchemaError, match="non-empty string"):
        LabelSchema.from_dict({"labels": ["a", 3]})
    with pytest.raises(SchemaError, match="duplicate"):
        LabelSchema.from_dict({"labels": ["a", "a"]})


def test_from_dict_rejects_a_string_where_a_list_is_expected():
    with pytest.raises(SchemaError):
        LabelSchema.from_dict({"labels": "cat"})


# -- schema errors ---------------------------------------------------------------------------------
def test_duplicate_label_names():
    with pytest.raises(SchemaError, match=r"duplicate label and attribute names: \['cat'\]"):
        LabelSchema(("cat", "dog", "cat"))


def test_label_name_equal_to_attribute_name():
    with pytest.raises(SchemaError, match=r"duplicate label and attribute names: \['size'\]"):
        LabelSchema(("cat", "size"), (SIZE,))


def test_duplicate_attribute_names():
    with pytest.raises(SchemaError, match=r"duplicate .*\['size'\]"):
        LabelSchema(attributes=(SIZE, Attribute("size", ("a", "b"))))


@pytest.mark.parametrize("name", ["", " ", "\t\n"], ids=["empty", "space", "whitespace"])
def test_empty_or_whitespace_names(name):
    with pytest.raises(SchemaError, match="label name must be a non-empty string"):
        LabelSchema(("cat", name))
    with pytest.raises(SchemaError, match="attribute name must be a non-empty string"):
        Attribute(name, ("a", "b"))
    with pytest.raises(SchemaError, match="class of attribute 'size' name must be a non-empty string"):
        Attribute("size", ("a", name))


@pytest.mark.parametrize("name", [1, None, 2.5, b"cat", ("cat",)], ids=repr)
def test_non_string_names(name):
    with pytest.raises(SchemaError, match="must be a non-empty string"):
        LabelSchema(("cat", name))
    with pytest.raises(SchemaError, match="must be a non-empty string"):
        Attribute(name, ("a", "b"))
    with pytest.raises(SchemaError, match="must be a non-empty string"):
        Attribute("size", ("a", name))


@pytest.mark.parametrize("classes", [(), ("only",)], ids=["none", "one"])
def test_attribute_needs_two_classes(classes):
    with pytest.raises(SchemaError, match=f"'size' has {len(classes)} class\\(es\\); it needs at least 2"):
        Attribute("size", classes)


def test_attribute_duplicate_classes():
    with pytest.raises(SchemaError, match=r"duplicate classes of attribute 'size': \['s'\]"):
        Attribute("size", ("s", "m", "s"))


def test_empty_schema():
    with pytest.raises(SchemaError, match="at least one label or one attribute"):
        LabelSchema()


def test_class_index_lists_valid_classes():
    assert SIZE.class_index("medium") == 1
    with pytest.raises(SchemaError, match=r"'tiny' is not a class of attribute 'size'; expected one of"):
        SIZE.class_index("tiny")


# -- check_targets ---------------------------------------------------------------------------------
def test_check_targets_accepts_valid_targets():
    labels = np.array([[1, 0, -1], [0, 0, 1]], dtype=np.int8)
    attributes = np.array([[2, -1], [0, 1]], dtype=np.int64)
    MIXED.check_targets(labels, attributes)
    LABELS_ONLY.check_targets(labels, np.zeros((2, 0), dtype=np.int64))
    ATTRIBUTES_ONLY.check_targets(np.zeros((2, 0), dtype=np.int8), attributes)
    MIXED.check_targets(np.zeros((0, 3), dtype=np.int8), np.zeros((0, 2), dtype=np.int64))


@pytest.mark.parametrize(
    ("labels_shape", "attributes_shape", "message"),
    [
        ((2, 4), (2, 2), r"label targets have shape \(2, 4\); expected \[N, 3\]"),
        ((3,), (2, 2), r"label targets have shape \(3,\); expected \[N, 3\]"),
        ((2, 3), (2, 1), r"attribute targets have shape \(2, 1\); expected \[N, 2\]"),
        ((2, 3), (2,), r"attribute targets have shape \(2,\); expected \[N, 2\]"),
        ((2, 3), (3, 2), "different numbers of rows"),
    ],
)
def test_check_targets_shape_errors(labels_shape, attributes_shape, message):
    with pytest.raises(SchemaError, match=message):
        MIXED.check_targets(np.zeros(labels_shape, np.int8), np.zeros(attributes_shape, np.int64))


@pytest.mark.parametrize("bad", [2, -2], ids=["two", "minus-two"])
def test_check_targets_label_value_errors(bad):
    labels = np.array([[1, 0, bad]], dtype=np.int8)
    with pytest.raises(SchemaError, match=r"1 \(present\), 0 \(absent\) or -1 \(unknown\)"):
        MIXED.check_targets(labels, np.zeros((1, 2), np.int64))


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ([[3, 0]], "attribute 'size' targets must be -1 or a class index below 3"),
        ([[0, 2]], "attribute 'indoor' targets must be -1 or a class index below 2"),
        ([[-2, 0]], "attribute 'size' targets must be -1"),
    ],
)
def test_check_targets_attribute_value_errors(attributes, message):
    with pytest.raises(SchemaError, match=message):
        MIXED.check_targets(np.zeros((1, 3), np.int8), np.array(attributes, np.int64))


def test_schema_error_is_a_value_error():
    assert issubclass(SchemaError, ValueError)
