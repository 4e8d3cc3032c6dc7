"""The manifest: a data set as image references plus targets, whatever its source format.

Every source (CSV, JSON lines, the MultiDigits demo, ...) becomes a
``Manifest``; everything downstream (datasets, training, evaluation) reads
manifests only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlic.errors import DataError, SchemaError
from mlic.schema import UNKNOWN, LabelSchema


@dataclass
class Manifest:
    """Images and their targets under one schema.

    ``paths`` are image files (absolute after a source resolved them). For data
    held in memory, such as MultiDigits, ``pixels`` holds uint8 images
    ``[N, H, W]`` (grey) or ``[N, H, W, 3]`` (RGB) and ``paths`` are names.
    """

    schema: LabelSchema
    paths: list[str]
    labels: np.ndarray
    attributes: np.ndarray
    pixels: np.ndarray | None = None
    source: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        labels = np.asarray(self.labels)
        if labels.dtype != np.int8 and labels.size and (labels.min() < UNKNOWN or labels.max() > 1):
            raise SchemaError(f"{self.source or 'manifest'}: label targets must be 1, 0 or -1")
        self.labels = labels.astype(np.int8, copy=False).reshape(len(self.paths), self.schema.n_labels)
        self.attributes = np.asarray(self.attributes, dtype=np.int64).reshape(
            len(self.paths), self.schema.n_attributes
        )
        self.schema.check_targets(self.labels, self.attributes)
        if self.pixels is not None and len(self.pixels) != len(self.paths):
            raise DataError(
                f"{self.source or 'manifest'}: {len(self.pixels)} images for {len(self.paths)} paths"
            )

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: Sequence[int] | np.ndarray) -> Manifest:
        """The manifest restricted to ``indices``, in that order."""
        idx = np.asarray(indices, dtype=np.int64)
        return Manifest(
            self.schema,
            [self.paths[i] for i in idx],
            self.labels[idx],
            self.attributes[idx],
            None if self.pixels is None else self.pixels[idx],
            self.source,
            dict(self.meta),
        )

    def missing_files(self) -> list[str]:
        """Image files of this manifest that do not exist (none for in-memory data)."""
        if self.pixels is not None:
            return []
        return [p for p in self.paths if not Path(p).is_file()]

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
