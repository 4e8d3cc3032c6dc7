"""Multi-digit PNGs drawn differently from MultiDigits, to check that a trained demo model generalises.

Digits from MultiDigits' test pool are scaled bicubically (MultiDigits: bilinear)
to any size from 16 to 26 px (MultiDigits: 14, 20 or 28), with random ink
strength, placed anywhere on the canvas without overlap (MultiDigits: one per
quadrant), with a little noise, and saved as greyscale PNG files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from mlic.data.formats.demo import source_indices


def draw_free_digits(folder: Path, n: int, seed: int = 0) -> tuple[list[Path], np.ndarray]:
    """Write ``n`` PNG files into ``folder``; return their paths and label targets ``[n, 10]``."""
    digits = load_digits()
    pool = source_indices("test")
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths, targets = [], np.zeros((n, 10), dtype=np.int8)
    for i in range(n):
        canvas = np.zeros((64, 64), dtype=np.float32)
        boxes: list[tuple[int, int, int]] = []
        for _ in range(int(rng.integers(1, 5))):
            size = int(rng.integers(16, 27))
            for _attempt in range(50):
                y, x = (int(v) for v in rng.integers(0, 64 - size + 1, size=2))
                if all(
                    y + size <= by or by + bs <= y or x + size <= bx or bx + bs <= x for by, bx, bs in boxes
                ):
                    break
            else:
                continue
            src = int(rng.choice(pool))
            glyph = Image.fromarray((digits.images[src] / 16 * 255).astype(np.uint8)).resize(
                (size, size), Image.BICUBIC
            )
            canvas[y : y + size, x : x + size] = np.asarray(glyph, np.float32) * rng.uniform(0.7, 1.0)
            boxes.append((y, x, size))
            targets[i, digits.target[src]] = 1
        canvas += rng.normal(0, 6, canvas.shape)
        path = folder / f"free_{i:04d}.png"
        Image.fromarray(canvas.clip(0, 255).astype(np.uint8), mode="L").save(path)
        paths.append(path)
    return paths, targets
