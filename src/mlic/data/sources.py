"""Readers that turn label files into a ``Manifest``: tags CSV, multi-hot CSV and JSON lines.

COCO, Pascal VOC and folder-per-label data are read by ``mlic.data.importers``;
``detect_format`` and ``load_source`` here cover every format.

Each reader resolves image paths, infers a schema (or maps the data onto a
given one) and builds the target matrices with index arrays, so that 100,000
rows of 1,000 labels load in seconds. Every error a file can cause is a
``DataError`` that names the file, the line and the field.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import json
import math
import os
import re
import reprlib
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mlic.data.images import IMAGE_SUFFIXES
from mlic.data.manifest import Manifest
from mlic.data.targets import LabelLists
from mlic.errors import ConfigError, DataError, SchemaError
from mlic.schema import UNKNOWN, Attribute, LabelSchema

FORMATS: tuple[str, ...] = ("csv-tags", "csv-multihot", "jsonl", "coco", "voc", "folders")
PATH_COLUMNS = ("path", "image", "image_path", "image_name", "file", "filename", "file_name", "img")
TAGS_COLUMNS = ("tags", "labels", "label", "classes", "categories")
_TRY_SUFFIXES = IMAGE_SUFFIXES + tuple(s.upper() for s in IMAGE_SUFFIXES)
_CSV_SUFFIXES = (".csv", ".tsv", ".txt")
_JSONL_SUFFIXES = (".jsonl", ".ndjson")
_BINARY = {  # multi-hot cell (stripped, lower case) -> label target
    **dict.fromkeys(("1", "1.0", "true", "yes"), 1),
    **dict.fromkeys(("0", "0.0", "false", "no"), 0),
    **dict.fromkeys(("", "-1", "-1.0"), UNKNOWN),
}
_OTHER = 2  # code of a multi-hot cell that is not a label value
_BLANK = ("", "-1")  # attribute cells that mean unknown
_MAX_CODES = 1 << 16  # distinct multi-hot cell values, stored as uint16


class _Source:
    """One data file: its name for messages, the folder images resolve against, a listing cache."""

    def __init__(self, path: str | Path, images_root: str | Path | None) -> None:
        self.path = Path(path)
        self.name = str(path)
        base = images_root if images_root is not None else self.path.absolute().parent
        self.root = os.path.abspath(base)
        self._listings: dict[str, set[str]] = {}
        self.header_line = 1

    def error(self, line: int | None, field: str | None, message: str) -> DataError:
        where = self.name if line is None else f"{self.name}:{line}"
        return DataError(f"{where}: field {field!r}: {message}" if field else f"{where}: {message}")

    def lines(self, newline: str | None = None) -> Iterator[str]:
        """The file's lines, streamed as UTF-8 (BOM tolerated); read errors become ``DataError``s."""
        try:
            with self.path.open(encoding="utf-8-sig", newline=newline) as f:
                yield from f
        except FileNotFoundError:
            raise self.error(None, None, "file not found") from None
        except UnicodeDecodeError:
            raise self._decode_error() from None
        except OSError as e:
            raise self.error(None, None, f"cannot read the file: {e.strerror or e}") from None

    def _decode_error(self) -> DataError:
        raw = self.path.read_bytes()
        raw = raw[len(codecs.BOM_UTF8) :] if raw.startswith(codecs.BOM_UTF8) else raw
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw.count(b"\n", 0, e.start) + 1
            return self.error(line, None, f"not UTF-8 text ({e.reason}); save the file as UTF-8")
        return self.error(None, None, "not UTF-8 text; save the file as UTF-8")

    def image(self, line: int | None, field: str, cell: str) -> str:
        """Absolute path of an image cell; a name without an image suffix gets the one that exists."""
        rel = cell.strip()
        if not rel:
            raise self.error(line, field, "empty image path")
        if "\x00" in rel or not _encodable(rel):
            message = f"not a file path: {reprlib.repr(rel)} holds a NUL character or a lone surrogate"
            raise self.error(line, field, message)
        full = os.path.abspath(os.path.join(self.root, rel))
        if os.path.splitext(full)[1].lower() in IMAGE_SUFFIXES:
            return full
        folder, name = os.path.split(full)
        names = self._listings.get(folder)
        if names is None:
            try:
                names = set(os.listdir(folder))
            except OSError:
                names = set()
            self._listings[folder] = names
        if name not in names:
            for suffix in _TRY_SUFFIXES:
                if name + suffix in names:
                    return full + suffix
        return full


