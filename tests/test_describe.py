"""Data set figures (``mlic data inspect``): exact on small data, checked by brute force; file checks."""

from __future__ import annotations

import itertools
import shutil
from collections import Counter

import numpy as np
import pytest
from PIL import Image

import mlic.data.describe as describe_module
from mlic.data import multidigits
from mlic.data.describe import check_files, describe, format_description
from mlic.data.manifest import Manifest
from mlic.data.targets import LabelLists
from mlic.errors import ConfigError
from mlic.schema import Attribute, LabelSchema

SCHEMA = LabelSchema(("cat", "dog", "sky", "owl"), (Attribute("size", ("small", "large")),))


def small_manifest() -> Manifest:
    """Five images: cat+dog twice, cat+dog+sky, sky, none; owl never positive; some unknowns."""
    positives = [[0, 1], [0, 1], [0, 1, 2], [2], []]
    unknown = [[], [2], [], [0, 1], [3]]
    lists = LabelLists.from_lists(positives, 4, unknown=unknown)
    attributes = np.array([[0], [1], [1], [-1], [1]])
    return Manifest(SCHEMA, [f"/nowhere/{i}.png" for i in range(5)], lists, attributes, source="small")


def test_exact_figures_of_a_small_manifest():
    d = describe(small_manifest(), check_images=False)
    assert d["images"] == 5 and d["labels"] == 4
    assert d["cardinality"] == pytest.approx(8 / 5) and d["density"] == pytest.approx(8 / 20)
    assert d["labels_per_image"] == {"min": 0, "median": 2, "max": 3}
    assert d["images_without_labels"] == 1
    counts = {r["label"]: (r["positive"], r["negative"], r["unknown"]) for r in d["label_counts"]}
    assert counts == {"cat": (3, 1, 1), "dog": (3, 1, 1), "sky": (2, 2, 1), "owl": (0, 4, 1)}
    imbalance = d["imbalance"]
    assert imbalance["ratio"] == pytest.approx(1.5)
    assert imbalance["mean_ir"] == pytest.approx((1 + 1 + 1.5) / 3)
    assert imbalance["without_positives"] == {"count": 1, "labels": ["owl"]}
    assert imbalance["rare_labels"] == 3
    sets = d["label_sets"]
    assert sets["distinct"] == 4
    assert sets["most_common"][0] == {"labels": ["cat", "dog"], "images": 2}
    pairs = {tuple(p["labels"]): (p["images"], p["jaccard"]) for p in d["pairs"]}
    assert pairs == {("cat", "dog"): (3, 1.0), ("cat", "sky"): (1, 0.25), ("dog", "sky"): (1, 0.25)}
    assert d["unknown"] == {
        "label_fraction": pytest.approx(4 / 20),
        "attribute_fraction": pytest.approx(1 / 5),
        "images_with_unknown_labels": 3,
        "images_with_any_unknown": 3,
    }
    assert d["attributes"] == [{"name": "size", "classes": {"small": 1, "large": 3}, "unknown": 1}]
    assert d["files"] is None


def random_manifest(n: int, n_labels: int, seed: int, fill: int = 0) -> Manifest:
    rng = np.random.default_rng(seed)
    dense = (rng.random((n, n_labels)) < rng.random(n_labels) * 0.4).astype(np.int8)
    dense[rng.random((n, n_labels)) < 0.05] = -1
    if fill == -1:
        dense[rng.random((n, n_labels)) < 0.7] = -1  # mostly unknown: stored with fill -1
    schema = LabelSchema(tuple(f"l{j}" for j in range(n_labels)))
    m = Manifest(schema, [f"{i}.png" for i in range(n)], LabelLists.from_dense(dense), np.zeros((n, 0)))
    assert m.label_lists.fill == fill
    return m


@pytest.mark.parametrize("fill", [0, -1])
def test_figures_match_a_brute_force_computation(fill, monkeypatch):
    monkeypatch.setattr(describe_module, "_PAIR_CHUNK", 50)  # many chunks, merged
    m = random_manifest(300, 12, seed=fill + 5, fill=fill)
    d = describe(m, check_images=False, top_pairs=1000, top_sets=1000)
    dense = m.label_lists.dense()
    positive = dense == 1
    brute_pairs = {
        (f"l{a}", f"l{b}"): int((positive[:, a] & positive[:, b]).sum())
        for a, b in itertools.combinations(range(12), 2)
    }
    got = {tuple(p["labels"]): p["images"] for p in d["pairs"]}
    assert got == {k: v for k, v in brute_pairs.items() if v}
    counts = [d["images"] for d in d["pairs"]]
    assert counts == sorted(counts, reverse=True)
    assert d["cardinality"] == pytest.approx(positive.sum(1).mean())
    assert d["unknown"]["label_fraction"] == pytest.approx((dense == -1).mean())
    assert d["unknown"]["images_with_unknown_labels"] == int((dense == -1).any(1).sum())
    sets = Counter(tuple(np.flatnonzero(row)) for row in positive)
    assert d["label_sets"]["distinct"] == len(sets)
    assert sum(s["images"] for s in d["label_sets"]["most_common"]) == 300
    for j, r in enumerate(d["label_counts"]):
        assert (r["positive"], r["negative"], r["unknown"]) == tuple(
            int((dense[:, j] == v).sum()) for v in (1, 0, -1)
        )
    pos = positive.sum(0)
    assert d["imbalance"]["ratio"] == pytest.approx(pos.max() / pos[pos > 0].min())
    assert m._dense is None  # the figures never built the dense matrix


