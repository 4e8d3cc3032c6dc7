"""Tests of mlic.data.pack: any data mlic reads, written as shards and read back the same."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import image, jsonl
from mlic.data import load_data, multidigits
from mlic.data.images import decode_image
from mlic.data.pack import pack
from mlic.data.shards import SHARDS_FILE, is_shards
from mlic.data.split import stratified_split
from mlic.errors import ConfigError, DataError

pytest.importorskip("litdata", reason="packing needs the stream extra")


def same_targets(a, b) -> None:
    assert a.schema == b.schema and len(a) == len(b)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.attributes, b.attributes)


def test_multidigits_packs_its_train_and_val_splits_with_their_pixels(tmp_path):
    info = pack("demo", tmp_path / "p", demo_train=24, demo_val=8, seed=3)
    assert {k: v["images"] for k, v in info["splits"].items()} == {"train": 24, "val": 8}
    for split, n in (("train", 24), ("val", 8)):
        packed, source = load_data(tmp_path / "p" / split), multidigits(split, n, seed=3)
        same_targets(packed, source)
        for i in (0, n - 1):
            assert np.array_equal(decode_image(packed.pixels[i]), decode_image(source.pixels[i]))
    written = json.loads((tmp_path / "p" / SHARDS_FILE).read_text())
    counts = multidigits("train", 24, seed=3).label_lists.counts()
    assert written["splits"]["train"]["positive"] == counts["positive"].tolist()
    assert written["schema"] == info["schema"] and written["version"] == 1


@pytest.mark.parametrize("name", ["tags.csv", "multihot.csv", "data.jsonl"])
def test_formats_pack_to_the_same_targets_names_and_image_bytes(digit_files, tmp_path, name):
    source = load_data(digit_files["root"] / name)
    pack(digit_files["root"] / name, tmp_path / "p")
    packed = load_data(tmp_path / "p")  # one split, "all": the pack itself names it
    same_targets(packed, source)
    assert packed.paths == source.paths and packed.meta["split"] == "all"
    for i in (0, 7, len(source) - 1):
        assert packed.pixels[i].read() == Path(source.paths[i]).read_bytes()


def test_unknowns_attributes_and_a_positives_only_fill_survive_packing(tmp_path):
    for i in range(4):
        image(tmp_path / f"{i}.png", seed=i)
    data = jsonl(
        tmp_path / "d.jsonl",
        {"path": "0.png", "labels": ["cat"], "unknown": ["dog"], "attributes": {"size": "s"}},
        {"path": "1.png", "labels": ["dog"], "attributes": {"size": None}},
        {"path": "2.png", "labels": [], "unknown": ["cat", "dog"], "attributes": {"size": "l"}},
        {"path": "3.png", "labels": ["cat", "dog"]},
    )
    source = load_data(data)
    assert (source.labels == -1).any() and (source.attributes == -1).any()
    pack(data, tmp_path / "p")
    same_targets(load_data(tmp_path / "p"), source)


def test_a_validation_share_is_split_off_by_stratification(digit_files, tmp_path):
    info = pack(digit_files["root"] / "data.jsonl", tmp_path / "p", val_fraction=0.25, seed=1)
    train, val = load_data(tmp_path / "p" / "train"), load_data(tmp_path / "p" / "val")
    expected = stratified_split(
        load_data(digit_files["root"] / "data.jsonl"), {"train": 0.75, "val": 0.25}, 1
    )
    same_targets(train, expected["train"])
    same_targets(val, expected["val"])
    assert val.paths == expected["val"].paths and info["splits"]["val"]["images"] == len(val) > 0
    assert is_shards(tmp_path / "p") and is_shards(tmp_path / "p" / "val")
    with pytest.raises(DataError, match="name one"):
        load_data(tmp_path / "p")


def test_max_side_shrinks_larger_images_and_keeps_their_format(tmp_path):
    Image.new("RGB", (40, 20), (200, 10, 10)).save(tmp_path / "wide.jpg")
    Image.new("RGB", (6, 6), (0, 90, 0)).save(tmp_path / "small.png")
    data = jsonl(
        tmp_path / "d.jsonl", {"path": "wide.jpg", "labels": ["a"]}, {"path": "small.png", "labels": []}
    )
    pack(data, tmp_path / "p", max_side=10)
    packed = load_data(tmp_path / "p")
    wide, small = (Image.open(packed.pixels[i]) for i in range(2))
    assert wide.format == "JPEG" and wide.size == (10, 5)
    assert packed.pixels[1].read() == (tmp_path / "small.png").read_bytes()  # not larger: as it was
    assert small.size == (6, 6)


def test_an_existing_destination_is_kept_unless_overwrite(digit_files, tmp_path):
    data = digit_files["root"] / "tags.csv"
    pack(data, tmp_path / "p")
    with pytest.raises(ConfigError, match="--overwrite"):
        pack(data, tmp_path / "p")
    pack(data, tmp_path / "p", val_fraction=0.5, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [SHARDS_FILE, "train", "val"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".p.packing-")]  # staging folder gone


def test_a_failed_local_pack_leaves_nothing_at_the_destination(digit_files, tmp_path, monkeypatch):
    import mlic.data.pack as pack_module

    fail_after(monkeypatch, pack_module, 5)
    with pytest.raises(DataError, match="unreadable"):
        pack(digit_files["root"] / "tags.csv", tmp_path / "p")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def fail_after(monkeypatch, pack_module, n: int) -> None:
    """Make packing fail at image ``n``, as a file that cannot be read would."""
    real = pack_module.image_bytes

    def image_bytes(manifest, i, max_side):
        if i == n:
            raise DataError(f"{manifest.paths[i]}: unreadable")
        return real(manifest, i, max_side)

    monkeypatch.setattr(pack_module, "image_bytes", image_bytes)


def test_packs_to_s3_and_reads_back_the_same(digit_files, s3_bucket):
    dest = f"{s3_bucket}/digits/v1"
    pack(digit_files["root"] / "data.jsonl", dest, val_fraction=0.25)
    assert is_shards(dest) and is_shards(f"{dest}/val")
    source = load_data(digit_files["root"] / "data.jsonl")
    val = load_data(f"{dest}/val")
    rows = [source.paths.index(p) for p in val.paths]
    same_targets(val, source.subset(rows))
    assert val.pixels[2].read() == Path(val.paths[2]).read_bytes()
    with pytest.raises(ConfigError, match="holds a pack already"):
        pack(digit_files["root"] / "data.jsonl", dest)


def test_an_unfinished_s3_pack_is_not_taken_for_data(digit_files, s3_bucket, monkeypatch):
    import mlic.data.pack as pack_module

    fail_after(monkeypatch, pack_module, 40)
    dest = f"{s3_bucket}/broken"
    with pytest.raises(DataError, match="unreadable"):
        pack(digit_files["root"] / "tags.csv", dest, chunk_bytes=2_000)  # small chunks: some were uploaded
    import boto3

    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=s3_bucket[5:])["Contents"]]
    assert any(k.endswith(".bin") for k in keys) and not any(k.endswith(SHARDS_FILE) for k in keys)
    assert not is_shards(dest)
    with pytest.raises(DataError, match="did not finish"):
        load_data(dest)