def _encodable(path: str) -> bool:
    """Whether the OS can take ``path`` as a file name (a JSON "\\ud800" decodes to an unpaired surrogate)."""
    try:
        os.fsencode(path)
    except UnicodeEncodeError:
        return False
    return True


# -- format selection -----------------------------------------------------------
def detect_format(path: str | Path) -> str:
    """The format of a data file or folder, from its suffix and, for CSV and JSON, its first bytes.

    A folder is VOC when it holds ``Annotations/`` (or is a VOCdevkit holding
    one VOC root), else one folder per label; a ``.txt`` below ``ImageSets/``
    is a VOC image-set list; a ``.json`` is COCO (or JSON lines, judged from
    its head: ``importers.json_format``).
    """
    from mlic.data import importers  # imports this module

    p = Path(path)
    if p.is_dir():
        return importers.folder_format(p)
    suffix = p.suffix.lower()
    if suffix in _JSONL_SUFFIXES:
        return "jsonl"
    if suffix == ".json":
        return importers.json_format(p)
    if importers.is_voc_image_set(p):
        return "voc"
    if suffix in _CSV_SUFFIXES:
        header = [h.strip().lower() for h in _first_row(p)]
        return "csv-tags" if any(h in TAGS_COLUMNS for h in header) else "csv-multihot"
    raise DataError(
        f"{path}: cannot tell the format from the suffix {suffix or '(none)'!r}; expected a folder or one of "
        f"{[*_CSV_SUFFIXES, *_JSONL_SUFFIXES, '.json']}, or pass the format, one of {list(FORMATS)}"
    )


def _check_format(format: str) -> str:
    if format in FORMATS:
        return format
    close = difflib.get_close_matches(str(format), FORMATS, n=1, cutoff=0.4)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown data format {format!r}; expected one of {list(FORMATS)}{hint}")


def load_source(
    path: str | Path,
    *,
    format: str | None = None,
    images_root: str | Path | None = None,
    schema: LabelSchema | None = None,
    tag_separator: str = " ",
    path_column: str | None = None,
    tags_column: str | None = None,
    drop_unannotated: bool = False,
) -> Manifest:
    """Read any supported data file or folder into a ``Manifest``; ``format`` overrides detection.

    ``drop_unannotated`` leaves out COCO images without annotations (it is an
    error with other formats, rather than silently doing nothing).
    """
    from mlic.data import importers  # imports this module

    if format is not None:
        fmt = _check_format(format)
    elif tags_column is not None and Path(path).suffix.lower() in _CSV_SUFFIXES:
        fmt = "csv-tags"
    else:
        fmt = detect_format(path)
    if drop_unannotated and fmt != "coco":
        raise ConfigError(f"{path}: dropping unannotated images applies to COCO data only, not to {fmt}")
    if fmt == "folders":
        if images_root is not None:
            raise ConfigError(f"{path}: an images root does not apply to folder-per-label data")
        return importers.read_folders(path, schema=schema)
    common = {"images_root": images_root, "schema": schema}
    if fmt == "coco":
        return importers.read_coco(path, **common, drop_unannotated=drop_unannotated)
    if fmt == "voc":
        return importers.read_voc(path, **common)
    if fmt == "csv-tags":
        tags = {"separator": tag_separator, "tags_column": tags_column}
        return read_tags_csv(path, **common, path_column=path_column, **tags)
    if fmt == "csv-multihot":
        return read_multihot_csv(path, **common, path_column=path_column)
    return read_jsonl(path, **common)


# -- CSV plumbing ---------------------------------------------------------------
def _first_row(path: Path) -> list[str]:
    src = _Source(path, None)
    return _header(src, _csv_rows(src))


def _delimiter(path: Path) -> str:
    return "\t" if path.suffix.lower() == ".tsv" else ","