def test_large_label_sets_are_described_from_lists():
    n, n_labels = 20_000, 5_000
    rng = np.random.default_rng(0)
    rows = [rng.choice(n_labels, rng.integers(0, 8), replace=False).tolist() for _ in range(n)]
    schema = LabelSchema(tuple(f"l{j}" for j in range(n_labels)))
    m = Manifest(schema, [""] * n, LabelLists.from_lists(rows, n_labels), np.zeros((n, 0)))
    d = describe(m, check_images=False, top_pairs=3)
    assert len(d["pairs"]) == 3 and d["labels"] == n_labels and m._dense is None
    text = format_description(d)
    assert "more labels" in text and len(text.splitlines()) < 60


def write_png(path, size=(8, 6), value=0, mode="L") -> None:
    Image.new(mode, size, value).save(path)


def test_files_missing_corrupt_duplicate_and_sizes(tmp_path):
    write_png(tmp_path / "a.png", (8, 6), 10)
    shutil.copy(tmp_path / "a.png", tmp_path / "a_copy.png")
    write_png(tmp_path / "b.png", (8, 6), 200)  # same size in bytes maybe, other content
    noise = np.random.default_rng(0).integers(0, 256, (10, 20, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "c.png")
    (tmp_path / "text.png").write_text("not an image")
    whole = (tmp_path / "c.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(whole[: len(whole) // 2])  # header intact, body cut
    names = ["a.png", "a_copy.png", "b.png", "c.png", "text.png", "cut.png", "gone.png", "a.png"]
    m = Manifest(SCHEMA, [str(tmp_path / n) for n in names], np.zeros((8, 4)), np.full((8, 1), -1))
    header = check_files(m)
    assert header["checked"] == "header" and header["files"] == 7
    assert header["missing"] == {"count": 1, "paths": [str(tmp_path / "gone.png")]}
    assert [c["path"] for c in header["corrupt"]["files"]] == [str(tmp_path / "text.png")]
    assert header["duplicates"]["groups"] == 1 and header["duplicates"]["redundant_files"] == 1
    assert sorted(header["duplicates"]["examples"][0]) == [
        str(tmp_path / "a.png"),
        str(tmp_path / "a_copy.png"),
    ]
    assert header["duplicate_entries"] == {"count": 1, "paths": [str(tmp_path / "a.png")]}
    assert header["width"] == {"min": 8, "median": 8, "max": 20}
    assert header["height"] == {"min": 6, "median": 6, "max": 10}
    assert header["modes"] == {"L": 3, "RGB": 2} and header["formats"] == {"PNG": 5}
    full = check_files(m, full=True, workers=2)
    assert full["checked"] == "full"
    assert sorted(c["path"] for c in full["corrupt"]["files"]) == [
        str(tmp_path / n) for n in ("cut.png", "text.png")
    ]
    text = format_description(describe(m, full=True))
    assert "missing      1" in text and "corrupt      2" in text and "gone.png" in text


def test_in_memory_images_report_sizes_and_equal_arrays():
    m = multidigits("test", 30)
    m.pixels[7] = m.pixels[3]
    files = describe(m)["files"]
    assert files["checked"] == "in-memory" and files["missing"]["count"] == 0
    assert files["duplicates"]["examples"] == [[m.paths[3], m.paths[7]]]
    assert files["width"] == {"min": 64, "median": 64, "max": 64} and files["modes"] == {"L": 30}


def test_text_names_the_headline_figures():
    text = format_description(describe(small_manifest(), check_images=False))
    lines = ["images       5", "cardinality 1.600", "density 0.4000", "ratio 1.5", "no positives owl"]
    lines += ["cat + dog: 3 (1.00)", "attribute size: small 1, large 3, unknown 1", "files: not checked"]
    for expected in lines:
        assert expected in text, expected


def test_negative_limits_are_rejected():
    with pytest.raises(ConfigError, match="top_pairs"):
        describe(small_manifest(), top_pairs=-1)
    with pytest.raises(ConfigError, match="workers"):
        describe(small_manifest(), workers=0)
