"""MultiDigits: the embedded default data set, made on the fly from scikit-learn's digits.

Each 64x64 grey canvas holds one to four handwritten digits (``load_digits``:
1,797 8x8 images from 43 writers), at most one per quadrant, each scaled
(bilinear) to 14, 20 or 28 px and placed at a random offset inside its
quadrant, so digits never overlap.

- labels ``digit_0`` ... ``digit_9``: which digits appear;
- attribute ``count`` (1-4): how many digits;
- attribute ``largest`` (small / medium / large): the size of the biggest digit.

Train, validation and test canvases come from disjoint source digits: the first
70% of ``load_digits`` feed train (its first six sevenths) and validation (the
last seventh); the remaining 30% feed test. Generation is seeded and
deterministic: the same seed and counts give the same pixels.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from mlic.data.formats.spec import Format
from mlic.data.manifest import Manifest
from mlic.errors import ConfigError
from mlic.schema import Attribute, LabelSchema

NAME = DEMO = "demo"
"""What stands for MultiDigits wherever a data file is expected (``mlic train --data demo``)."""

CANVAS = 64
QUADRANT = CANVAS // 2
SIZES = (14, 20, 28)
SIZE_NAMES = ("small", "medium", "large")
SPLITS = ("train", "val", "test")
DEFAULT_COUNTS = {"train": 10_000, "val": 1_000, "test": 2_000}

SCHEMA = LabelSchema(
    labels=tuple(f"digit_{d}" for d in range(10)),
    attributes=(Attribute("count", ("1", "2", "3", "4")), Attribute("largest", SIZE_NAMES)),
)


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 source digits as float32 ink in [0, 1] and their classes."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


def source_indices(split: str) -> np.ndarray:
    """Indices into ``load_digits`` that a split may draw from (disjoint across splits)."""
    n = len(_digits()[0])
    n_trainval = round(0.7 * n)
    n_train = n_trainval * 6 // 7
    bounds = {"train": (0, n_train), "val": (n_train, n_trainval), "test": (n_trainval, n)}
    if split not in bounds:
        raise ConfigError(f"unknown MultiDigits split {split!r}; expected one of {list(SPLITS)}")
    lo, hi = bounds[split]
    return np.arange(lo, hi)


@lru_cache(maxsize=1)
def _scaled() -> dict[int, np.ndarray]:
    """Every source digit scaled (bilinear) to each size: {size: float32 [1797, size, size]}."""
    images, _ = _digits()
    return {
        s: np.stack(
            [np.asarray(Image.fromarray(im, mode="F").resize((s, s), Image.BILINEAR)) for im in images]
        )
        for s in SIZES
    }


def make_canvases(n: int, split: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` canvases of ``split``: uint8 pixels [n, 64, 64], label targets [n, 10], attributes [n, 2]."""
    pixels, labels, attributes, _ = _draw(n, split, seed)
    return pixels, labels, attributes


def canvas_layout(n: int, split: str, seed: int = 0) -> np.ndarray:
    """Where the digits of ``make_canvases(n, split, seed)`` lie: int64 ``[n, 4, 4]``.

    Per canvas and quadrant (0 top left, 1 top right, 2 bottom left, 3 bottom
    right): the digit's class, its size index into ``SIZES``, and the row and
    column of its top-left pixel; all -1 for an empty quadrant. The truth of
    the pointing game of label maps (``benchmarks/pointing_game.py``).
    """
    return _draw(n, split, seed)[3]


def _draw(n: int, split: str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The canvases, their targets and their layout (see ``canvas_layout``)."""
    pool = source_indices(split)
    _, classes = _digits()
    scaled = _scaled()
    # One generator per (seed, split) so that changing one split's count leaves the others alone.
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    pixels = np.zeros((n, CANVAS, CANVAS), dtype=np.float32)
    labels = np.zeros((n, 10), dtype=np.int8)
    attributes = np.zeros((n, 2), dtype=np.int64)
    layout = np.full((n, 4, 4), -1, dtype=np.int64)
    for i in range(n):
        count = int(rng.integers(1, 5))
        quadrants = rng.choice(4, size=count, replace=False)
        sources = rng.choice(pool, size=count)
        sizes = rng.integers(0, len(SIZES), size=count)
        for q, src, s in zip(quadrants, sources, sizes):
            size = SIZES[s]
            y0 = (q // 2) * QUADRANT + int(rng.integers(0, QUADRANT - size + 1))
            x0 = (q % 2) * QUADRANT + int(rng.integers(0, QUADRANT - size + 1))
            pixels[i, y0 : y0 + size, x0 : x0 + size] = scaled[size][src]
            labels[i, classes[src]] = 1
            layout[i, q] = (classes[src], s, y0, x0)
        attributes[i] = (count - 1, sizes.max())
    return (np.clip(pixels, 0, 1) * 255).round().astype(np.uint8), labels, attributes, layout


def multidigits(split: str, n: int | None = None, seed: int = 0) -> Manifest:
    """The MultiDigits ``split`` as an in-memory manifest (``n`` defaults to ``DEFAULT_COUNTS``)."""
    if split not in SPLITS:
        raise ConfigError(f"unknown MultiDigits split {split!r}; expected one of {list(SPLITS)}")
    n = DEFAULT_COUNTS[split] if n is None else n
    if n < 1:
        raise ConfigError(f"MultiDigits {split} needs at least one sample, got {n}")
    pixels, labels, attributes = make_canvases(n, split, seed)
    names = [f"multidigits/{split}/{i:06d}" for i in range(n)]
    return Manifest(
        SCHEMA, names, labels, attributes, pixels=pixels, source=f"MultiDigits:{split}", meta={"seed": seed}
    )


def detect(path: Path) -> bool:
    """The name ``demo`` (no file)."""
    return str(path) == DEMO


def _read(
    path: str | Path, *, schema: LabelSchema | None = None, split: str = "test", n: int | None = None,
    seed: int = 0,
) -> Manifest:  # fmt: skip
    return multidigits(split, n, seed=seed)


FORMAT = Format(NAME, detect, _read, options=("split", "n", "seed"), looks_like="MultiDigits")
