"""Splits by iterative stratification (``mlic data split``): coverage, quality, unknowns, files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from iterstrat.ml_stratifiers import IterativeStratification

from mlic.data import load_data, multidigits
from mlic.data.manifest import Manifest
from mlic.data.split import format_split_report, split_fractions, split_report, stratified_split, write_splits
from mlic.data.targets import LabelLists
from mlic.errors import ConfigError
from mlic.schema import Attribute, LabelSchema

FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}


def skewed_manifest(n: int = 2_000, n_labels: int = 40, seed: int = 0, unknown: float = 0.0) -> Manifest:
    """Labels of Zipf-like frequency (a few common, many rare), correlated in pairs, and one attribute."""
    rng = np.random.default_rng(seed)
    rate = 0.3 / np.arange(1, n_labels + 1) ** 1.2
    dense = (rng.random((n, n_labels)) < rate).astype(np.int8)
    dense[:, 1::2] |= dense[:, 0::2] & (rng.random((n, n_labels // 2)) < 0.5)
    if unknown:
        dense[rng.random((n, n_labels)) < unknown] = -1
    schema = LabelSchema(tuple(f"l{j:02d}" for j in range(n_labels)), (Attribute("size", ("s", "m", "l")),))
    attributes = rng.choice([0, 0, 0, 0, 1, 1, 2, -1], size=(n, 1))
    return Manifest(schema, [f"/data/{i}.png" for i in range(n)], dense, attributes, source="skewed")


def share_error(parts: dict[str, Manifest], fractions: dict[str, float], min_positives: int = 10) -> float:
    """Mean |share of a label's positives in a split - the split's fraction| over labels and splits."""
    positives = {k: (m.labels == 1).sum(0) for k, m in parts.items()}
    total = sum(positives.values())
    keep = total >= min_positives
    return float(np.mean([np.abs(positives[k][keep] / total[keep] - f).mean() for k, f in fractions.items()]))


def random_parts(m: Manifest, fractions: dict[str, float], seed: int) -> dict[str, Manifest]:
    order = np.random.default_rng(seed).permutation(len(m))
    cuts = np.cumsum([round(f * len(m)) for f in fractions.values()])[:-1]
    return {k: m.subset(np.sort(rows)) for k, rows in zip(fractions, np.split(order, cuts))}


def test_fractions_from_a_pair_or_a_dict_and_bad_ones_rejected():
    assert split_fractions((0.1, 0.2)) == pytest.approx({"train": 0.7, "val": 0.1, "test": 0.2})
    assert split_fractions((0.25, 0)) == {"train": 0.75, "val": 0.25}
    assert split_fractions({"a": 0.5, "b": 0.5}) == {"a": 0.5, "b": 0.5}
    for bad in [(0.6, 0.5), (-0.1, 0.1), (0, 0), {"train": 0.7, "val": 0.2}, {"train": 1.0}, (1.0, 0)]:
        with pytest.raises(ConfigError, match=r"fraction|no images for training"):
            split_fractions(bad)


def test_every_image_lands_in_exactly_one_split_in_original_order():
    m = skewed_manifest()
    parts = stratified_split(m, (0.1, 0.1), seed=0)
    assert list(parts) == ["train", "val", "test"]
    paths = [p for part in parts.values() for p in part.paths]
    assert sorted(paths) == sorted(m.paths) and len(paths) == len(set(paths))
    for name, part in parts.items():
        index = [int(p.split("/")[-1][:-4]) for p in part.paths]
        assert index == sorted(index)  # each split keeps the manifest's order
        assert abs(len(part) / len(m) - FRACTIONS[name]) < 0.02
        assert part.meta["split"] == {"seed": 0, "fractions": FRACTIONS, "images": len(m), "name": name}


def test_split_is_deterministic_for_a_seed():
    m = skewed_manifest(500)
    a, b = stratified_split(m, (0.2, 0.1), seed=4), stratified_split(m, (0.2, 0.1), seed=4)
    other = stratified_split(m, (0.2, 0.1), seed=5)
    assert all(a[k].paths == b[k].paths for k in a)
    assert a["val"].paths != other["val"].paths


def test_stratified_shares_are_much_closer_than_a_random_split():
    m = skewed_manifest()
    stratified = share_error(stratified_split(m, FRACTIONS, seed=0), FRACTIONS)
    randoms = [share_error(random_parts(m, FRACTIONS, seed), FRACTIONS) for seed in range(5)]
    assert stratified < 0.5 * min(randoms), (stratified, randoms)


def test_quality_matches_the_iterstrat_reference():
    m = skewed_manifest(1_000, 30, seed=2)
    ratios = np.array(list(FRACTIONS.values()))
    folds = IterativeStratification(m.labels == 1, ratios, np.random.RandomState(0))
    reference = share_error(
        {k: m.subset(np.flatnonzero(folds == i)) for i, k in enumerate(FRACTIONS)}, FRACTIONS
    )
    ours = share_error(stratified_split(m, FRACTIONS, seed=0), FRACTIONS)
    assert ours < 1.25 * reference + 0.005, (ours, reference)


def test_attribute_classes_are_balanced_too():
    m = skewed_manifest()
    report = split_report(stratified_split(m, FRACTIONS, seed=1))
    for row in report["attributes"]:
        for name, cell in row["splits"].items():
            assert abs(cell["share"] - FRACTIONS[name]) < 0.02, row


def test_unknowns_are_not_counted_as_negatives():
    m = skewed_manifest(unknown=0.3)
    parts = stratified_split(m, FRACTIONS, seed=0)
    assert share_error(parts, FRACTIONS) < 0.5 * share_error(random_parts(m, FRACTIONS, 0), FRACTIONS)
    report = split_report(parts)
    for j, row in enumerate(report["labels"]):
        for name, cell in row["splits"].items():
            column = parts[name].labels[:, j]
            assert cell["positive"] == (column == 1).sum() and cell["unknown"] == (column == -1).sum()
            known = (column >= 0).sum()
            assert cell["prevalence"] == (pytest.approx((column == 1).sum() / known) if known else None)
    # unknowns are not positives either: a label known only as unknown has no column to balance
    lists = LabelLists.from_lists([[] for _ in range(6)], 1, unknown=[[0]] * 6)
    schema = LabelSchema(("x",))
    parts = stratified_split(Manifest(schema, list("abcdef"), lists, np.zeros((6, 0))), (0.5, 0), seed=0)
    assert sorted(len(p) for p in parts.values()) == [3, 3]


def test_every_split_gets_an_image_or_a_clear_error():
    m = skewed_manifest(5)
    parts = stratified_split(m, {"train": 0.98, "val": 0.01, "test": 0.01}, seed=0)
    assert all(len(p) >= 1 for p in parts.values()) and sum(len(p) for p in parts.values()) == 5
    with pytest.raises(ConfigError, match=r"2 image.*cannot fill the 3 splits"):
        stratified_split(m.subset([0, 1]), (0.1, 0.1), seed=0)


def test_report_table_is_cut_for_many_labels():
    m = skewed_manifest(400, 60)
    text = format_split_report(split_report(stratified_split(m, FRACTIONS, seed=0)), max_rows=10)
    assert "... 50 more labels ..." in text and "size=s" in text and "label share vs split fraction" in text
    assert len(text.splitlines()) < 25


def test_written_jsonl_loads_back_into_the_same_targets(tmp_path):
    m = skewed_manifest(300, 10, unknown=0.1)
    images = tmp_path / "data" / "images"
    m = Manifest(m.schema, [str(images / f"{i}.png") for i in range(len(m))], m.labels, m.attributes)
    parts = stratified_split(m, (0.2, 0.2), seed=0)
    written = write_splits(parts, tmp_path / "data" / "splits")
    assert set(written) == {"train", "val", "test", "summary"}
    for name, part in parts.items():
        back = load_data(written[name], schema=m.schema)
        assert back.paths == part.paths
        assert np.array_equal(back.labels, part.labels) and np.array_equal(back.attributes, part.attributes)
    first = json.loads(written["val"].read_text().splitlines()[0])
    assert first["path"].startswith("../images/")  # relative to the split folder
    summary = json.loads(written["summary"].read_text())
    assert LabelSchema.from_dict(summary["schema"]) == m.schema
    assert summary["seed"] == 0 and summary["files"] == {k: f"{k}.jsonl" for k in parts}
    assert summary["report"]["images"] == 300


def test_images_outside_the_parent_folder_are_written_absolute(tmp_path):
    m = skewed_manifest(20, 4)
    written = write_splits(stratified_split(m, (0.2, 0), seed=0), tmp_path / "splits")
    assert json.loads(written["val"].read_text().splitlines()[0])["path"].startswith("/data/")
    assert not (tmp_path / "splits" / "test.jsonl").exists()


def test_fill_minus_one_targets_round_trip(tmp_path):
    dense = np.full((12, 5), -1, dtype=np.int8)
    dense[np.arange(12), np.arange(12) % 5] = 1
    dense[np.arange(12), (np.arange(12) + 1) % 5] = 0
    m = Manifest(
        LabelSchema(tuple("abcde")), [str(tmp_path / f"{i}.png") for i in range(12)], dense, np.zeros((12, 0))
    )
    assert m.label_lists.fill == -1
    parts = stratified_split(m, (0.25, 0), seed=0)
    written = write_splits(parts, tmp_path / "splits")
    for name, part in parts.items():
        assert np.array_equal(load_data(written[name], schema=m.schema).labels, part.labels)


def test_in_memory_images_are_written_as_png(tmp_path):
    m = multidigits("test", 20)
    parts = stratified_split(m, (0.2, 0.2), seed=0)
    written = write_splits(parts, tmp_path / "demo")
    back = load_data(written["test"], schema=m.schema)
    assert np.array_equal(back.labels, parts["test"].labels)
    from mlic.data.images import decode_image

    assert np.array_equal(decode_image(back.paths[0])[0].numpy(), parts["test"].pixels[0])


def test_existing_splits_are_kept_unless_overwrite(tmp_path):
    m = skewed_manifest(30, 4)
    write_splits(stratified_split(m, (0.2, 0.2), seed=0), tmp_path)
    with pytest.raises(ConfigError, match=r"exist already.*overwrite"):
        write_splits(stratified_split(m, (0.2, 0.2), seed=1), tmp_path)
    write_splits(stratified_split(m, (0.3, 0), seed=1), tmp_path, overwrite=True)
    assert not (tmp_path / "test.jsonl").exists()  # the old test split does not linger
    assert len((tmp_path / "val.jsonl").read_text().splitlines()) == 9