def _csv_rows(src: _Source) -> Iterator[tuple[int, list[str]]]:
    """(first line number, cells) of each non-blank record; the header is the first."""
    reader = csv.reader(src.lines(newline=""), delimiter=_delimiter(src.path))
    previous = 0
    try:
        for row in reader:
            start, previous = previous + 1, reader.line_num
            if row and (len(row) > 1 or row[0].strip()):
                yield start, row
    except csv.Error as e:
        raise src.error(reader.line_num, None, f"malformed CSV: {e}") from None


def _header(src: _Source, rows: Iterator[tuple[int, list[str]]]) -> list[str]:
    """The first record, stripped; its line is where header errors point."""
    first = next(rows, None)
    if first is None:
        raise src.error(None, None, "the file is empty")
    src.header_line = first[0]
    return [h.strip() for h in first[1]]


def _find_column(src: _Source, header: list[str], given: str | None, names: tuple, what: str) -> int:
    """Index of the column named ``given``, else of the first header cell among ``names``."""
    lowered = [h.lower() for h in header]
    if given is not None:
        if given in header:
            return header.index(given)
        if given.lower() in lowered:
            return lowered.index(given.lower())
        raise src.error(
            src.header_line, None, f"no column {given!r} (the {what} column); the header is {header}"
        )
    for name in names:
        if name in lowered:
            return lowered.index(name)
    message = f"no {what} column: looked for one of {list(names)} (any case) in the header {header}"
    raise src.error(src.header_line, None, f"{message}; name the column with {what}_column=")


def _check_width(src: _Source, line: int, row: list[str], header: list[str]) -> None:
    if len(row) != len(header):
        raise src.error(line, None, f"{len(row)} fields, but the header has {len(header)}: {header}")


# -- targets --------------------------------------------------------------------
def _class_key(value: str) -> tuple:
    """Sort key that puts "2" before "10" and "img2" before "img10"; a total order, ties broken by text."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if math.isfinite(number):  # NaN compares with nothing, which would make the order hash-dependent
        return (0, number, value)
    parts = re.split(r"(\d+)", value)  # the odd parts are the digit runs
    try:
        return (1, [int(p) if i % 2 else p for i, p in enumerate(parts)], value)
    except ValueError:  # a digit run longer than int() converts (4,300 digits)
        return (2, value)


def _make_schema(src: _Source, labels: list[str], attributes: list[tuple[str, list[str]]]) -> LabelSchema:
    """The schema inferred from the data; a ``DataError`` when the data cannot define one."""
    for name, classes in attributes:
        if len(classes) < 2:
            message = f"attribute {name!r} has {len(classes)} class(es) in the data {classes}"
            raise src.error(None, None, f"{message}; it needs at least 2 (or a schema that lists them)")
    if not labels and not attributes:
        raise src.error(None, None, "no labels or attributes found in the data")
    try:
        return LabelSchema(tuple(labels), tuple(Attribute(n, tuple(c)) for n, c in attributes))
    except SchemaError as e:
        raise src.error(None, None, str(e)) from None


def _label_indices(schema: LabelSchema, rows: list[list[str]], dropped: Counter) -> list[list[int]]:
    """Each row's label names as schema indices; names the schema lacks are counted in ``dropped``."""
    index = {name: j for j, name in enumerate(schema.labels)}
    out = []
    for names in rows:
        found = []
        for name in names:
            j = index.get(name)
            if j is None:
                dropped[name] += 1
            else:
                found.append(j)
        out.append(found)
    return out


