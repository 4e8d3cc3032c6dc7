"""mlic.overlays: heat in [0, 1], colour where the map is positive, the image elsewhere."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mlic.overlays import heat, overlay, png_bytes


def test_heat_keeps_the_positive_part_over_its_maximum():
    np.testing.assert_allclose(heat(np.array([[-2.0, 0.0], [1.0, 4.0]])), [[0, 0], [0.25, 1]])
    assert not heat(np.full((3, 3), -1.0)).any() and not heat(np.array([[np.nan]])).any()


def test_overlay_leaves_the_image_where_the_map_is_not_positive():
    image = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    m = np.zeros((4, 5))
    m[1, 2] = 3.0
    out = overlay(image, m)
    same = np.ones((4, 5), bool)
    same[1, 2] = False
    assert (out[same] == image[same]).all() and (out[1, 2] != image[1, 2]).any()
    assert overlay(image[..., 0], m).shape == (4, 5, 3)
    with pytest.raises(ValueError, match="must match"):
        overlay(image, np.zeros((5, 4)))


def test_png_bytes_shrinks_to_max_side():
    data = png_bytes(np.zeros((10, 40, 3), np.uint8), max_side=20)
    with Image.open(io.BytesIO(data)) as im:
        assert im.size == (20, 5) and im.format == "PNG"
