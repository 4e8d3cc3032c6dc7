"""Tests of mlic.data.manifest: subsets, missing files and re-laying targets out for another schema."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mlic.data import multidigits
from mlic.data.manifest import Manifest, concat
from mlic.errors import DataError, SchemaError
from mlic.schema import Attribute, LabelSchema

SCHEMA = LabelSchema(("cat", "dog", "bird"), (Attribute("size", ("s", "m", "l")),))


def make(paths=("a.jpg", "b.jpg", "c.jpg"), **kwargs) -> Manifest:
    labels = np.array([[1, 0, -1], [0, 1, 0], [1, 1, 1]])[: len(paths)]
    attributes = np.array([[2], [-1], [0]])[: len(paths)]
    return Manifest(SCHEMA, list(paths), labels, attributes, source="data.csv", **kwargs)


def test_targets_are_cast_and_checked():
    m = make()
    assert m.labels.dtype == np.int8 and m.attributes.dtype == np.int64
    assert len(m) == 3
    with pytest.raises(SchemaError):
        Manifest(SCHEMA, ["a"], [[2, 0, 0]], [[0]])
    with pytest.raises(SchemaError):
        Manifest(SCHEMA, ["a"], [[1, 0, 0]], [[3]])
    with pytest.raises(DataError, match="2 images for 1 paths"):
        Manifest(SCHEMA, ["a"], [[1, 0, 0]], [[0]], pixels=np.zeros((2, 4, 4), np.uint8))


def test_subset_keeps_order_and_copies_meta():
    pixels = np.arange(3 * 2 * 2, dtype=np.uint8).reshape(3, 2, 2)
    m = make(pixels=pixels, meta={"split": "train"})
    sub = m.subset([2, 0])
    assert sub.paths == ["c.jpg", "a.jpg"]
    np.testing.assert_array_equal(sub.labels, m.labels[[2, 0]])
    np.testing.assert_array_equal(sub.attributes, [[0], [2]])
    np.testing.assert_array_equal(sub.pixels, pixels[[2, 0]])
    assert sub.source == "data.csv" and sub.schema is SCHEMA
    sub.meta["split"] = "val"
    assert m.meta["split"] == "train"
    empty = m.subset(np.array([], dtype=int))
    assert len(empty) == 0 and empty.labels.shape == (0, 3)


def test_check_files_lists_every_missing_file(tmp_path):
    paths = [str(tmp_path / f"{i}.png") for i in range(4)]
    for p in paths[::2]:
        Image.new("RGB", (8, 8)).save(p)
    m = Manifest(LabelSchema(("x",)), paths, np.zeros((4, 1)), np.zeros((4, 0)), source="l.csv")
    with pytest.raises(DataError) as info:
        m.check_files()
    message = str(info.value)
    assert message.startswith("l.csv: 2 of 4 image files are missing")
    assert paths[1] in message and paths[3] in message and paths[0] not in message
    m.subset([0, 2]).check_files()  # all present: no error


def test_check_files_caps_the_listing():
    paths = [f"/nonexistent/{i}.png" for i in range(53)]
    m = Manifest(LabelSchema(("x",)), paths, np.zeros((53, 1)), np.zeros((53, 0)))
    with pytest.raises(DataError) as info:
        m.check_files()
    message = str(info.value)
    assert message.startswith("manifest: 53 of 53") and "/nonexistent/49.png" in message
    assert "/nonexistent/50.png" not in message and "... and 3 more" in message


def test_check_files_skips_in_memory_pixels():
    m = make(paths=("n0", "n1", "n2"), pixels=np.zeros((3, 4, 4), np.uint8))
    m.check_files()


def test_to_schema_with_the_same_schema_is_identity():
    m = make()
    assert m.to_schema(LabelSchema(SCHEMA.labels, SCHEMA.attributes)) is m


def test_to_schema_relays_labels_marks_unknowns_and_lists_dropped():
    m = make()
    model = LabelSchema(("dog", "fish", "cat"), (Attribute("size", ("l", "m", "s", "xl")),))
    out = m.to_schema(model)
    assert out.schema is model
    np.testing.assert_array_equal(out.labels, [[0, -1, 1], [1, -1, 0], [1, -1, 1]])
    np.testing.assert_array_equal(out.attributes, [[0], [-1], [2]])  # l->0, unknown stays, s->2
    assert out.meta["dropped"] == ["bird"]
    assert out.paths == m.paths and out.source == m.source


def test_to_schema_drops_attributes_and_adds_unknown_ones():
    m = make()
    model = LabelSchema(("cat",), (Attribute("colour", ("red", "blue")),))
    out = m.to_schema(model)
    np.testing.assert_array_equal(out.labels, [[1], [0], [1]])
    np.testing.assert_array_equal(out.attributes, [[-1], [-1], [-1]])
    assert out.meta["dropped"] == ["dog", "bird", "size"]


def test_to_schema_rejects_attribute_classes_the_model_lacks():
    model = LabelSchema(SCHEMA.labels, (Attribute("size", ("s", "m")),))
    with pytest.raises(DataError) as info:
        make().to_schema(model)
    message = str(info.value)
    assert "data.csv" in message and "'size'" in message and "['l']" in message


def test_label_lists_are_the_stored_form_and_the_matrix_is_built_on_demand():
    from mlic.data.targets import LabelLists

    lists = LabelLists.from_lists([[0], [1, 2], []], 3, unknown=[[2], [], [0]])
    m = Manifest(SCHEMA, ["a", "b", "c"], lists, [[0], [1], [2]])
    assert m.label_lists is lists
    np.testing.assert_array_equal(m.labels, [[1, 0, -1], [0, 1, 1], [-1, 0, 0]])
    assert m.labels is m.labels  # built once
    np.testing.assert_array_equal(m.subset([2, 1]).label_lists.dense(), m.labels[[2, 1]])
    with pytest.raises(SchemaError, match=r"shape \(3, 3\); expected \[2, 3\]"):
        Manifest(SCHEMA, ["a", "b"], lists, [[0], [1]])


def test_hide_positives_records_what_it_hid():
    m = make()
    hidden = m.hide_positives(1.0, hidden_as="negative", seed=4)
    assert (hidden.labels == 1).sum() == 0 and (hidden.labels == -1).sum() == (m.labels == -1).sum()
    assert hidden.meta["hidden_positives"] == {"fraction": 1.0, "as": "negative", "seed": 4}
    assert hidden.paths == m.paths and "hidden_positives" not in m.meta


def test_concat_joins_images_and_targets_and_refuses_files_with_pixels():
    train, val = multidigits("train", 6, seed=1), multidigits("val", 4, seed=1)
    joined = concat([train, val])
    assert joined.paths == train.paths + val.paths and len(joined) == 10
    assert np.array_equal(joined.labels, np.concatenate([train.labels, val.labels]))
    assert np.array_equal(joined.pixels, np.concatenate([train.pixels, val.pixels]))
    assert np.array_equal(joined.attributes, np.concatenate([train.attributes, val.attributes]))
    files = Manifest(train.schema, train.paths, train.labels, train.attributes)
    with pytest.raises(DataError, match="in memory"):
        concat([files, val])