def _warn_dropped(src: _Source, dropped: Counter) -> list[str]:
    """Warn once about names in the data that the schema lacks; return them."""
    if not dropped:
        return []
    items = sorted(dropped.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = ", ".join(f"{n!r} ({c} row{'' if c == 1 else 's'})" for n, c in items[:20])
    more = f", and {len(items) - 20} more" if len(items) > 20 else ""
    message = f"dropped {len(items)} label/attribute name(s) that the schema does not have"
    warnings.warn(f"{src.name}: {message}: {shown}{more}", UserWarning, stacklevel=3)
    return [n for n, _ in items]


def _manifest(src: _Source, fmt: str, schema, paths, labels, attributes, dropped: list[str]) -> Manifest:
    meta: dict = {"format": fmt}
    if dropped:
        meta["dropped"] = dropped
    return Manifest(schema, paths, labels, attributes, source=src.name, meta=meta)


# -- tags CSV -------------------------------------------------------------------
def _split_tags(cell: str, separator: str) -> list[str]:
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
    src = _Source(path, images_root)
    rows = _csv_rows(src)
    header = _header(src, rows)
    pi = _find_column(src, header, path_column, PATH_COLUMNS, "path")
    ti = _find_column(src, header, tags_column, TAGS_COLUMNS, "tags")
    paths: list[str] = []
    tags: list[list[str]] = []
    for line, row in rows:
        _check_width(src, line, row, header)
        paths.append(src.image(line, header[pi], row[pi]))
        tags.append(_split_tags(row[ti], separator))
    if not paths:
        raise src.error(None, None, "no rows below the header")
    if schema is None:
        schema = _make_schema(src, sorted({t for ts in tags for t in ts}), [])
    dropped: Counter = Counter()
    labels = LabelLists.from_lists(_label_indices(schema, tags, dropped), schema.n_labels)
    attributes = np.full((len(paths), schema.n_attributes), UNKNOWN, dtype=np.int64)
    return _manifest(src, "csv-tags", schema, paths, labels, attributes, _warn_dropped(src, dropped))


# -- multi-hot CSV --------------------------------------------------------------
def _scan_cells(src: _Source, rows, header: list[str], pi: int):
    """Paths, line numbers, and every other cell as a uint16 code into a table of distinct values."""
    table: dict[str, bytes] = {}  # cell text -> its code as 2 little-endian bytes
    lookup = table.__getitem__
    codes = bytearray()
    paths: list[str] = []
    lines: list[int] = []
    for line, row in rows:
        _check_width(src, line, row, header)
        paths.append(src.image(line, header[pi], row[pi]))
        lines.append(line)
        cells = row[:pi] + row[pi + 1 :]
        try:
            codes += b"".join(map(lookup, cells))
        except KeyError:
            for c in cells:
                if c not in table:
                    if len(table) == _MAX_CODES:
                        message = f"more than {_MAX_CODES} distinct values; is this a multi-hot CSV?"
                        raise src.error(line, None, message) from None
                    table[c] = len(table).to_bytes(2, "little")
            codes += b"".join(map(lookup, cells))
    grid = np.frombuffer(codes, dtype="<u2").reshape(len(paths), len(header) - 1)
    return paths, lines, grid, [v.strip() for v in table]


def _not_a_class(value: str, attribute: Attribute) -> str:
    return (
        f"{value!r} is not a class of attribute {attribute.name!r}; expected one of {list(attribute.classes)}"
    )


def _check_names(src: _Source, names: list[str]) -> None:
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
        raise src.error(lines[row], attribute.name, _not_a_class(values[column[row]], attribute))
    return lut


def read_multihot_csv(
    path: str | Path,
    *,
    images_root: str | Path | None = None,
    schema: LabelSchema | None = None,
    path_column: str | None = None,
) -> Manifest:
    """Read a CSV with an image column, one 1/0 column per label and one class column per attribute."""
    src = _Source(path, images_root)
    rows = _csv_rows(src)
    header = _header(src, rows)
    pi = _find_column(src, header, path_column, PATH_COLUMNS, "path")
    names = header[:pi] + header[pi + 1 :]
    _check_names(src, names)
    paths, lines, grid, values = _scan_cells(src, rows, header, pi)
    if not paths:
        raise src.error(None, None, "no rows below the header")
    kinds = np.array([_BINARY.get(v.lower(), _OTHER) for v in values], dtype=np.int8)[grid]
    column = {name: j for j, name in enumerate(names)}
    if schema is None:
        is_label = (kinds != _OTHER).all(axis=0)
        attrs = []
        for j in np.flatnonzero(~is_label):
            classes = {values[c] for c in np.unique(grid[:, j])} - set(_BLANK)
            attrs.append((names[j], sorted(classes, key=_class_key)))
        schema = _make_schema(src, [names[j] for j in np.flatnonzero(is_label)], attrs)
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
    return _manifest(src, "csv-multihot", schema, paths, labels, attributes, _warn_dropped(src, dropped))


# -- JSON lines -----------------------------------------------------------------
def _json_names(src: _Source, line: int, obj: dict, key: str) -> list[str]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise src.error(line, key, f"must be a list of strings, got {reprlib.repr(value)}")
    names = [v.strip() for v in value]
    if "" in names:
        raise src.error(line, key, f"holds an empty label name: {reprlib.repr(value)}")
    return list(dict.fromkeys(names))


def _json_attributes(src: _Source, line: int, obj: dict) -> dict[str, str | None]:
    value = obj.get("attributes")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise src.error(
            line, "attributes", f"must be an object of attribute: class, got {reprlib.repr(value)}"
        )
    out: dict[str, str | None] = {}
    for name, cls in value.items():
        if not name.strip():
            raise src.error(line, "attributes", "holds an empty attribute name")
        if cls is not None and (isinstance(cls, bool) or not isinstance(cls, (str, int))):
            raise src.error(
                line, f"attributes.{name}", f"must be a class name or null, got {reprlib.repr(cls)}"
            )
        cls = None if cls is None else str(cls).strip()
        out[name.strip()] = cls or None
    return out


def _json_record(src: _Source, line: int, text: str) -> dict:
    try:
        obj = json.loads(text)
    except ValueError as e:  # also the 4,300-digit limit of integers
        detail = f"{e.msg} at column {e.colno}" if isinstance(e, json.JSONDecodeError) else str(e)
        raise src.error(line, None, f"invalid JSON: {detail}") from None
    except RecursionError:
        raise src.error(line, None, "invalid JSON: nested too deeply") from None
    if not isinstance(obj, dict):
        raise src.error(line, None, f"expected a JSON object, got {reprlib.repr(obj)}")
    if not isinstance(obj.get("path"), str):
        got = "nothing" if "path" not in obj else reprlib.repr(obj["path"])
        raise src.error(line, "path", f"must be a string (the image path), got {got}")
    return obj


def read_jsonl(
    path: str | Path, *, images_root: str | Path | None = None, schema: LabelSchema | None = None
) -> Manifest:
    """Read JSON lines of {"path", "labels", "attributes", "unknown"}; only "path" is required."""
    src = _Source(path, images_root)
    paths: list[str] = []
    lines: list[int] = []
    present: list[list[str]] = []
    unknown: list[list[str]] = []
    attrs: list[dict[str, str | None]] = []
    for line, text in enumerate(src.lines(), 1):
        if not text.strip():
            continue
        obj = _json_record(src, line, text)
        paths.append(src.image(line, "path", obj["path"]))
        lines.append(line)
        present.append(_json_names(src, line, obj, "labels"))
        unknown.append(_json_names(src, line, obj, "unknown"))
        attrs.append(_json_attributes(src, line, obj))
    if not paths:
        raise src.error(None, None, "the file is empty")
    if schema is None:
        classes: dict[str, set[str]] = {}
        for row in attrs:
            for name, cls in row.items():
                classes.setdefault(name, set()).update([cls] if cls is not None else [])
        label_names = sorted({n for rows in (present, unknown) for ns in rows for n in ns})
        schema = _make_schema(src, label_names, [(n, sorted(c, key=_class_key)) for n, c in classes.items()])
    dropped: Counter = Counter()
    for i, both in enumerate(set(p) & set(u) for p, u in zip(present, unknown)):
        if both:
            raise src.error(lines[i], "unknown", f"{sorted(both)} also listed under 'labels'")
    positives, unknowns = _label_indices(schema, present, dropped), _label_indices(schema, unknown, dropped)
    labels = LabelLists.from_lists(positives, schema.n_labels, unknown=unknowns)
    attributes = _json_attribute_matrix(src, schema, attrs, lines, dropped)
    return _manifest(src, "jsonl", schema, paths, labels, attributes, _warn_dropped(src, dropped))


def _json_attribute_matrix(src, schema: LabelSchema, rows, lines: list[int], dropped: Counter) -> np.ndarray:
    index = {a.name: (j, {c: k for k, c in enumerate(a.classes)}) for j, a in enumerate(schema.attributes)}
    out = np.full((len(rows), schema.n_attributes), UNKNOWN, dtype=np.int64)
    for i, row in enumerate(rows):
        for name, cls in row.items():
            hit = index.get(name)
            if hit is None:
                dropped[name] += 1
            elif cls is not None:
                j, classes = hit
                if cls not in classes:
                    message = _not_a_class(cls, schema.attribute(name))
                    raise src.error(lines[i], f"attributes.{name}", message)
                out[i, j] = classes[cls]
    return out
