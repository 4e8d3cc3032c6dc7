"""One data file as every reader sees it, and the steps all readers share.

``SourceFile`` names the file in errors (``file:line: field 'f': message``),
streams its lines as UTF-8 and resolves image paths against the images
root. The functions below turn what a reader found into a ``Manifest``: the
schema inferred from the data (or the given one, whose missing names are
dropped with one warning), label names as schema indices, and the manifest
with its ``meta``.
"""

from __future__ import annotations

import codecs
import math
import os
import re
import reprlib
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mlic.data.images.decode import IMAGE_SUFFIXES
from mlic.data.manifest import Manifest
from mlic.errors import DataError, SchemaError
from mlic.schema import UNKNOWN, Attribute, LabelSchema

TRY_SUFFIXES = IMAGE_SUFFIXES + tuple(s.upper() for s in IMAGE_SUFFIXES)
"""Endings tried, in this order, for an image named without one (Kaggle Planet's ``train_0``)."""


def data_error(where: str | Path, field: str | None, message: str) -> DataError:
    """A ``DataError`` in the form every mlic reader uses: ``file: field 'f': message``."""
    return DataError(f"{where}: field {field!r}: {message}" if field else f"{where}: {message}")


class SourceFile:
    """One data file: its name for messages, the folder images resolve against, a listing cache."""

    def __init__(self, path: str | Path, images_root: str | Path | None) -> None:
        self.path = Path(path)
        self.name = str(path)
        base = images_root if images_root is not None else self.path.absolute().parent
        self.root = os.path.abspath(base)
        self._listings: dict[str, set[str]] = {}
        self.header_line = 1

    def error(self, line: int | None, field: str | None, message: str) -> DataError:
        """An error at ``line`` (None: the whole file) and ``field`` (None: the whole line)."""
        return data_error(self.name if line is None else f"{self.name}:{line}", field, message)

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

    def head(self, size: int) -> bytes:
        """The first ``size`` bytes of the file (fewer if it is shorter)."""
        try:
            with self.path.open("rb") as f:
                return f.read(size)
        except FileNotFoundError:
            raise self.error(None, None, "file not found") from None
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
        if "\x00" in rel or not encodable(rel):
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
            for suffix in TRY_SUFFIXES:
                if name + suffix in names:
                    return full + suffix
        return full


def encodable(path: str) -> bool:
    """Whether the OS can take ``path`` as a file name (a JSON "\\ud800" decodes to an unpaired surrogate)."""
    try:
        os.fsencode(path)
    except UnicodeEncodeError:
        return False
    return True


def class_key(value: str) -> tuple:
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


def not_a_class(value: str, attribute: Attribute) -> str:
    """The message for an attribute cell that names no class of ``attribute``."""
    return (
        f"{value!r} is not a class of attribute {attribute.name!r}; expected one of {list(attribute.classes)}"
    )


def make_schema(src: SourceFile, labels: list[str], attributes: list[tuple[str, list[str]]]) -> LabelSchema:
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


def label_indices(schema: LabelSchema, rows: list[list[str]], dropped: Counter) -> list[list[int]]:
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


def warn_dropped(src: SourceFile, dropped: Counter) -> list[str]:
    """Warn once about names in the data that the schema lacks; return them."""
    if not dropped:
        return []
    items = sorted(dropped.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = ", ".join(f"{n!r} ({c} row{'' if c == 1 else 's'})" for n, c in items[:20])
    more = f", and {len(items) - 20} more" if len(items) > 20 else ""
    message = f"dropped {len(items)} label/attribute name(s) that the schema does not have"
    warnings.warn(f"{src.name}: {message}: {shown}{more}", UserWarning, stacklevel=4)
    return [n for n, _ in items]


def no_attributes(n: int, schema: LabelSchema) -> np.ndarray:
    """All-unknown attribute targets ``[n, n_attributes]``, for formats that carry no attributes."""
    return np.full((n, schema.n_attributes), UNKNOWN, dtype=np.int64)


def build_manifest(
    src: SourceFile,
    fmt: str,
    schema: LabelSchema,
    paths: list[str],
    labels,
    attributes: np.ndarray,
    dropped: Counter,
    meta: dict | None = None,
) -> Manifest:
    """The reader's result: ``meta`` records the format and, after one warning, the dropped names."""
    names = warn_dropped(src, dropped)
    info: dict = {"format": fmt}
    if names:
        info["dropped"] = names
    return Manifest(schema, paths, labels, attributes, source=src.name, meta={**info, **(meta or {})})
