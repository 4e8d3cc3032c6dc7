"""Label maps drawn over their images: the PNGs of ``mlic explain``, the report and the server.

A map (``Predictor.explain``) is signed evidence per pixel. :func:`overlay`
keeps its positive part, divides it by its own maximum (as Grad-CAM's
authors do, so every map uses the whole colour scale; a map with no positive
pixel draws nothing) and blends the ``turbo`` colour map over the image with
an opacity that grows with the evidence, so the image stays visible where the
map is zero.
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
from PIL import Image

ALPHA = 0.6
"""Opacity of the colour where the map is at its maximum."""


@lru_cache(maxsize=1)
def _colours() -> np.ndarray:
    """The ``turbo`` colour map as uint8 ``[256, 3]`` (matplotlib, imported on first use)."""
    from matplotlib import colormaps

    return (colormaps["turbo"](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)


def heat(label_map: np.ndarray) -> np.ndarray:
    """The positive part of ``label_map`` ``[H, W]`` over its maximum, in [0, 1] (zeros if none)."""
    positive = np.clip(np.nan_to_num(np.asarray(label_map, dtype=np.float32)), 0.0, None)
    top = float(positive.max()) if positive.size else 0.0
    return positive / top if top > 0 else np.zeros_like(positive)


def overlay(image: np.ndarray, label_map: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """``image`` uint8 ``[H, W, 3]`` (or ``[H, W]``) with ``label_map`` ``[H, W]`` blended over it, uint8."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    h = heat(label_map)
    if h.shape != image.shape[:2]:
        raise ValueError(f"the map is {h.shape} but the image {image.shape[:2]}; they must match")
    colour = _colours()[(h * 255).round().astype(np.uint8)].astype(np.float32)
    a = (alpha * h)[..., None]
    return (image.astype(np.float32) * (1 - a) + colour * a).round().clip(0, 255).astype(np.uint8)


def png_bytes(pixels: np.ndarray, max_side: int | None = None) -> bytes:
    """uint8 pixels as PNG bytes, shrunk so that the longest side is at most ``max_side``."""
    im = Image.fromarray(np.asarray(pixels))
    if max_side and max(im.size) > max_side:
        scale = max_side / max(im.size)
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.LANCZOS)
    buffer = io.BytesIO()
    im.save(buffer, format="PNG")
    return buffer.getvalue()
