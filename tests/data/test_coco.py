"""Tests of mlic.data.formats.coco: categories, unannotated images, images roots, errors, fuzzing."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from helpers import coco, coco_data, error_of, fuzz, image, mutated, read_or_error, voc, write
from mlic.data.formats import load_data, load_source
from mlic.data.formats.coco import read_coco
from mlic.data.formats.voc import read_voc
from mlic.schema import LabelSchema


# -- COCO -------------------------------------------------------------------------
def test_coco_labels_follow_category_ids_and_unannotated_images_are_negative(tmp_path):
    f = coco(tmp_path / "instances.json")
    m = read_coco(f)
    assert m.schema == LabelSchema(("cat", "dog", "zebra"))
    np.testing.assert_array_equal(m.labels, [[1, 1, 0], [0, 1, 0], [0, 0, 0]])
    assert m.paths == [str(tmp_path / f"{i}.jpg") for i in range(3)]
    assert m.attributes.shape == (3, 0)
    assert m.meta["format"] == "coco" and m.meta["unannotated"] == 1 and m.source == str(f)
    assert m.missing_files() == []


def test_coco_never_builds_the_dense_matrix(tmp_path):
    m = read_coco(coco(tmp_path / "instances.json"))
    assert m._dense is None
    assert m.label_lists.indices.tolist() == [0, 1, 1] and m.label_lists.indptr.tolist() == [0, 2, 3, 3]


def test_coco_drop_unannotated(tmp_path):
    f = coco(tmp_path / "instances.json")
    for m in (read_coco(f, drop_unannotated=True), load_source(f, drop_unannotated=True)):
        assert len(m) == 2 and m.paths[-1] == str(tmp_path / "1.jpg")
        np.testing.assert_array_equal(m.labels, [[1, 1, 0], [0, 1, 0]])
        assert m.meta["unannotated"] == 1 and m.meta["drop_unannotated"]
    data = coco_data()
    data["annotations"] = []
    message = error_of(read_coco, coco(tmp_path / "none.json", data), drop_unannotated=True)
    assert "none.json" in message and "'annotations'" in message


@pytest.mark.parametrize(
    ("json_at", "images_at"),
    [
        ("data.json", ""),
        ("data.json", "images"),
        ("annotations/instances_val2017.json", "val2017"),
        ("annotations/instances_val2017.json", "images/val2017"),
        ("annotations/instances_val2017.json", "annotations"),
    ],
)
def test_coco_default_images_root_follows_common_layouts(tmp_path, json_at, images_at):
    f = coco(tmp_path / json_at, images=tmp_path / images_at)
    m = read_coco(f)
    assert m.paths[0] == str(tmp_path / images_at / "0.jpg") and m.missing_files() == []
    assert m.meta["images_root"] == str(tmp_path / images_at)


def test_coco_images_root_overrides_and_missing_images_resolve_beside_the_json(tmp_path):
    f = coco(tmp_path / "annotations" / "instances_train.json", images=tmp_path / "pics")
    assert read_coco(f, images_root=tmp_path / "pics").missing_files() == []
    m = read_coco(f)
    assert m.paths[0] == str(tmp_path / "annotations" / "0.jpg") and len(m.missing_files()) == 3


def test_coco_with_a_schema_drops_unknown_categories_with_one_warning(tmp_path):
    f = coco(tmp_path / "instances.json")
    schema = LabelSchema(("bird", "cat"))
    with pytest.warns(UserWarning, match=r"'dog' \(2 rows\)") as record:
        m = read_coco(f, schema=schema)
    assert len(record) == 1
    assert m.schema == schema and m.meta["dropped"] == ["dog"]
    np.testing.assert_array_equal(m.labels, [[0, 1], [0, 0], [0, 0]])


def _mutate(data: dict, change: str) -> object:
    if change == "duplicate image id":
        data["images"][1]["id"] = 10
    elif change == "unknown image id":
        data["annotations"][3]["image_id"] = 99
    elif change == "unknown category id":
        data["annotations"][1]["category_id"] = 2
    elif change == "no file name":
        del data["images"][2]["file_name"]
    elif change == "bad category name":
        data["categories"][0]["name"] = ""
    elif change == "duplicate category id":
        data["categories"][2]["id"] = 3
    elif change == "no annotations":
        del data["annotations"]
    elif change == "images not a list":
        data["images"] = {"id": 1}
    elif change == "top-level list":
        return [data]
    return data


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ("duplicate image id", "images[1].id", "duplicate image id 10"),
        ("unknown image id", "annotations[3].image_id", "annotation id 4: no image has id 99"),
        ("unknown category id", "annotations[1].category_id", "no category has id 2"),
        ("no file name", "images[2].file_name", "missing"),
        ("bad category name", "categories[0].name", "non-empty string"),
        ("duplicate category id", "categories[2].id", "duplicate category id 3"),
        ("no annotations", "annotations", "missing"),
        ("images not a list", "images", "must be a list"),
        ("top-level list", None, "got a JSON list"),
    ],
)
def test_coco_errors_name_the_file_and_the_field(tmp_path, change, field, words):
    f = write(tmp_path / "bad.json", json.dumps(_mutate(coco_data(), change)))
    message = error_of(read_coco, f)
    assert message.startswith(f"{f}: ") and words in message
    assert field is None or f"field {field!r}" in message


def test_coco_malformed_json_names_the_line(tmp_path):
    f = write(tmp_path / "bad.json", '{\n  "images": [],\n  "categories": [,]\n}\n')
    message = error_of(read_coco, f)
    assert message.startswith(f"{f}:3: invalid JSON")


# -- Pascal VOC -------------------------------------------------------------------
BIG_DIGITS = "9" * 5000  # more digits than int() converts by default


TOKENS = [
    b",", b'"', b"\n", b"\x00", b"\xff", b"\xef\xbb\xbf", b"[", b"]", b"{", b"}", b":", b"null", b"NaN",
    b"-Infinity", b"1e999", BIG_DIGITS.encode(), b"true", b"<", b">", b"</", b"&", b"&amp;", b"&e;",
    b"<![CDATA[", b"]]>", b"<!--", b"[" * 3000, b"<a>" * 300,
]  # fmt: skip


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=4)
)


JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda v: st.lists(v, max_size=3) | st.dictionaries(st.text(max_size=4), v, max_size=3),
    max_leaves=6,
)


IDS = st.integers(-2, 12) | st.sampled_from([2**63, -(2**64), "1", "a", "", True, False, 1.0, 1.5, None, []])


FILE_NAMES = st.sampled_from(
    ["0.jpg", "1.jpg", "a/b.png", "../up.jpg", "/abs.jpg", "", " ", "x" * 300, "a\x00b", "\ud800", "c"]
)


NAMES = st.sampled_from(["cat", "dog", "", " ", "cat ", "²"]) | st.text(max_size=4)


def mostly(value: st.SearchStrategy) -> st.SearchStrategy:
    """``value`` three times in four; else any JSON value (a wrong type, null, a nested list...)."""
    return st.one_of(value, value, value, JSON_VALUES)


@st.composite
def coco_objects(draw) -> object:
    """A COCO-like object whose every entry and field may be missing, of a wrong type, or unknown."""

    def entry(**fields: st.SearchStrategy) -> st.SearchStrategy:
        return st.fixed_dictionaries({}, optional=fields) | JSON_SCALARS

    images = draw(st.lists(entry(id=mostly(IDS), file_name=mostly(FILE_NAMES)), max_size=4))
    categories = draw(st.lists(entry(id=mostly(IDS), name=mostly(NAMES)), max_size=4))
    known = [x["id"] for x in images + categories if isinstance(x, dict) and "id" in x] or [0]
    ref = st.sampled_from(known) | IDS
    annotation = entry(id=IDS, image_id=mostly(ref), category_id=mostly(ref), iscrowd=IDS)
    annotations = draw(st.lists(annotation, max_size=6))
    parts = {"images": images, "categories": categories, "annotations": annotations}
    data = {k: draw(mostly(st.just(v))) for k, v in parts.items() if draw(st.integers(0, 9))}
    return draw(st.sampled_from([data, data, data, draw(JSON_VALUES)]))


def coco_seeds() -> list[bytes]:
    return [json.dumps(coco_data()).encode(), json.dumps(coco_data(1), indent=1).encode()]


@st.composite
def coco_texts(draw) -> bytes:
    """COCO JSON: a generated object (NaN and Infinity included), one with odd bytes, or a mutated file."""
    kind = draw(st.sampled_from(["object", "object", "mutated", "raw"]))
    if kind == "mutated":
        return draw(mutated(coco_seeds(), TOKENS))
    if kind == "raw":
        return draw(
            st.sampled_from(
                [b"", b"\xef\xbb\xbf", b"[" * 100_000, b'{"images": ' + BIG_DIGITS.encode() + b"}"]
            )
        )
    text = json.dumps(draw(coco_objects()), ensure_ascii=draw(st.booleans()))
    return text.encode("utf-8", "surrogatepass")


@fuzz(1000)
@given(
    data=coco_texts(),
    at=st.sampled_from(["instances.json", "annotations/instances_val.json", "coco.json"]),
    how=st.sampled_from(["load_data", "read_coco", "drop_unannotated"]),
)
def test_fuzz_coco_reads_or_names_the_file(data, at, how):
    """Generated and mutated COCO files, read by ``load_data`` (detection) or ``read_coco``."""
    note(f"{at}: {data!r}")  # the file's bytes: some Hypothesis installs print blank arguments
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / at
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)
        image(Path(tmp) / "0.jpg")
        if how == "load_data":
            read_or_error(lambda: load_data(f), f)
        else:
            read_or_error(lambda: read_coco(f, drop_unannotated=how == "drop_unannotated"), f)


# Regressions that the fuzzing found: each raised something other than an MlicError, or misread.
@pytest.mark.parametrize(
    ("text", "words"),
    [("[" * 100_000, "invalid JSON: nested too deeply"), ('{"images": ' + BIG_DIGITS + "}", "invalid JSON")],
    ids=["deep", "long integer"],
)
def test_coco_json_that_python_refuses_is_invalid_json(tmp_path, text, words):
    """RecursionError and the ValueError of the 4,300-digit integer limit escaped."""
    f = write(tmp_path / "instances.json", text)
    assert error_of(read_coco, f).startswith(f"{f}: {words}")
    assert error_of(load_data, f).startswith(f"{f}: not a COCO file")


@pytest.mark.parametrize(("key", "value"), [("image_id", True), ("category_id", 1.0), ("image_id", 10.0)])
def test_coco_annotation_ids_that_only_equal_an_id_are_refused(tmp_path, key, value):
    """true and 1.0 equal 1, so they found image or category 1 and labelled it silently."""
    data = coco_data()
    data["categories"][1]["id"] = 1
    data["annotations"][2][key] = value
    message = error_of(read_coco, write(tmp_path / "c.json", json.dumps(data)))
    assert (
        f"field 'annotations[2].{key}': annotation id 3: must be an integer or a string, got {value!r}"
        in message
    )


def test_names_too_long_for_the_os_raise_no_os_error(tmp_path):
    """A 300-character file name or image-set id raised OSError (ENAMETOOLONG) from Path.is_file."""
    data = coco_data()
    data["images"][0]["file_name"] = "x" * 300 + ".jpg"
    m = read_coco(write(tmp_path / "c.json", json.dumps(data)))
    assert m.paths[0] == str(tmp_path / ("x" * 300 + ".jpg"))
    root = voc(tmp_path / "VOC")
    listing = write(root / "ImageSets" / "Main" / "long.txt", "a\n" + "y" * 300 + "\n")
    assert error_of(read_voc, listing).startswith(f"{listing}:2: no annotation file")
