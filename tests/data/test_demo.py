"""Tests of mlic.data.formats.demo (MultiDigits): determinism, disjoint sources, canvases true to targets.

The canvases are checked against a second, independent drawing of the source
digits: every digit of ``load_digits`` is scaled (bilinear) to 14, 20 and 28 px
here, and each quadrant's ink is looked up among those glyphs. That recovers,
per canvas, which source digits were drawn and at which size, so labels,
``count`` and ``largest`` are checked exactly.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from mlic.data.formats.demo import SCHEMA, SIZES, make_canvases, multidigits, source_indices
from mlic.errors import ConfigError

N = 120
QUADRANT = 32


@lru_cache(maxsize=1)
def glyph_table() -> dict[tuple, set[tuple[int, int]]]:
    """Ink bounding box of every source digit at every size -> {(source index, size index)}."""
    digits = load_digits()
    table: dict[tuple, set[tuple[int, int]]] = {}
    for size_index, size in enumerate(SIZES):
        for src, image in enumerate(digits.images):
            scaled = Image.fromarray((image / 16.0).astype(np.float32)).resize((size, size), Image.BILINEAR)
            glyph = (np.clip(np.asarray(scaled), 0, 1) * 255).round().astype(np.uint8)
            table.setdefault(_key(_ink(glyph)), set()).add((src, size_index))
    return table


def _ink(block: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(block.any(1)), np.flatnonzero(block.any(0))
    return block[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _key(ink: np.ndarray) -> tuple:
    return ink.shape, ink.tobytes()


def quadrants(canvas: np.ndarray) -> list[np.ndarray]:
    return [
        canvas[r * QUADRANT : (r + 1) * QUADRANT, c * QUADRANT : (c + 1) * QUADRANT]
        for r in range(2)
        for c in range(2)
    ]


def drawn_digits(canvas: np.ndarray) -> list[set[tuple[int, int]]]:
    """For each quadrant with ink, the (source, size index) pairs whose glyph it shows exactly."""
    found = []
    for block in quadrants(canvas):
        if block.any():
            matches = glyph_table().get(_key(_ink(block)))
            assert matches, "a quadrant's ink is not one whole source digit (crossed a border or overlaps)"
            found.append(matches)
    return found


# -- schema ------------------------------------------------------------------------------------------
def test_schema():
    assert SCHEMA.labels == tuple(f"digit_{d}" for d in range(10))
    assert SCHEMA.attribute_names == ("count", "largest")
    assert SCHEMA.attribute("count").classes == ("1", "2", "3", "4")
    assert SCHEMA.attribute("largest").classes == ("small", "medium", "large")
    assert SIZES == (14, 20, 28)


# -- source pools ------------------------------------------------------------------------------------
def test_source_pools_are_disjoint_and_cover_load_digits():
    n = len(load_digits().images)
    train, val, test = (source_indices(s) for s in ("train", "val", "test"))
    assert len(np.intersect1d(train, val)) == 0
    assert len(np.intersect1d(train, test)) == 0
    assert len(np.intersect1d(val, test)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val, test])), np.arange(n))
    # The first 70% feed train and validation (6:1, train first); the last 30% feed test.
    assert len(train) + len(val) == round(0.7 * n)
    assert train.max() < val.min() and val.max() < test.min()
    assert test.max() == n - 1
    assert abs(len(train) / len(val) - 6) < 0.1


def test_source_indices_unknown_split():
    with pytest.raises(ConfigError, match="'dev'"):
        source_indices("dev")


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_canvases_draw_only_from_their_pool(split):
    pool = set(source_indices(split).tolist())
    pixels, _, _ = make_canvases(N, split, seed=5)
    for canvas in pixels:
        for matches in drawn_digits(canvas):
            assert any(src in pool for src, _ in matches)


# -- determinism -------------------------------------------------------------------------------------
def test_same_seed_same_canvases():
    a = multidigits("train", 60, seed=7)
    b = multidigits("train", 60, seed=7)
    np.testing.assert_array_equal(a.pixels, b.pixels)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.attributes, b.attributes)
    assert a.paths == b.paths


def test_different_seed_or_split_different_canvases():
    a = make_canvases(60, "train", seed=7)
    b = make_canvases(60, "train", seed=8)
    c = make_canvases(60, "val", seed=7)
    assert not np.array_equal(a[0], b[0])
    assert not np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


# -- canvases ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def train_canvases():
    return make_canvases(N, "train", seed=11)


def test_canvas_shapes_and_dtypes(train_canvases):
    pixels, labels, attributes = train_canvases
    assert pixels.shape == (N, 64, 64) and pixels.dtype == np.uint8
    assert labels.shape == (N, 10) and labels.dtype == np.int8
    assert attributes.shape == (N, 2) and attributes.dtype == np.int64
    assert set(np.unique(labels)) <= {0, 1}
    SCHEMA.check_targets(labels, attributes)
    assert pixels.max() == 255  # full ink is drawn at full strength


def test_counts_between_one_and_four_and_consistent_with_labels(train_canvases):
    pixels, labels, attributes = train_canvases
    count = attributes[:, 0] + 1
    assert count.min() == 1 and count.max() == 4
    assert set(count) == {1, 2, 3, 4}  # every count occurs in 120 canvases
    distinct = labels.sum(axis=1)
    assert (distinct >= 1).all() and (distinct <= count).all()
    inked = np.array([sum(block.any() for block in quadrants(c)) for c in pixels])
    np.testing.assert_array_equal(inked, count)


def test_no_digit_crosses_a_quadrant_border_and_boxes_fit_largest(train_canvases):
    pixels, _, attributes = train_canvases
    for canvas, (_, largest) in zip(pixels, attributes):
        boxes = [_ink(block).shape for block in quadrants(canvas) if block.any()]
        assert max(max(box) for box in boxes) <= SIZES[largest]


def test_targets_match_the_drawn_digits(train_canvases):
    """Labels, count and largest agree exactly with the digits recovered from the pixels."""
    pixels, labels, attributes = train_canvases
    classes = load_digits().target
    sizes_seen = set()
    for canvas, label_row, (count_index, largest) in zip(pixels, labels, attributes):
        drawn = drawn_digits(canvas)
        assert len(drawn) == count_index + 1
        # Each quadrant's glyph is unique among (source, size), so the match is unambiguous.
        assert all(len(m) == 1 for m in drawn)
        picks = [next(iter(m)) for m in drawn]
        np.testing.assert_array_equal(np.flatnonzero(label_row), sorted({classes[s] for s, _ in picks}))
        assert largest == max(size for _, size in picks)
        sizes_seen |= {size for _, size in picks}
    assert sizes_seen == {0, 1, 2}
    assert set(attributes[:, 1]) == {0, 1, 2}


# -- multidigits -------------------------------------------------------------------------------------
def test_multidigits_manifest():
    m = multidigits("val", 30, seed=2)
    assert len(m) == 30 and m.schema == SCHEMA
    assert m.paths[0] == "multidigits/val/000000" and m.paths[-1] == "multidigits/val/000029"
    assert m.source == "MultiDigits:val" and m.meta == {"seed": 2}
    pixels, labels, attributes = make_canvases(30, "val", seed=2)
    np.testing.assert_array_equal(m.pixels, pixels)
    np.testing.assert_array_equal(m.labels, labels)
    np.testing.assert_array_equal(m.attributes, attributes)


def test_multidigits_unknown_split():
    with pytest.raises(ConfigError, match=r"unknown MultiDigits split 'validation'; expected one of"):
        multidigits("validation", 10)


@pytest.mark.parametrize("n", [0, -3])
def test_multidigits_needs_at_least_one_sample(n):
    with pytest.raises(ConfigError, match=f"at least one sample, got {n}"):
        multidigits("train", n)
