"""JSON lines: one object per image, read and written (``mlic data split`` writes this format).

```
{"path": "img/1.jpg", "labels": ["cat"], "attributes": {"size": "large"}, "unknown": ["sky"]}
```
Labels listed are present, the others absent; ``unknown`` lists labels whose
truth is not known; attributes name their class (or ``null``). Only ``path``
is required. The only format that keeps unknowns and attributes exactly,
so splits are written in it.
"""

from __future__ import annotations

import json
import reprlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mlic.data.formats.json_head import first_line_is_record, is_coco_object, json_head, loads_or_none
from mlic.data.formats.source import (
    SourceFile,
    build_manifest,
    class_key,
    label_indices,
    make_schema,
    not_a_class,
)
from mlic.data.formats.spec import Format
from mlic.data.manifest import Manifest
from mlic.data.targets import LabelLists
from mlic.fileio import atomic_open
from mlic.schema import UNKNOWN, LabelSchema

NAME = "jsonl"
SUFFIXES = (".jsonl", ".ndjson")


def detect(path: Path) -> bool:
    """A ``.jsonl`` / ``.ndjson`` file, or a ``.json`` file of JSON lines (judged from its head).

    A ``.json`` file is JSON lines when its first line is an object with a
    ``"path"``, or when the whole file is one such object (and not a COCO one).
    """
    suffix = path.suffix.lower()
    if suffix in SUFFIXES:
        return True
    if suffix != ".json":
        return False
    text, whole = json_head(path)
    if first_line_is_record(text):
        return True
    if not whole:
        return False
    obj = loads_or_none(text)
    return isinstance(obj, dict) and "path" in obj and not is_coco_object(obj)


# -- reading --------------------------------------------------------------------------------------
def _json_names(src: SourceFile, line: int, obj: dict, key: str) -> list[str]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise src.error(line, key, f"must be a list of strings, got {reprlib.repr(value)}")
    names = [v.strip() for v in value]
    if "" in names:
        raise src.error(line, key, f"holds an empty label name: {reprlib.repr(value)}")
    return list(dict.fromkeys(names))


def _json_attributes(src: SourceFile, line: int, obj: dict) -> dict[str, str | None]:
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


def _json_record(src: SourceFile, line: int, text: str) -> dict:
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
    src = SourceFile(path, images_root)
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
        schema = make_schema(src, label_names, [(n, sorted(c, key=class_key)) for n, c in classes.items()])
    dropped: Counter = Counter()
    for i, both in enumerate(set(p) & set(u) for p, u in zip(present, unknown)):
        if both:
            raise src.error(lines[i], "unknown", f"{sorted(both)} also listed under 'labels'")
    positives, unknowns = label_indices(schema, present, dropped), label_indices(schema, unknown, dropped)
    labels = LabelLists.from_lists(positives, schema.n_labels, unknown=unknowns)
    attributes = _attribute_matrix(src, schema, attrs, lines, dropped)
    return build_manifest(src, NAME, schema, paths, labels, attributes, dropped)


def _attribute_matrix(src, schema: LabelSchema, rows, lines: list[int], dropped: Counter) -> np.ndarray:
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
                    raise src.error(lines[i], f"attributes.{name}", not_a_class(cls, schema.attribute(name)))
                out[i, j] = classes[cls]
    return out


# -- writing --------------------------------------------------------------------------------------
def jsonl_record(manifest: Manifest, i: int, path: str) -> dict:
    """Image ``i`` as a JSON lines record: positives under "labels", unknowns under "unknown", attributes."""
    schema, lists = manifest.schema, manifest.label_lists
    indices, values = lists.row(i)
    record: dict = {"path": path, "labels": [schema.labels[j] for j in indices[values == 1]]}
    if lists.fill == UNKNOWN:  # the listed entries are the known ones; every other label is unknown
        known = np.zeros(schema.n_labels, dtype=bool)
        known[indices] = True
        unknown = np.flatnonzero(~known)
    else:
        unknown = indices[values == UNKNOWN]
    if len(unknown):
        record["unknown"] = [schema.labels[j] for j in unknown]
    if schema.attributes:
        row = manifest.attributes[i]
        record["attributes"] = {
            a.name: None if row[k] == UNKNOWN else a.classes[row[k]] for k, a in enumerate(schema.attributes)
        }
    return record


def write_jsonl(manifest: Manifest, path: str | Path, paths: Sequence[str] | None = None) -> Path:
    """Write ``manifest`` as JSON lines to ``path`` (atomically), with ``paths`` as written image paths.

    ``paths`` default to the manifest's own; ``mlic.data.split.write_splits``
    passes them relative to the output folder.
    """
    paths = manifest.paths if paths is None else paths
    with atomic_open(path, "w", encoding="utf-8") as f:
        for i, image in enumerate(paths):
            f.write(json.dumps(jsonl_record(manifest, i, image)) + "\n")
    return Path(path)


FORMAT = Format(
    NAME,
    detect,
    lambda path, *, schema=None, images_root=None: read_jsonl(path, images_root=images_root, schema=schema),
    options=("images_root",),
    suffixes=(*SUFFIXES, ".json"),
    looks_like='JSON lines of {"path": ...}',
    write=write_jsonl,
)
