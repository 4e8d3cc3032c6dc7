"""The manifest: a data set as image references plus targets, whatever its source format.

Every source (CSV, JSON lines, the MultiDigits demo, ...) becomes a
``Manifest``; everything downstream (datasets, training, evaluation) reads
manifests only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from mlic.data.targets import LabelLists
from mlic.errors import DataError, SchemaError
from mlic.schema import UNKNOWN, LabelSchema


class Manifest:
    """Images and their targets under one schema.

    ``paths`` are image files (absolute after a source resolved them). For data
    held in memory, such as MultiDigits, ``pixels`` holds uint8 images
    ``[N, H, W]`` (grey) or ``[N, H, W, 3]`` (RGB) and ``paths`` are names.
    Label targets are kept as ``LabelLists`` (``label_lists``), a list of
    labels per image, so that training on 10,000 labels never holds the
    dense matrix; ``labels`` builds that matrix on first use (evaluation
    needs it) and keeps it.
    """

    def __init__(
        self,
        schema: LabelSchema,
        paths: list[str],
        labels: np.ndarray | LabelLists,
        attributes: np.ndarray,
        pixels: np.ndarray | None = None,
        source: str = "",
        meta: dict | None = None,
    ) -> None:
        self.schema, self.paths, self.pixels = schema, list(paths), pixels
        self.source, self.meta = source, dict(meta or {})
        where = self.source or "manifest"
        if isinstance(labels, LabelLists):
            self.label_lists = labels
            self._dense: np.ndarray | None = None
        else:
            dense = np.asarray(labels)
            if dense.size and (dense.min() < UNKNOWN or dense.max() > 1):
                raise SchemaError(f"{where}: label targets must be 1, 0 or -1")
            self._dense = dense.astype(np.int8, copy=False).reshape(len(self.paths), schema.n_labels)
            self.label_lists = LabelLists.from_dense(self._dense)
        if self.label_lists.shape != (len(self.paths), schema.n_labels):
            raise SchemaError(
                f"{where}: label targets have shape {self.label_lists.shape}; "
                f"expected [{len(self.paths)}, {schema.n_labels}]"
            )
        self.attributes = np.asarray(attributes, dtype=np.int64).reshape(len(self.paths), schema.n_attributes)
        schema.check_attributes(self.attributes)
        if self.pixels is not None and len(self.pixels) != len(self.paths):
            raise DataError(f"{where}: {len(self.pixels)} images for {len(self.paths)} paths")

    @property
    def labels(self) -> np.ndarray:
        """Label targets as an int8 matrix ``[N, n_labels]``, built from the lists on first use."""
        if self._dense is None:
            self._dense = self.label_lists.dense()
        return self._dense

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: Sequence[int] | np.ndarray) -> Manifest:
        """The manifest restricted to ``indices``, in that order."""
        idx = np.asarray(indices, dtype=np.int64)
        return Manifest(
            self.schema,
            [self.paths[i] for i in idx],
            self.label_lists.take(idx),
            self.attributes[idx],
            None if self.pixels is None else self.pixels[idx],
            self.source,
            dict(self.meta),
        )

    def hide_positives(self, fraction: float, *, hidden_as: str = "unknown", seed: int = 0) -> Manifest:
        """A copy with ``fraction`` of the positive labels hidden (``LabelLists.hide_positives``)."""
        lists = self.label_lists.hide_positives(fraction, hidden_as=hidden_as, seed=seed)
        meta = dict(self.meta, hidden_positives={"fraction": fraction, "as": hidden_as, "seed": seed})
        return Manifest(self.schema, self.paths, lists, self.attributes, self.pixels, self.source, meta)

    def missing_files(self) -> list[str]:
        """Image files of this manifest that do not exist (none for in-memory data)."""
        if self.pixels is not None:
            return []
        # os.path.isfile, not Path.is_file: a name the OS refuses (too long, a NUL) is missing, not an error
        return [p for p in self.paths if not os.path.isfile(p)]

    def check_files(self) -> None:
        """Raise one ``DataError`` that lists every image file that does not exist."""
        check_files(self)

    def to_schema(self, schema: LabelSchema) -> Manifest:
        """The same images with targets re-laid out for ``schema`` (e.g. a trained model's).

        Labels that the data does not know become unknown (-1); labels and
        attributes the model does not know are dropped and listed in
        ``meta["dropped"]``. Attribute classes are matched by name.
        """
        if schema == self.schema:
            return self
        n = len(self)
        labels = np.full((n, schema.n_labels), UNKNOWN, dtype=np.int8)
        for j, name in enumerate(schema.labels):
            if name in self.schema.labels:
                labels[:, j] = self.labels[:, self.schema.label_index(name)]
        attributes = np.full((n, schema.n_attributes), UNKNOWN, dtype=np.int64)
        for j, a in enumerate(schema.attributes):
            if a.name not in self.schema.attribute_names:
                continue
            mine = self.schema.attribute(a.name)
            col = self.attributes[:, self.schema.attribute_names.index(a.name)]
            remap = np.array([a.classes.index(c) if c in a.classes else UNKNOWN for c in mine.classes])
            if (remap == UNKNOWN).any():
                extra = [c for c in mine.classes if c not in a.classes]
                raise DataError(
                    f"{self.source or 'data'}: attribute {a.name!r} has classes {extra} "
                    f"that the model does not know (it knows {list(a.classes)})"
                )
            attributes[:, j] = np.where(col == UNKNOWN, UNKNOWN, remap[np.clip(col, 0, None)])
        dropped = [
            x
            for x in self.schema.labels + self.schema.attribute_names
            if x not in schema.labels + schema.attribute_names
        ]
        meta = dict(self.meta, dropped=dropped)
        return Manifest(schema, list(self.paths), labels, attributes, self.pixels, self.source, meta)


def concat(manifests: Sequence[Manifest]) -> Manifest:
    """The images of ``manifests`` one after another, under their common schema (a refit's data)."""
    first = manifests[0]
    if any(m.schema != first.schema for m in manifests):
        raise SchemaError("cannot join data sets of different labels or attributes")
    in_memory = [m.pixels is not None for m in manifests]
    if any(in_memory) and not all(in_memory):
        raise DataError("cannot join image files with images held in memory")
    return Manifest(
        first.schema,
        [p for m in manifests for p in m.paths],
        LabelLists.concat([m.label_lists for m in manifests]),
        np.concatenate([m.attributes for m in manifests]),
        np.concatenate([m.pixels for m in manifests]) if all(in_memory) else None,
        first.source,
        dict(first.meta),
    )


def check_files(*manifests: Manifest) -> None:
    """Raise one ``DataError`` that lists every missing image file of all ``manifests``."""
    lines, total, n_missing = [], 0, 0
    for m in manifests:
        missing = m.missing_files()
        total += len(m)
        n_missing += len(missing)
        if missing:
            lines.append(f"{m.source or 'manifest'}: {len(missing)} of {len(m)} image files are missing:")
            lines += [f"  {p}" for p in missing[:50]]
            if len(missing) > 50:
                lines.append(f"  ... and {len(missing) - 50} more")
    if n_missing:
        raise DataError("\n".join(lines))
