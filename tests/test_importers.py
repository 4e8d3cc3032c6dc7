"""Tests of mlic.data.importers: COCO, Pascal VOC and folder-per-label data, detection and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

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
