"""COCO: an instances JSON; each category is a label, present in an image that has an annotation of it.

Labels are the category names ordered by category id. Every error names the
file and the field, e.g. ``instances.json: field 'annotations[7].image_id': ...``.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np

from mlic.data.formats.json_head import first_line_is_record, is_coco_object, json_head, loads_or_none
from mlic.data.formats.source import SourceFile, build_manifest, make_schema, no_attributes
from mlic.data.formats.spec import Format
from mlic.data.manifest import Manifest
from mlic.data.targets import LabelLists
from mlic.schema import LabelSchema

NAME = "coco"
_ID_KEYS = ("image_id", "category_id")
_ID_TYPES = {int, str}  # of COCO ids; not bool, whose true equals 1, nor float


def detect(path: Path) -> bool:
    """A ``.json`` file that holds a COCO object, judged from its first ``JSON_HEAD`` bytes.

    A file that fits in the head is parsed and is COCO when its top-level
    object has ``images`` and ``annotations`` or ``categories``; a larger one
    is COCO when it opens with ``{`` and the head holds an ``"images": [`` or
    ``"categories": [`` key, so that a 500 MB file is not parsed twice. A file
    whose first line is an object with a ``"path"`` is JSON lines instead.
    """
    if path.suffix.lower() != ".json":
        return False
    text, whole = json_head(path)
    if first_line_is_record(text):
        return False
    if whole:
        return is_coco_object(loads_or_none(text))
    return text.startswith("{") and bool(re.search(r'"(images|categories)"\s*:\s*\[', text))


def read_coco(
    path: str | Path,
    *,
    images_root: str | Path | None = None,
    schema: LabelSchema | None = None,
    drop_unannotated: bool = False,
) -> Manifest:
    """Read a COCO instances JSON: each category is a label, present in an image that has an annotation of it.

    Labels are the category names ordered by category id; categories without
    any annotation are labels too. Crowd annotations (``iscrowd``) count as
    the label being present. Images without annotations are all-negative
    (COCO annotates every object of its categories), or left out with
    ``drop_unannotated``; ``meta["unannotated"]`` counts them either way.

    ``file_name`` resolves against ``images_root``; by default against the
    first of these folders that holds the first image, else the JSON's
    folder: the JSON's folder, its ``images/``, and, for the layout
    ``ROOT/annotations/instances_X.json``, ``ROOT/X/``, ``ROOT/images/X/``,
    ``ROOT/images/`` and ``ROOT/``. ``meta["images_root"]`` says which.
    """
    src = SourceFile(path, images_root)
    data = _load_json(src)
    ids, files = _coco_images(src, data)
    names, categories = _coco_categories(src, data)
    rows, cols = _coco_pairs(src, data, {v: i for i, v in enumerate(ids)}, categories, len(names))
    if images_root is None:
        src.root = _coco_images_root(src.path, files[0])
    if schema is None:
        schema = make_schema(src, names, [])
    annotated = np.zeros(len(ids), dtype=bool)
    annotated[rows] = True
    keep = np.flatnonzero(annotated) if drop_unannotated else np.arange(len(ids))
    if not len(keep):
        raise src.error(None, "annotations", "no image has an annotation, so none is left to read")
    new_row = np.full(len(ids), -1, dtype=np.int64)
    new_row[keep] = np.arange(len(keep))
    index = {name: j for j, name in enumerate(schema.labels)}
    lut = np.array([index.get(n, -1) for n in names], dtype=np.int64)
    counts = np.bincount(cols[lut[cols] < 0], minlength=len(names))
    dropped = Counter({names[c]: int(k) for c, k in enumerate(counts) if k})
    ok = lut[cols] >= 0
    rows, cols = new_row[rows[ok]], lut[cols[ok]]
    labels = LabelLists.from_entries(rows, cols, np.ones(len(rows), np.int8), len(keep), schema.n_labels)
    paths = [src.image(None, f"images[{i}].file_name", files[i]) for i in keep]
    n_unannotated = int((~annotated).sum())
    meta = {"images_root": src.root, "unannotated": n_unannotated, "drop_unannotated": drop_unannotated}
    attributes = no_attributes(len(paths), schema)
    return build_manifest(src, NAME, schema, paths, labels, attributes, dropped, meta)


def _load_json(src: SourceFile) -> dict:
    """The file's top-level JSON object; parse errors name the line and column."""
    try:
        data = json.loads(src.path.read_bytes())
    except FileNotFoundError:
        raise src.error(None, None, "file not found") from None
    except OSError as e:
        raise src.error(None, None, f"cannot read the file: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise src.error(e.lineno, None, f"invalid JSON: {e.msg} at column {e.colno}") from None
    except UnicodeDecodeError:
        raise src.error(None, None, "not UTF-8 text; save the file as UTF-8") from None
    except ValueError as e:  # an integer of more than 4,300 digits
        raise src.error(None, None, f"invalid JSON: {e}") from None
    except RecursionError:
        raise src.error(None, None, "invalid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise src.error(
            None, None, f"expected a COCO object with 'images' and 'categories', got {_kind(data)}"
        )
    return data


def _kind(value: object) -> str:
    return f"a JSON {type(value).__name__}" if not isinstance(value, dict) else "an object"


def _coco_list(src: SourceFile, data: dict, key: str, what: str) -> list:
    value = data.get(key)
    if not isinstance(value, list):
        got = "nothing" if key not in data else _kind(value)
        raise src.error(None, key, f"must be a list of {what}, got {got}")
    return value


def _coco_id(src: SourceFile, field: str, value: object) -> int | str:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise src.error(None, field, f"must be an integer or a string, got {value!r}")
    return value


def _coco_entry(src: SourceFile, field: str, entry: object, key: str) -> object:
    """``entry[key]`` of an entry that must be an object holding ``key``."""
    if not isinstance(entry, dict):
        raise src.error(None, field, f"must be an object, got {_kind(entry)}")
    if key not in entry:
        raise src.error(None, f"{field}.{key}", "missing")
    return entry[key]


def _coco_images(src: SourceFile, data: dict) -> tuple[list, list[str]]:
    """Image ids and file names, in file order; duplicate ids are an error."""
    ids, files, seen = [], [], {}
    for i, image in enumerate(_coco_list(src, data, "images", "image objects")):
        image_id = _coco_id(src, f"images[{i}].id", _coco_entry(src, f"images[{i}]", image, "id"))
        name = _coco_entry(src, f"images[{i}]", image, "file_name")
        if not isinstance(name, str) or not name.strip():
            raise src.error(None, f"images[{i}].file_name", f"must be a non-empty string, got {name!r}")
        if image_id in seen:
            raise src.error(
                None, f"images[{i}].id", f"duplicate image id {image_id!r} (also images[{seen[image_id]}])"
            )
        seen[image_id] = i
        ids.append(image_id)
        files.append(name.strip())
    if not ids:
        raise src.error(None, "images", "the list is empty")
    return ids, files


def _coco_categories(src: SourceFile, data: dict) -> tuple[list[str], dict]:
    """Category names ordered by id, and each category id's position in that order."""
    found: dict = {}
    where: dict[str, int] = {}
    for i, cat in enumerate(_coco_list(src, data, "categories", "category objects")):
        cat_id = _coco_id(src, f"categories[{i}].id", _coco_entry(src, f"categories[{i}]", cat, "id"))
        name = _coco_entry(src, f"categories[{i}]", cat, "name")
        if not isinstance(name, str) or not name.strip():
            raise src.error(None, f"categories[{i}].name", f"must be a non-empty string, got {name!r}")
        name = name.strip()
        if cat_id in found:
            raise src.error(None, f"categories[{i}].id", f"duplicate category id {cat_id!r}")
        if name in where:
            raise src.error(
                None, f"categories[{i}].name", f"{name!r} is also the name of categories[{where[name]}]"
            )
        found[cat_id], where[name] = name, i
    order = sorted(found, key=lambda v: (isinstance(v, str), v))
    return [found[v] for v in order], {v: k for k, v in enumerate(order)}


def _coco_pairs(src: SourceFile, data: dict, images: dict, categories: dict, n_cat: int):
    """Distinct (image row, category position) pairs of the annotations, as int64 arrays."""
    if "annotations" not in data:
        raise src.error(None, "annotations", "missing: the file has no labels (a COCO image-info file?)")
    annotations = _coco_list(src, data, "annotations", "annotation objects")
    rows = np.empty(len(annotations), dtype=np.int64)
    cols = np.empty(len(annotations), dtype=np.int64)
    i = 0
    try:
        for i, a in enumerate(annotations):
            rows[i], cols[i] = images[a["image_id"]], categories[a["category_id"]]
    except (KeyError, TypeError):
        bad = i
    else:
        bad = None
    if bad is None and not {type(a[k]) for a in annotations for k in _ID_KEYS} <= _ID_TYPES:
        # true and 1.0 passed the lookups, being equal to 1: find the first annotation with one
        bad = next(i for i, a in enumerate(annotations) if not {type(a[k]) for k in _ID_KEYS} <= _ID_TYPES)
    if bad is not None:
        _bad_annotation(src, bad, annotations[bad], images, categories)
    if not n_cat:
        return rows[:0], cols[:0]
    keys = np.sort(rows * n_cat + cols)  # np.unique is several times slower here
    keys = keys[np.r_[True, keys[1:] != keys[:-1]]] if len(keys) else keys
    return keys // n_cat, keys % n_cat


def _bad_annotation(src: SourceFile, i: int, a: object, images: dict, categories: dict) -> None:
    """Raise the error of annotation ``i``, which failed the fast lookup."""
    field = f"annotations[{i}]"
    for key, known, what in (("image_id", images, "image"), ("category_id", categories, "category")):
        value = _coco_entry(src, field, a, key)
        ann = f"annotation id {a['id']!r}: " if isinstance(a, dict) and "id" in a else ""
        if type(value) not in _ID_TYPES:
            raise src.error(None, f"{field}.{key}", f"{ann}must be an integer or a string, got {value!r}")
        if value not in known:
            raise src.error(None, f"{field}.{key}", f"{ann}no {what} has id {value!r}")


def _coco_images_root(json_path: Path, first: str) -> str:
    """The default folder of ``file_name``s: see ``read_coco``."""
    folder = json_path.absolute().parent
    candidates = [folder, folder / "images"]
    if folder.name.lower() == "annotations":
        base, split = folder.parent, json_path.stem.rsplit("_", 1)[-1]
        candidates += [base / split, base / "images" / split, base / "images", base]
    for c in candidates:
        if os.path.isfile(c / first):  # not Path.is_file: it raises for a name too long
            return os.path.abspath(c)
    return os.path.abspath(folder)


FORMAT = Format(
    NAME,
    detect,
    read_coco,
    options=("images_root", "drop_unannotated"),
    suffixes=(".json",),
    looks_like="a COCO file (an object with 'images' and 'annotations' or 'categories')",
)
