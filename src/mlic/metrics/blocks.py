"""Blocks: every sweep over a score matrix works on slices of about ``BLOCK_ELEMENTS`` entries.

One setting bounds the memory of every blocked computation (metrics and the
threshold search). Functions here read it at each call, so that a test can
``monkeypatch.setattr(mlic.metrics.blocks, "BLOCK_ELEMENTS", n)`` to force
many blocks.
"""

from __future__ import annotations

from collections.abc import Iterator

BLOCK_ELEMENTS = 1 << 22
"""Entries per block of rows or columns (4 M: 16 MB of float32 scores)."""


def column_blocks(n_rows: int, n_cols: int) -> Iterator[slice]:
    """Slices of columns whose blocks hold about ``BLOCK_ELEMENTS`` entries."""
    step = max(1, BLOCK_ELEMENTS // max(n_rows, 1))
    for start in range(0, n_cols, step):
        yield slice(start, min(start + step, n_cols))


def row_blocks(n_rows: int, n_cols: int) -> Iterator[slice]:
    """Slices of rows whose blocks hold about ``BLOCK_ELEMENTS`` entries."""
    step = max(1, BLOCK_ELEMENTS // max(n_cols, 1))
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))
