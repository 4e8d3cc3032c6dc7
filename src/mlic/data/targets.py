"""Label targets kept as a list of labels per image, so that 10,000 labels cost what the images carry.

A dense int8 matrix of 100,000 images x 10,000 labels is 1 GB, nearly all of
it zeros; the same targets as lists are a few MB. ``LabelLists`` is a
compressed sparse row matrix with a fill value: each image lists the labels
whose target differs from ``fill`` (usually its positives, and its unknowns),
and every other label takes ``fill``. ``fill=0`` is the common case (tags
that are listed are present, the rest absent); ``fill=-1`` is the
"positives only, nothing else known" case, where explicitly listed 0s are
verified negatives. Batches are made dense by ``LabelLists.dense`` or
``mlic.data.images.collate``, and only then.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from mlic.errors import ConfigError, SchemaError
from mlic.schema import UNKNOWN

HIDDEN_AS = ("unknown", "negative")


def entry_rows(indptr: np.ndarray) -> np.ndarray:
    """The row of each entry of a compressed-row structure with row pointers ``indptr``."""
    return np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))


def row_pointers(rows: np.ndarray, n_rows: int) -> np.ndarray:
    """Row pointers ``[n_rows + 1]`` for entries stored in row order, from each entry's row."""
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    return indptr


