"""Tags CSV: an image column and a column of separated tags (the Kaggle Planet layout).

```
image_name,tags
train_0,haze primary
```
Labels are the distinct tags, sorted; a listed tag is present, every other absent.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from mlic.data.formats.csv_table import (
    CSV_SUFFIXES,
    PATH_COLUMNS,
    TAGS_COLUMNS,
    check_width,
    csv_rows,
    find_column,
    has_tags_column,
    header,
    is_csv,
)
from mlic.data.formats.source import SourceFile, build_manifest, label_indices, make_schema, no_attributes
from mlic.data.formats.spec import Format
from mlic.data.manifest import Manifest
from mlic.data.targets import LabelLists
from mlic.schema import LabelSchema

NAME = "csv-tags"


def detect(path: Path) -> bool:
    """A CSV file whose header has a tags column."""
    return is_csv(path) and has_tags_column(path)


def split_tags(cell: str, separator: str) -> list[str]:
    """The distinct tags of a cell, in order; a blank ``separator`` splits on any whitespace."""
    parts = cell.split() if not separator.strip() else (t.strip() for t in cell.split(separator))
    return list(dict.fromkeys(t for t in parts if t))


def read_tags_csv(
    path: str | Path,
    *,
    images_root: str | Path | None = None,
    schema: LabelSchema | None = None,
    separator: str = " ",
    path_column: str | None = None,
    tags_column: str | None = None,
) -> Manifest:
    """Read a CSV with an image column and a column of separated tags (e.g. Kaggle Planet)."""
    src = SourceFile(path, images_root)
    rows = csv_rows(src)
    head = header(src, rows)
    pi = find_column(src, head, path_column, PATH_COLUMNS, "path")
    ti = find_column(src, head, tags_column, TAGS_COLUMNS, "tags")
    paths: list[str] = []
    tags: list[list[str]] = []
    for line, row in rows:
        check_width(src, line, row, head)
        paths.append(src.image(line, head[pi], row[pi]))
        tags.append(split_tags(row[ti], separator))
    if not paths:
        raise src.error(None, None, "no rows below the header")
    if schema is None:
        schema = make_schema(src, sorted({t for ts in tags for t in ts}), [])
    dropped: Counter = Counter()
    labels = LabelLists.from_lists(label_indices(schema, tags, dropped), schema.n_labels)
    return build_manifest(src, NAME, schema, paths, labels, no_attributes(len(paths), schema), dropped)


def _read(
    path: str | Path,
    *,
    schema: LabelSchema | None = None,
    images_root: str | Path | None = None,
    tag_separator: str = " ",
    path_column: str | None = None,
    tags_column: str | None = None,
) -> Manifest:
    return read_tags_csv(path, images_root=images_root, schema=schema, separator=tag_separator,
                         path_column=path_column, tags_column=tags_column)  # fmt: skip


FORMAT = Format(
    NAME,
    detect,
    _read,
    options=("images_root", "tag_separator", "path_column", "tags_column"),
    suffixes=CSV_SUFFIXES,
    looks_like="a CSV with a tags column",
)
