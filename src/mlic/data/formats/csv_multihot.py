"""Multi-hot CSV: an image column, one 1/0 column per label and one class column per attribute.

```
path,cat,dog,sky,size
img/1.jpg,1,0,,large
```
A label cell is 1/0 (also true/false, yes/no), blank or -1 for unknown; a
column holding anything else is an attribute whose cells name classes
(blank: unknown). Cells are coded once into a table of distinct values, so
100,000 rows of 1,000 labels load in seconds.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from mlic.data.formats.csv_table import (
    CSV_SUFFIXES,
    PATH_COLUMNS,
    check_width,
    csv_rows,
    find_column,
    has_tags_column,
    header,
    is_csv,
)
from mlic.data.formats.source import SourceFile, build_manifest, class_key, make_schema, not_a_class
from mlic.data.formats.spec import Format
from mlic.data.manifest import Manifest
from mlic.schema import UNKNOWN, Attribute, LabelSchema

NAME = "csv-multihot"
_BINARY = {  # multi-hot cell (stripped, lower case) -> label target
    **dict.fromkeys(("1", "1.0", "true", "yes"), 1),
    **dict.fromkeys(("0", "0.0", "false", "no"), 0),
    **dict.fromkeys(("", "-1", "-1.0"), UNKNOWN),
}
_OTHER = 2  # code of a multi-hot cell that is not a label value
_BLANK = ("", "-1")  # attribute cells that mean unknown
MAX_CODES = 1 << 16
"""Distinct cell values a file may hold (stored as uint16 codes); more means it is not a multi-hot CSV."""


def detect(path: Path) -> bool:
    """A CSV file whose header has no tags column."""
    return is_csv(path) and not has_tags_column(path)


def _scan_cells(src: SourceFile, rows, head: list[str], pi: int):
    """Paths, line numbers, and every other cell as a uint16 code into a table of distinct values."""
    table: dict[str, bytes] = {}  # cell text -> its code as 2 little-endian bytes
    lookup = table.__getitem__
    codes = bytearray()
    paths: list[str] = []
    lines: list[int] = []
    for line, row in rows:
        check_width(src, line, row, head)
        paths.append(src.image(line, head[pi], row[pi]))
        lines.append(line)
        cells = row[:pi] + row[pi + 1 :]
        try:
            codes += b"".join(map(lookup, cells))
        except KeyError:
            for c in cells:
                if c not in table:
                    if len(table) == MAX_CODES:
                        message = f"more than {MAX_CODES} distinct values; is this a multi-hot CSV?"
                        raise src.error(line, None, message) from None
                    table[c] = len(table).to_bytes(2, "little")
            codes += b"".join(map(lookup, cells))
    grid = np.frombuffer(codes, dtype="<u2").reshape(len(paths), len(head) - 1)
    return paths, lines, grid, [v.strip() for v in table]


def _check_names(src: SourceFile, names: list[str]) -> None:
    if "" in names:
        raise src.error(src.header_line, None, f"column {names.index('') + 1} has no name (header {names})")
    dupes = sorted(n for n, c in Counter(names).items() if c > 1)
    if dupes:
        raise src.error(src.header_line, None, f"duplicate column names {dupes}")


def _attribute_lut(src, values: list[str], column: np.ndarray, attribute: Attribute, lines) -> np.ndarray:
    """Map codes of one column to class indices of ``attribute``; unknown classes are an error."""
    index = {c: k for k, c in enumerate(attribute.classes)}
    lut = np.full(len(values), UNKNOWN, dtype=np.int64)
    bad = []
    for code in np.unique(column):
        value = values[code]
        if value in index:
            lut[code] = index[value]
        elif value not in _BLANK:
            bad.append(code)
    if bad:
        row = int(np.flatnonzero(np.isin(column, bad))[0])
        raise src.error(lines[row], attribute.name, not_a_class(values[column[row]], attribute))
    return lut


def read_multihot_csv(
    path: str | Path,
    *,
    images_root: str | Path | None = None,
    schema: LabelSchema | None = None,
    path_column: str | None = None,
) -> Manifest:
    """Read a CSV with an image column, one 1/0 column per label and one class column per attribute."""
    src = SourceFile(path, images_root)
    rows = csv_rows(src)
    head = header(src, rows)
    pi = find_column(src, head, path_column, PATH_COLUMNS, "path")
    names = head[:pi] + head[pi + 1 :]
    _check_names(src, names)
    paths, lines, grid, values = _scan_cells(src, rows, head, pi)
    if not paths:
        raise src.error(None, None, "no rows below the header")
    kinds = np.array([_BINARY.get(v.lower(), _OTHER) for v in values], dtype=np.int8)[grid]
    column = {name: j for j, name in enumerate(names)}
    if schema is None:
        is_label = (kinds != _OTHER).all(axis=0)
        attrs = []
        for j in np.flatnonzero(~is_label):
            classes = {values[c] for c in np.unique(grid[:, j])} - set(_BLANK)
            attrs.append((names[j], sorted(classes, key=class_key)))
        schema = make_schema(src, [names[j] for j in np.flatnonzero(is_label)], attrs)
    ks = [k for k, name in enumerate(schema.labels) if name in column]
    js = [column[schema.labels[k]] for k in ks]
    found = kinds[:, js]
    if (found == _OTHER).any():
        r, c = (int(x) for x in np.argwhere(found == _OTHER)[0])
        message = (
            f"expected 1/0, true/false or yes/no, blank or -1 for unknown; got {values[grid[r, js[c]]]!r}"
        )
        raise src.error(lines[r], names[js[c]], message)
    labels = np.full((len(paths), schema.n_labels), UNKNOWN, dtype=np.int8)
    labels[:, ks] = found
    attributes = np.full((len(paths), schema.n_attributes), UNKNOWN, dtype=np.int64)
    for k, a in enumerate(schema.attributes):
        if a.name in column:
            col = grid[:, column[a.name]]
            attributes[:, k] = _attribute_lut(src, values, col, a, lines)[col]
    known = set(schema.labels) | set(schema.attribute_names)
    said = {n: np.isin(kinds[:, j], (1, _OTHER)).sum() for n, j in column.items() if n not in known}
    dropped = Counter({n: int(c) for n, c in said.items()})  # rows where a dropped column says something
    return build_manifest(src, NAME, schema, paths, labels, attributes, dropped)


def _read(
    path: str | Path,
    *,
    schema: LabelSchema | None = None,
    images_root: str | Path | None = None,
    path_column: str | None = None,
) -> Manifest:
    return read_multihot_csv(path, images_root=images_root, schema=schema, path_column=path_column)


FORMAT = Format(
    NAME,
    detect,
    _read,
    options=("images_root", "path_column"),
    suffixes=CSV_SUFFIXES,
    looks_like="a CSV with a path column",
)