@dataclass(frozen=True, eq=False)
class LabelLists:
    """Label targets ``[N, n_labels]`` in {1, 0, -1} as per-image lists of the entries that are not ``fill``.

    Row ``i`` lists ``indices[indptr[i]:indptr[i + 1]]`` (sorted, distinct)
    with their ``values``.
    """

    n_labels: int
    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    fill: int = 0

    def __post_init__(self) -> None:
        indptr = np.asarray(self.indptr, dtype=np.int64)
        indices = np.asarray(self.indices, dtype=np.int32)
        values = np.asarray(self.values, dtype=np.int8)
        object.__setattr__(self, "indptr", indptr)
        object.__setattr__(self, "indices", indices)
        object.__setattr__(self, "values", values)
        if self.fill not in (0, UNKNOWN):
            raise SchemaError(f"the fill value of label targets must be 0 or -1, got {self.fill}")
        if indptr.ndim != 1 or not len(indptr) or indptr[0] != 0 or (np.diff(indptr) < 0).any():
            raise SchemaError("label lists: indptr must start at 0 and never decrease")
        if indptr[-1] != len(indices) or len(indices) != len(values):
            raise SchemaError("label lists: indptr, indices and values disagree in length")
        if len(indices) and (indices.min() < 0 or indices.max() >= self.n_labels):
            raise SchemaError(f"label lists: label indices must lie in [0, {self.n_labels})")
        if len(values) and (values.min() < UNKNOWN or values.max() > 1):
            raise SchemaError("label targets must be 1 (present), 0 (absent) or -1 (unknown)")

    # -- construction ----------------------------------------------------------
    @classmethod
    def from_dense(cls, targets: np.ndarray, fill: int | None = None) -> LabelLists:
        """Lists from an int8 matrix ``[N, L]``; by default the fill is 0 unless most are unknown."""
        targets = np.asarray(targets)
        if targets.ndim != 2:
            raise SchemaError(f"label targets have shape {targets.shape}; expected [N, n_labels]")
        if targets.size and (targets.min() < UNKNOWN or targets.max() > 1):
            raise SchemaError("label targets must be 1 (present), 0 (absent) or -1 (unknown)")
        if fill is None:
            fill = UNKNOWN if (targets == UNKNOWN).sum() > (targets == 0).sum() else 0
        rows, cols = np.nonzero(targets != fill)  # in row order
        return cls(targets.shape[1], row_pointers(rows, len(targets)), cols, targets[rows, cols], fill)

    @classmethod
    def from_entries(
        cls,
        rows: np.ndarray,
        labels: np.ndarray,
        values: np.ndarray,
        n_rows: int,
        n_labels: int,
        fill: int = 0,
    ) -> LabelLists:
        """Lists from distinct (row, label, value) entries in any order."""
        order = np.lexsort((labels, rows))
        return cls(n_labels, row_pointers(rows[order], n_rows), labels[order], values[order], fill)

    @classmethod
    def from_lists(
        cls,
        positives: Sequence[Sequence[int]],
        n_labels: int,
        *,
        unknown: Sequence[Sequence[int]] | None = None,
        negatives: Sequence[Sequence[int]] | None = None,
        fill: int = 0,
    ) -> LabelLists:
        """Lists from each image's positive label indices (and its unknown / verified-negative ones).

        A label listed under more than one kind is an error, not a silent choice.
        """
        kinds = [(positives, 1), (unknown, UNKNOWN), (negatives, 0)]
        kinds = [(rows, value) for rows, value in kinds if rows is not None and value != fill]
        n = len(positives)
        for rows, _ in kinds:
            if len(rows) != n:
                raise SchemaError(f"label lists: {len(rows)} rows where {n} were expected")
        indptr = np.zeros(n + 1, dtype=np.int64)
        indices, values = [], []
        for i in range(n):
            row = [(int(j), value) for rows, value in kinds for j in rows[i]]
            row.sort()
            if any(a[0] == b[0] for a, b in pairwise(row)):
                raise SchemaError(f"label lists: image {i} lists a label twice or under two kinds")
            indices += [j for j, _ in row]
            values += [v for _, v in row]
            indptr[i + 1] = len(indices)
        return cls(n_labels, indptr, np.array(indices, dtype=np.int64), np.array(values, dtype=np.int8), fill)

    @classmethod
    def concat(cls, parts: Sequence[LabelLists]) -> LabelLists:
        """The rows of ``parts`` one after another; parts of another fill than the first are re-listed."""
        if not parts or len({p.n_labels for p in parts}) != 1:
            raise SchemaError("label lists: concatenate one or more lists of the same labels")
        fill = parts[0].fill
        parts = [p if p.fill == fill else cls.from_dense(p.dense(), fill) for p in parts]
        ends = np.cumsum([0] + [len(p.indices) for p in parts[:-1]])
        indptr = np.concatenate([[0]] + [p.indptr[1:] + end for p, end in zip(parts, ends, strict=True)])
        indices = np.concatenate([p.indices for p in parts])
        return cls(parts[0].n_labels, indptr, indices, np.concatenate([p.values for p in parts]), fill)

    # -- reading ----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.indptr) - 1

    @property
    def shape(self) -> tuple[int, int]:
        return len(self), self.n_labels

    @property
    def nbytes(self) -> int:
        return self.indptr.nbytes + self.indices.nbytes + self.values.nbytes

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The label indices image ``i`` lists and their values."""
        start, stop = self.indptr[i], self.indptr[i + 1]
        return self.indices[start:stop], self.values[start:stop]

    def dense(self, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """The int8 matrix of ``rows`` (all images by default)."""
        lists = self if rows is None else self.take(rows)
        out = np.full(lists.shape, lists.fill, dtype=np.int8)
        out[entry_rows(lists.indptr), lists.indices] = lists.values
        return out

    def select(
        self, keep: np.ndarray, values: np.ndarray | None = None, fill: int | None = None
    ) -> LabelLists:
        """The lists with only the entries where ``keep``; ``values`` / ``fill`` replace this one's."""
        values = self.values if values is None else values
        indptr = row_pointers(entry_rows(self.indptr)[keep], len(self))
        return LabelLists(
            self.n_labels, indptr, self.indices[keep], values[keep], self.fill if fill is None else fill
        )

    def take(self, rows: Sequence[int] | np.ndarray) -> LabelLists:
        """The lists of ``rows``, in that order."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        starts, lengths = self.indptr[rows], np.diff(self.indptr)[rows]
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        # positions of every listed entry of the chosen rows, without a Python loop
        positions = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])
        return LabelLists(self.n_labels, indptr, self.indices[positions], self.values[positions], self.fill)

    def counts(self) -> dict[str, np.ndarray]:
        """Per label: how many images have it present, absent and unknown (int64 ``[L]`` each)."""
        listed = {
            v: np.bincount(self.indices[self.values == v], minlength=self.n_labels).astype(np.int64)
            for v in (1, 0, UNKNOWN)
        }
        listed[self.fill] = len(self) - sum(c for v, c in listed.items() if v != self.fill)
        return {"positive": listed[1], "negative": listed[0], "unknown": listed[UNKNOWN]}

    def hide_positives(self, fraction: float, *, hidden_as: str = "unknown", seed: int = 0) -> LabelLists:
        """A copy with ``fraction`` of the positives (chosen at random, seeded) turned unknown or negative.

        Simulates incompletely labelled data: ``hidden_as="unknown"`` marks them
        -1, as when annotators say what they did not check; ``"negative"``
        writes them as absent, as in most real data, where nobody knows which
        labels are missing.
        """
        if not 0.0 <= fraction <= 1.0:
            raise ConfigError(f"the fraction of positives to hide must lie in [0, 1], got {fraction}")
        if hidden_as not in HIDDEN_AS:
            raise ConfigError(f"hidden labels are marked as one of {list(HIDDEN_AS)}, not {hidden_as!r}")
        positives = np.flatnonzero(self.values == 1)
        n_hide = round(fraction * len(positives))
        hide = np.random.default_rng(seed).choice(positives, size=n_hide, replace=False)
        values = self.values.copy()
        values[hide] = UNKNOWN if hidden_as == "unknown" else 0
        return self.select(values != self.fill, values)
