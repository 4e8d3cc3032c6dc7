"""Tests of mlic.data.formats, the registry: detection of every layout, --format, load_source."""

from __future__ import annotations

import json

import pytest

from helpers import coco, coco_data, error_of, folders, voc, write
from mlic.data.formats import FORMATS, detect_format, json_head, load_data, load_source
from mlic.errors import ConfigError


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


# -- COCO -------------------------------------------------------------------------
# -- Pascal VOC -------------------------------------------------------------------
# -- folders ------------------------------------------------------------------------
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
    monkeypatch.setattr(json_head, "JSON_HEAD", 64)
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
