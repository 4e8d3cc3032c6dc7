"""Tests of mlic.data.describe: exact label figures, a brute-force check, large label sets, fuzzing."""

from __future__ import annotations

import io
import itertools
import tempfile
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import mlic.data.describe as describe_module
from helpers import fuzz
from mlic.data.describe import describe, describe_data
from mlic.data.inspect_text import format_description
from mlic.data.manifest import Manifest
from mlic.data.targets import LabelLists
from mlic.errors import ConfigError, MlicError
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


def test_negative_limits_are_rejected():
    with pytest.raises(ConfigError, match="top_pairs"):
        describe(small_manifest(), top_pairs=-1)
    with pytest.raises(ConfigError, match="workers"):
        describe(small_manifest(), workers=0)


def encoded(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


SEEDS = {
    "tags.csv": b"path,tags\n0.png,cat dog\n1.jpg,cat\n2.gif,\n0.png,dog\n",
    "hot.csv": b"path,cat,dog,size\n0.png,1,0,small\n1.jpg,0,-1,large\n2.gif,,1,\n",
    "data.jsonl": b'{"path": "0.png", "labels": ["cat"], "unknown": ["dog"]}\n{"path": "1.jpg"}\n',
}


IMAGES = {
    "0.png": encoded(Image.new("RGB", (6, 4), (9, 8, 7)), "PNG"),
    "1.jpg": encoded(Image.new("L", (5, 3)), "JPEG"),
    "2.gif": encoded(Image.new("P", (2, 2)), "GIF"),
}


@st.composite
def broken(draw, data: bytes) -> bytes:
    """``data`` truncated, with bytes flipped or inserted (or untouched)."""
    data = bytearray(data)
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["truncate", "flip", "insert"]))
        if op == "truncate":
            del data[i:]
        elif op == "flip" and i < len(data):
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[i:i] = draw(
                st.sampled_from([b",", b"\n", b'"', b"\x00", b"\xff", b"[", b"{"]) | st.binary(max_size=4)
            )
    return bytes(data)


@fuzz(400)
@given(data=st.data(), name=st.sampled_from(sorted(SEEDS)), full=st.booleans())
def test_fuzz_describe_data_adds_up_or_names_the_file(data, name, full):
    """Mutated label files over mutated images: ``describe_data`` and its text, or an error naming it."""
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / name
        f.write_bytes(data.draw(broken(SEEDS[name]), label=name))
        for image, content in IMAGES.items():
            (Path(tmp) / image).write_bytes(data.draw(broken(content), label=image))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                d = describe_data(str(f), full=full, workers=1)
        except MlicError as e:
            assert str(f) in str(e), f"the error does not name {f}: {e}"
            return
        files = d["files"]
        assert files["files"] + files["duplicate_entries"]["count"] <= d["images"]
        assert files["missing"]["count"] + files["corrupt"]["count"] <= files["files"]
        assert (
            sum(files["modes"].values())
            == files["files"] - files["missing"]["count"] - files["corrupt"]["count"]
        )
        assert isinstance(format_description(d), str)
