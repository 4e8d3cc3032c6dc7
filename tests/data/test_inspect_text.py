"""Tests of mlic.data.inspect_text: the terminal text names the headline figures."""

from __future__ import annotations

import numpy as np

from mlic.data.describe import describe
from mlic.data.inspect_text import format_description
from mlic.data.manifest import Manifest
from mlic.data.targets import LabelLists
from mlic.schema import Attribute, LabelSchema

SCHEMA = LabelSchema(("cat", "dog", "sky", "owl"), (Attribute("size", ("small", "large")),))


def small_manifest() -> Manifest:
    """Five images: cat+dog twice, cat+dog+sky, sky, none; owl never positive; some unknowns."""
    positives = [[0, 1], [0, 1], [0, 1, 2], [2], []]
    unknown = [[], [2], [], [0, 1], [3]]
    lists = LabelLists.from_lists(positives, 4, unknown=unknown)
    attributes = np.array([[0], [1], [1], [-1], [1]])
    return Manifest(SCHEMA, [f"/nowhere/{i}.png" for i in range(5)], lists, attributes, source="small")


def test_text_names_the_headline_figures():
    text = format_description(describe(small_manifest(), check_images=False))
    lines = ["images       5", "cardinality 1.600", "density 0.4000", "ratio 1.5", "no positives owl"]
    lines += ["cat + dog: 3 (1.00)", "attribute size: small 1, large 3, unknown 1", "files: not checked"]
    for expected in lines:
        assert expected in text, expected
