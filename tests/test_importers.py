"""Tests of mlic.data.importers: COCO, Pascal VOC and folder-per-label data, detection and the CLI."""

from __future__ import annotations

import html
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from conftest import fuzz, mutated, read_or_error
from mlic.cli import app
from mlic.data import detect_format, importers, load_data, load_source
from mlic.data.importers import read_coco, read_folders, read_voc
from mlic.errors import ConfigError, DataError
from mlic.schema import LabelSchema

runner = CliRunner()
TRAIN_ARGS = [
    "--max-epochs", "1", "--batch-size", "8", "--image-size", "32", "--workers", "0", "--no-progress",
]  # fmt: skip


def image(path: Path, seed: int = 0) -> Path:
    """A small random RGB image (PNG or JPEG by the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def error_of(call, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        call(*args, **kwargs)
    return str(info.value)


# -- COCO -------------------------------------------------------------------------
def coco_data(n_images: int = 3) -> dict:
    """Categories out of id order (one never used); image 3 has no annotation; a crowd and a repeat."""
    return {
        "info": {"description": "tiny"},
        "images": [
            {"id": 10 + i, "file_name": f"{i}.jpg", "width": 16, "height": 16} for i in range(n_images)
        ],
        "categories": [
            {"id": 3, "name": "dog", "supercategory": "animal"},
            {"id": 1, "name": "cat", "supercategory": "animal"},
            {"id": 7, "name": "zebra", "supercategory": "animal"},
        ],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 1, "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 1, "iscrowd": 0},
            {"id": 3, "image_id": 10, "category_id": 3, "iscrowd": 1},
            {"id": 4, "image_id": 11, "category_id": 3, "iscrowd": 0},
        ],
    }


def coco(path: Path, data: dict | None = None, images: Path | None = None) -> Path:
    """Write a COCO JSON at ``path`` and its images into ``images`` (default: beside it)."""
    data = data or coco_data()
    for i, entry in enumerate(data["images"]):
        image(Path(images or path.parent) / entry["file_name"], seed=i)
    return write(path, json.dumps(data))


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
def voc_xml(objects: list[tuple[str, int | None]], filename: str | None = None) -> str:
    """An annotation file: objects as (class name, difficult flag or None for no element)."""
    parts = ["<annotation><folder>VOC2012</folder>"]
    if filename is not None:
        parts.append(f"<filename>{filename}</filename>")
    for name, difficult in objects:
        flag = "" if difficult is None else f"<difficult>{difficult}</difficult>"
        parts.append(f"<object><name>{name}</name>{flag}<part><name>hand</name></part></object>")
    return "".join([*parts, "</annotation>"])


def voc(root: Path) -> Path:
    """A VOC root: a has dog and a difficult dog and person; b a cat (PNG); c no <filename>."""
    write(root / "Annotations" / "a.xml", voc_xml([("dog", 0), ("dog", 1), ("person", 1)], "a.jpg"))
    write(root / "Annotations" / "b.xml", voc_xml([(" cat ", None)], "b.png"))
    write(root / "Annotations" / "c.xml", voc_xml([]))
    write(root / "ImageSets" / "Main" / "train.txt", "b\n\nc\nb\n")
    write(root / "ImageSets" / "Main" / "dog_train.txt", "a  1\nc -1\n")
    for name in ("a.jpg", "b.png", "c.jpg"):
        image(root / "JPEGImages" / name)
    return root


def test_voc_difficult_only_objects_make_the_label_unknown(tmp_path):
    root = voc(tmp_path / "VOC2012")
    m = read_voc(root)
    assert m.schema == LabelSchema(("cat", "dog", "person"))
    np.testing.assert_array_equal(m.labels, [[0, 1, -1], [1, 0, 0], [0, 0, 0]])
    assert m.paths == [str(root / "JPEGImages" / n) for n in ("a.jpg", "b.png", "c.jpg")]
    assert m.meta["format"] == "voc" and m.missing_files() == []


def test_voc_image_sets_restrict_and_order_the_images(tmp_path):
    root = voc(tmp_path / "VOC2012")
    m = read_voc(root / "ImageSets" / "Main" / "train.txt")
    assert [Path(p).stem for p in m.paths] == ["b", "c"]
    assert m.schema.labels == ("cat",) and m.meta["image_set"].endswith("train.txt")
    m = load_source(root / "ImageSets" / "Main" / "dog_train.txt")
    assert [Path(p).stem for p in m.paths] == ["a", "c"] and m.meta["format"] == "voc"


def test_voc_devkit_folder_and_images_root(tmp_path):
    root = voc(tmp_path / "VOCdevkit" / "VOC2012")
    assert read_voc(tmp_path / "VOCdevkit").paths == read_voc(root).paths
    m = read_voc(root, images_root=tmp_path / "elsewhere")
    assert m.paths[0] == str(tmp_path / "elsewhere" / "a.jpg")
    voc(tmp_path / "VOCdevkit" / "VOC2007")
    assert "holds several" in error_of(read_voc, tmp_path / "VOCdevkit")


def test_voc_with_a_schema_drops_unknown_classes_with_one_warning(tmp_path):
    root = voc(tmp_path / "VOC")
    with pytest.warns(UserWarning, match="'person'") as record:
        m = read_voc(root, schema=LabelSchema(("dog", "horse")))
    assert len(record) == 1 and sorted(m.meta["dropped"]) == ["cat", "person"]
    np.testing.assert_array_equal(m.labels, [[1, 0], [0, 0], [0, 0]])


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        ("<annotation><object><name>dog</name></object>", "a.xml:1", "malformed XML"),
        ("<annotation>\n<object><difficult>1</difficult></object></annotation>", "a.xml", "object[0].name"),
        (voc_xml([("dog", "maybe")]), "a.xml", "object[0].difficult"),  # type: ignore[list-item]
        ("<labels/>", "a.xml", "<annotation> root"),
    ],
)
def test_voc_malformed_annotations_name_the_file(tmp_path, text, where, words):
    root = voc(tmp_path / "VOC")
    write(root / "Annotations" / "a.xml", text)
    message = error_of(read_voc, root)
    assert message.startswith(str(root / "Annotations" / where)) and words in message


def test_voc_layout_errors(tmp_path):
    root = voc(tmp_path / "VOC")
    listing = write(root / "ImageSets" / "Main" / "val.txt", "a\nzz\n")
    message = error_of(read_voc, listing)
    assert message.startswith(f"{listing}:2:") and "'zz'" in message
    assert "not a VOC root" in error_of(read_voc, tmp_path / "VOC" / "JPEGImages")
    outside = write(tmp_path / "ids.txt", "a\n")
    assert "below a VOC root" in error_of(read_voc, outside)


# -- folders ------------------------------------------------------------------------
def folders(root: Path) -> Path:
    """cat/a + dog/a (one image), dog/b, loose c, bird/sub/d (nested), and things to ignore."""
    for i, rel in enumerate(["cat/a.png", "dog/a.png", "dog/b.jpg", "c.png", "bird/sub/d.JPG", "e.webp"]):
        image(root / rel, seed=i)
    image(root / ".cache" / "x.png")
    image(root / "__MACOSX" / "cat" / "a.png")
    image(root / "cat" / ".hidden.png")
    write(root / "cat" / "notes.txt", "not an image")
    write(root / "readme.md", "hello")
    (root / "empty").mkdir()
    return root


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


# -- detection, --format and load_data --------------------------------------------------
def test_detect_format_of_each_layout(tmp_path):
    assert detect_format(coco(tmp_path / "c" / "instances.json")) == "coco"
    jsonl = write(tmp_path / "l.json", '{"path": "a.jpg", "labels": ["x"]}\n{"path": "b.jpg"}\n')
    assert detect_format(jsonl) == "jsonl" and load_source(jsonl).meta["format"] == "jsonl"
    root = voc(tmp_path / "VOCdevkit" / "VOC2012")
    assert detect_format(root) == detect_format(tmp_path / "VOCdevkit") == "voc"
    assert detect_format(root / "ImageSets" / "Main" / "train.txt") == "voc"
    assert detect_format(folders(tmp_path / "f")) == "folders"
    assert detect_format(write(tmp_path / "c.csv", "path,tags\na.jpg,x\n")) == "csv-tags"
    assert load_data(root).meta["format"] == "voc"


def test_detect_format_reads_only_the_head_of_a_large_json(tmp_path, monkeypatch):
    monkeypatch.setattr(importers, "JSON_HEAD", 64)
    big = coco(tmp_path / "big.json")
    assert big.stat().st_size > 64 and detect_format(big) == "coco"
    other = write(tmp_path / "other.json", json.dumps({"rows": [{"x": i} for i in range(40)]}))
    assert "not a COCO file" in error_of(detect_format, other)


def test_detect_format_json_errors(tmp_path):
    assert "not a COCO file" in error_of(detect_format, write(tmp_path / "a.json", '{"rows": []}'))
    assert "empty" in error_of(detect_format, write(tmp_path / "e.json", "\n"))
    assert "file not found" in error_of(detect_format, tmp_path / "missing.json")


def test_format_forces_the_reader(tmp_path):
    root = voc(tmp_path / "VOC")
    with pytest.warns(UserWarning, match="without images"):
        m = load_source(root, format="folders")
    assert m.meta["format"] == "folders" and m.schema.labels == ("Annotations", "ImageSets", "JPEGImages")
    renamed = write(tmp_path / "coco.txt", json.dumps(coco_data()))
    assert load_source(renamed, format="coco").schema.labels == ("cat", "dog", "zebra")
    with pytest.raises(ConfigError, match="COCO data only"):
        load_source(root, drop_unannotated=True)
    with pytest.raises(ConfigError, match="images root"):
        load_source(folders(tmp_path / "f"), images_root=tmp_path)


# -- the command line ---------------------------------------------------------------------
def invoke(*args: object) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.stdout


def test_cli_trains_on_folders(tmp_path):
    root = tmp_path / "data"
    for i in range(10):
        image(root / ("cat" if i % 2 else "dog") / f"{i}.png", seed=i)
    image(root / "cat" / "0.png", seed=0)  # 0.png: cat and dog
    out = invoke("train", "--data", root, "--out", tmp_path / "run", *TRAIN_ARGS)
    meta = json.loads((Path(out.strip().splitlines()[-1]) / "mlic.json").read_text())
    assert meta["schema"]["labels"] == ["cat", "dog"]


def test_cli_trains_and_evaluates_on_coco_and_format_forces(tmp_path):
    data = coco_data(12)
    data["annotations"] += [
        {"id": 10 + i, "image_id": 10 + i, "category_id": 1 + 2 * (i % 2)} for i in range(2, 10)
    ]
    f = coco(tmp_path / "annotations" / "instances_train.json", data, images=tmp_path / "train")
    args = ["--drop-unannotated", "--out", tmp_path / "run", *TRAIN_ARGS]
    artifact = Path(invoke("train", "--data", f, *args).strip().splitlines()[-1])
    meta = json.loads((artifact / "mlic.json").read_text())
    assert meta["schema"]["labels"] == ["cat", "dog", "zebra"]
    figures = json.loads(invoke("evaluate", artifact, f, "--drop-unannotated", "--json", "--workers", "0"))
    assert figures["n_samples"] == 10
    assert json.loads(invoke("evaluate", artifact, f, "--json"))["n_samples"] == 12
    bad = runner.invoke(app, ["evaluate", str(artifact), str(tmp_path / "train"), "--format", "voc"])
    assert bad.exit_code == 2 and "not a VOC root" in bad.stderr


# -- fuzzing ------------------------------------------------------------------------
# Malformed COCO JSON, VOC XML and image-set lists, and odd label folders meet one of two outcomes:
# a consistent manifest, or an MlicError whose message names the file or folder read.
# MLIC_FUZZ_EXAMPLES=20000 runs that many random cases instead of the fixed (derandomized) ones.


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


SECRET = "s3cr3t-from-outside"
XML_TEXT = st.sampled_from(
    ["dog", " cat ", "", "&amp;", "&lt;b&gt;", "&e;", "&#0;", "&#x1F600;", "<![CDATA[x<y]]>", "<b>x</b>", "&"]
) | st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=4).map(html.escape)
DOCTYPES = [
    "",
    '<!DOCTYPE annotation [<!ENTITY e "dog">]>',
    '<!DOCTYPE annotation [<!ENTITY e SYSTEM "file://{secret}">]>',
    '<!DOCTYPE annotation [<!ENTITY % p SYSTEM "file://{secret}"> %p;]>',
    '<!DOCTYPE annotation SYSTEM "file://{secret}">',
    "<!DOCTYPE annotation [<!ENTITY a0 'ha'>"
    + "".join(f"<!ENTITY a{i} '{f'&a{i - 1};' * 10}'>" for i in range(1, 10))
    + "<!ENTITY e '&a9;'>]>",  # a billion laughs
    '<!DOCTYPE annotation [<!ENTITY e "' + "x" * 50_000 + '">]>',  # quadratic blow-up, with &e; many times
]

ODD_ENCODINGS = ["bogus", "base64", "utf-7", "idna", "punycode", "undefined", "big5", "cp037"]


@st.composite
def voc_xml_texts(draw, secret: Path) -> bytes:
    """A VOC annotation: odd roots, names, difficult flags, entities (internal, external, explosive)."""
    parts = []
    for _ in range(draw(st.integers(0, 3))):
        name = "" if draw(st.integers(0, 5)) == 0 else f"<name>{draw(XML_TEXT)}</name>"
        flag = draw(st.sampled_from(["0", "1", " 1 ", "True", "2", "-1", "maybe", "", "<x/>", "&e;"]))
        difficult = "" if draw(st.booleans()) else f"<difficult>{flag}</difficult>"
        parts.append(f"<object>{name}{difficult}<part><name>hand</name></part></object>")
    if draw(st.booleans()):
        parts.insert(0, f"<filename>{draw(XML_TEXT)}</filename>")
    if draw(st.integers(0, 3)) == 0:
        parts.append("<object><name>&e;</name></object>" * draw(st.sampled_from([1, 200])))
    root = draw(st.sampled_from(["annotation", "annotation", "labels", "a:annotation xmlns:a='urn:x'"]))
    doctype = draw(st.sampled_from(DOCTYPES)).format(secret=secret)
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-16", "latin-1"]))
    declared = draw(st.sampled_from(["", encoding, "utf-8", *ODD_ENCODINGS]))
    prolog = f'<?xml version="1.0" encoding="{declared}"?>' if declared else ""
    text = f"{prolog}{doctype}<{root}>{''.join(parts)}</{root.split()[0]}>"
    data = text.encode(encoding, "replace")
    return draw(mutated([data], TOKENS)) if draw(st.integers(0, 4)) == 0 else data


IDS_LINES = st.lists(
    st.sampled_from(["a", "b", "a 1", "b  -1", "zz", "", " ", "../Annotations/a", "x" * 300, "a\x00"]),
    max_size=4,
)


@fuzz(800)
@given(
    data=st.data(), n_files=st.integers(1, 2), use_list=st.booleans(), how=st.sampled_from(["load", "read"])
)
def test_fuzz_voc_reads_or_names_the_file_and_resolves_no_entity(data, n_files, use_list, how):
    """Generated VOC roots: entities never resolve outside the file, and never explode (expat refuses)."""
    with tempfile.TemporaryDirectory() as tmp:
        secret = write(Path(tmp) / "secret.txt", f"<name>{SECRET}</name>")
        root = Path(tmp) / "VOC"
        (root / "JPEGImages").mkdir(parents=True)
        (root / "Annotations").mkdir()
        for stem in "ab"[:n_files]:
            (root / "Annotations" / f"{stem}.xml").write_bytes(data.draw(voc_xml_texts(secret), label=stem))
        target = root
        if use_list:
            lines = data.draw(IDS_LINES, label="image set")
            target = write(root / "ImageSets" / "Main" / "train.txt", "\n".join(lines))
        call = (lambda: load_data(target)) if how == "load" else (lambda: read_voc(target))
        m = read_or_error(call, root)  # the list, or the annotation file that it names
        if m is not None:
            assert not any(SECRET in name for name in m.schema.labels + tuple(m.paths))


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


@pytest.mark.parametrize("encoding", ["bogus", "base64", "utf-7", "idna"])
def test_voc_xml_declaring_an_encoding_python_cannot_use_is_malformed(tmp_path, encoding):
    """LookupError, ValueError or UnicodeError escaped from the XML parser."""
    root = voc(tmp_path / "VOC")
    xml = write(root / "Annotations" / "a.xml", f'<?xml version="1.0" encoding="{encoding}"?><annotation/>')
    assert error_of(read_voc, root).startswith(f"{xml}: malformed XML: cannot decode the declared encoding")


def test_voc_entities_never_explode_nor_read_other_files(tmp_path):
    """Internal entities resolve; external ones are refused (expat fetches nothing), and so is a billion
    laughs (expat's amplification limit). Not a regression: the guarantee the fuzzing checks, spelled out."""
    root = voc(tmp_path / "VOC")
    xml = write(
        root / "Annotations" / "a.xml",
        f"{DOCTYPES[1]}<annotation><object><name>&e;</name></object></annotation>",
    )
    assert read_voc(root).schema.labels == ("cat", "dog")
    secret = write(tmp_path / "secret.txt", SECRET)
    for doctype in DOCTYPES[2:6]:  # external entities (general, parameter, DTD) and a billion laughs
        write(
            xml, f"{doctype.format(secret=secret)}<annotation><object><name>&e;</name></object></annotation>"
        )
        message = error_of(read_voc, root)
        assert message.startswith(f"{xml}:1: malformed XML") and SECRET not in message
