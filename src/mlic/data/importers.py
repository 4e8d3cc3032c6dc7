"""Readers of the common public layouts: COCO instances JSON, Pascal VOC XML and one folder per label.

Each reader returns a ``Manifest`` like the readers of ``mlic.data.sources``:
image paths made absolute, a schema inferred from the data (or the given one,
whose missing names are dropped with one warning) and label targets built as
per-image lists, never as a dense matrix. The label order is fixed by the data:

- COCO: the categories ordered by id; each category's ``name`` is a label.
- VOC: the object class names, sorted.
- folders: the label folder names, sorted.

Every error a file can cause is a ``DataError`` that names the file and the
field, e.g. ``instances.json: field 'annotations[7].image_id': ...``.
"""

from __future__ import annotations

import json
import os
import re
import warnings
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mlic.data.images import IMAGE_SUFFIXES
from mlic.data.manifest import Manifest
from mlic.data.sources import _label_indices, _make_schema, _manifest, _Source, _warn_dropped
from mlic.data.targets import LabelLists
from mlic.errors import DataError
from mlic.schema import UNKNOWN, LabelSchema

JSON_HEAD = 1 << 20
"""Bytes of a ``.json`` file that format detection reads (a COCO file is parsed once, by ``read_coco``)."""
_IGNORED_FOLDERS = ("__MACOSX",)  # left by zip tools; never a label
_ID_KEYS = ("image_id", "category_id")
_ID_TYPES = {int, str}  # of COCO ids; not bool, whose true equals 1, nor float
_DIFFICULT = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False, "": False}


def _error(where: str | Path, field: str | None, message: str) -> DataError:
    """A ``DataError`` in the form every mlic reader uses: ``file: field 'f': message``."""
    return DataError(f"{where}: field {field!r}: {message}" if field else f"{where}: {message}")


def _finish(
    src: _Source, fmt: str, schema, paths: list[str], labels, dropped: Counter, meta: dict
) -> Manifest:
    """The manifest, with all-unknown attributes (none of these formats has any) and one drop warning."""
    attributes = np.full((len(paths), schema.n_attributes), UNKNOWN, dtype=np.int64)
    m = _manifest(src, fmt, schema, paths, labels, attributes, _warn_dropped(src, dropped))
    m.meta.update(meta)
    return m


# -- format detection -------------------------------------------------------------
def json_format(path: str | Path) -> str:
    """``"coco"`` or ``"jsonl"`` for a ``.json`` file, judged from its first ``JSON_HEAD`` bytes.

    A file whose first line is an object with a ``"path"`` is JSON lines. A
    file that fits in the head is parsed and is COCO when its top-level object
    has ``images`` and ``annotations`` or ``categories``; a larger one is COCO
    when it opens with ``{`` and the head holds an ``"images": [`` or
    ``"categories": [`` key, so that a 500 MB file is not parsed twice.
    """
    src = _Source(path, None)
    try:
        with src.path.open("rb") as f:
            head = f.read(JSON_HEAD + 1)
    except FileNotFoundError:
        raise src.error(None, None, "file not found") from None
    except OSError as e:
        raise src.error(None, None, f"cannot read the file: {e.strerror or e}") from None
    whole = len(head) <= JSON_HEAD
    text = head[:JSON_HEAD].decode("utf-8-sig", errors="replace").strip()
    if not text:
        raise src.error(None, None, "the file is empty")
    first, newline, _ = text.partition("\n")
    if newline and isinstance(obj := _loads_or_none(first), dict) and "path" in obj:
        return "jsonl"
    if whole:
        obj = _loads_or_none(text)
        if isinstance(obj, dict) and "images" in obj and ("annotations" in obj or "categories" in obj):
            return "coco"
        if isinstance(obj, dict) and "path" in obj:
            return "jsonl"
    elif text.startswith("{") and re.search(r'"(images|categories)"\s*:\s*\[', text):
        return "coco"
    raise src.error(
        None,
        None,
        "not a COCO file (an object with 'images' and 'annotations' or 'categories') nor JSON lines "
        'of {"path": ...}; pass the format (--format coco or jsonl) if it is one of them',
    )


def _loads_or_none(text: str) -> object:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        return None


def folder_format(path: str | Path) -> str:
    """``"voc"`` for a VOC root (or a folder such as VOCdevkit that holds VOC roots), else ``"folders"``."""
    return "voc" if _voc_roots(Path(path)) else "folders"


def is_voc_image_set(path: str | Path) -> bool:
    """Whether ``path`` is a ``.txt`` list below an ``ImageSets`` folder (``ImageSets/Main/train.txt``)."""
    p = Path(path)
    return p.suffix.lower() == ".txt" and any(part.lower() == "imagesets" for part in p.parts[:-1])


# -- COCO -------------------------------------------------------------------------
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
    src = _Source(path, images_root)
    data = _load_json(src)
    ids, files = _coco_images(src, data)
    names, categories = _coco_categories(src, data)
    rows, cols = _coco_pairs(src, data, {v: i for i, v in enumerate(ids)}, categories, len(names))
    if images_root is None:
        src.root = _coco_images_root(src.path, files[0])
    if schema is None:
        schema = _make_schema(src, names, [])
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
    return _finish(src, "coco", schema, paths, labels, dropped, meta)


def _load_json(src: _Source) -> dict:
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


def _coco_list(src: _Source, data: dict, key: str, what: str) -> list:
    value = data.get(key)
    if not isinstance(value, list):
        got = "nothing" if key not in data else _kind(value)
        raise src.error(None, key, f"must be a list of {what}, got {got}")
    return value


def _coco_id(src: _Source, field: str, value: object) -> int | str:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise src.error(None, field, f"must be an integer or a string, got {value!r}")
    return value


def _coco_entry(src: _Source, field: str, entry: object, key: str) -> object:
    """``entry[key]`` of an entry that must be an object holding ``key``."""
    if not isinstance(entry, dict):
        raise src.error(None, field, f"must be an object, got {_kind(entry)}")
    if key not in entry:
        raise src.error(None, f"{field}.{key}", "missing")
    return entry[key]


def _coco_images(src: _Source, data: dict) -> tuple[list, list[str]]:
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


def _coco_categories(src: _Source, data: dict) -> tuple[list[str], dict]:
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


def _coco_pairs(src: _Source, data: dict, images: dict, categories: dict, n_cat: int):
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


def _bad_annotation(src: _Source, i: int, a: object, images: dict, categories: dict) -> None:
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


# -- Pascal VOC -------------------------------------------------------------------
def read_voc(
    path: str | Path, *, images_root: str | Path | None = None, schema: LabelSchema | None = None
) -> Manifest:
    """Read Pascal VOC: ``Annotations/<id>.xml`` per image, images in ``JPEGImages/``.

    ``path`` is the VOC root (the folder holding ``Annotations/`` and
    ``JPEGImages/``), a folder holding one such root (``VOCdevkit``), or an
    image-set list below the root (``ImageSets/Main/train.txt``; the first
    word of each line is an id, so the per-class lists work too) that
    restricts the images to those listed, in that order. Without a list every
    ``Annotations/*.xml`` is read, in sorted order.

    Labels are the object class names, sorted. A label is 1 when the image
    has an object of it that is not ``difficult``, -1 (unknown) when all its
    objects are difficult, and 0 otherwise. The image is the ``<filename>``
    element (``<id>.jpg`` when absent) in ``images_root``, by default
    ``JPEGImages/``.
    """
    root, items, image_set = _voc_items(Path(path))
    src = _Source(path, images_root if images_root is not None else root / "JPEGImages")
    paths: list[str] = []
    present: list[list[str]] = []
    unknown: list[list[str]] = []
    for stem, xml_path in items:
        filename, objects = _voc_annotation(xml_path)
        paths.append(src.image(None, "filename", filename or f"{stem}.jpg"))
        easy = {name for name, difficult in objects if not difficult}
        present.append(sorted(easy))
        unknown.append(sorted({name for name, _ in objects} - easy))
    if schema is None:
        schema = _make_schema(src, sorted({n for rows in (present, unknown) for ns in rows for n in ns}), [])
    dropped: Counter = Counter()
    positives, unknowns = _label_indices(schema, present, dropped), _label_indices(schema, unknown, dropped)
    labels = LabelLists.from_lists(positives, schema.n_labels, unknown=unknowns)
    meta = {"root": str(root.absolute()), "images_root": src.root}
    if image_set is not None:
        meta["image_set"] = str(image_set)
    return _finish(src, "voc", schema, paths, labels, dropped, meta)


def _voc_roots(path: Path) -> list[Path]:
    """``[path]`` when it is a VOC root; else its subfolders that are (with ``JPEGImages/`` too)."""
    if (path / "Annotations").is_dir():
        return [path]
    try:
        children = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    except OSError:
        return []
    return [c for c in children if (c / "Annotations").is_dir() and (c / "JPEGImages").is_dir()]


def _voc_items(path: Path) -> tuple[Path, list[tuple[str, Path]], Path | None]:
    """The VOC root, the (id, annotation file) of each image to read, and the image-set list if any."""
    if path.is_dir():
        roots = _voc_roots(path)
        if len(roots) != 1:
            found = f"holds several: {[str(r) for r in roots]}; pass one" if roots else "has no Annotations/"
            raise _error(
                path, None, f"not a VOC root (a folder with Annotations/ and JPEGImages/): it {found}"
            )
        folder = roots[0] / "Annotations"
        xmls = sorted(p for p in folder.glob("*.xml") if not p.name.startswith("."))
        if not xmls:
            raise _error(folder, None, "no .xml annotation files")
        return roots[0], [(p.stem, p) for p in xmls], None
    if not path.is_file():
        raise _error(path, None, "no such file or folder")
    root = next((p for p in path.absolute().parents if (p / "Annotations").is_dir()), None)
    if root is None:
        raise _error(path, None, "an image-set list must lie below a VOC root (a folder with Annotations/)")
    return root, _voc_image_set(path, root / "Annotations"), path


def _voc_image_set(path: Path, annotations: Path) -> list[tuple[str, Path]]:
    """(id, annotation file) of each distinct id that the list names; a missing file is an error."""
    src = _Source(path, None)
    items: dict[str, Path] = {}
    for line, text in enumerate(src.lines(), 1):
        words = text.split()
        if not words or words[0] in items:
            continue
        xml_path = annotations / f"{words[0]}.xml"
        if not os.path.isfile(xml_path):
            raise src.error(line, None, f"no annotation file {xml_path} for id {words[0]!r}")
        items[words[0]] = xml_path
    if not items:
        raise src.error(None, None, "the file is empty")
    return list(items.items())


def _voc_annotation(xml_path: Path) -> tuple[str | None, list[tuple[str, bool]]]:
    """The ``<filename>`` of one annotation file and its objects as (class name, difficult)."""
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as e:
        raise _error(f"{xml_path}:{e.position[0]}", None, f"malformed XML: {e}") from None
    except (LookupError, ValueError) as e:  # the declared encoding: unknown, not for text, or multi-byte
        raise _error(xml_path, None, f"malformed XML: cannot decode the declared encoding ({e})") from None
    except OSError as e:
        raise _error(xml_path, None, f"cannot read the file: {e.strerror or e}") from None
    if root.tag != "annotation":
        raise _error(xml_path, None, f"expected an <annotation> root element, got <{root.tag}>")
    objects = []
    for k, obj in enumerate(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise _error(xml_path, f"object[{k}].name", "missing or empty class name")
        flag = (obj.findtext("difficult") or "").strip().lower()
        if flag not in _DIFFICULT:
            raise _error(xml_path, f"object[{k}].difficult", f"expected 0 or 1, got {flag!r}")
        objects.append((name, _DIFFICULT[flag]))
    return (root.findtext("filename") or "").strip() or None, objects


# -- one folder per label -----------------------------------------------------------
def read_folders(path: str | Path, *, schema: LabelSchema | None = None) -> Manifest:
    """Read ``root/<label>/<image>``: each subfolder of ``root`` is a label, its images carry it.

    Images in nested subfolders (``root/<label>/a/b.jpg``) belong to the
    top-level label folder, as in torchvision's ``ImageFolder``. An image is
    known by its path below its label folder (its file name in the flat
    layout): the same name under several label folders is one image that
    carries all of those labels, read from its first occurrence. Images
    directly in ``root`` carry no label. Order: the images in ``root``, then
    the label folders in sorted order, each walked in sorted order, files
    before subfolders. Hidden files and folders, ``__MACOSX`` and files
    without an image suffix are ignored; a label folder without images is a
    label all the same (with a warning).
    """
    root = os.path.abspath(path)
    if not os.path.isdir(root):
        raise _error(path, None, "no such folder")
    src = _Source(path, root)
    rows: dict[str, int] = {}  # image key -> its row
    paths: list[str] = []
    tags: list[list[str]] = []
    folders = _label_folders(root)
    found = Counter()
    walks = [(None, _loose_images(root))]
    walks += [(name, _images_below(os.path.join(root, name), "", set())) for name in folders]
    for name, images in walks:
        for key, full in images:
            if key not in rows:
                rows[key] = len(paths)
                paths.append(full)
                tags.append([])
            if name is not None:
                tags[rows[key]].append(name)
                found[name] += 1
    if not paths:
        raise _error(path, None, f"no image files found (looked for {', '.join(IMAGE_SUFFIXES)})")
    empty = [name for name in folders if not found[name]]
    if empty:
        warnings.warn(f"{path}: label folder(s) without images: {empty}", UserWarning, stacklevel=2)
    if schema is None:
        schema = _make_schema(src, folders, [])
    dropped: Counter = Counter()
    labels = LabelLists.from_lists(_label_indices(schema, tags, dropped), schema.n_labels)
    return _finish(src, "folders", schema, paths, labels, dropped, {})


def _ignored(name: str) -> bool:
    return name.startswith(".") or name in _IGNORED_FOLDERS


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _listing(folder: str) -> list[os.DirEntry]:
    """The folder's entries that are not ignored, sorted by name."""
    try:
        with os.scandir(folder) as it:
            return sorted((e for e in it if not _ignored(e.name)), key=lambda e: e.name)
    except OSError as e:
        raise _error(folder, None, f"cannot list the folder: {e.strerror or e}") from None


def _loose_images(root: str) -> Iterator[tuple[str, str]]:
    """(name, path) of the image files directly in ``root``."""
    for e in _listing(root):
        if _is_image(e.name) and e.is_file():
            yield e.name, e.path


def _label_folders(root: str) -> list[str]:
    return [e.name for e in _listing(root) if e.is_dir()]


def _images_below(folder: str, prefix: str, seen: set) -> Iterator[tuple[str, str]]:
    """(path below the label folder, path) of every image under ``folder``; symlink loops are cut."""
    stat = os.stat(folder)
    if (stat.st_dev, stat.st_ino) in seen:
        return
    seen.add((stat.st_dev, stat.st_ino))
    entries = _listing(folder)
    for e in entries:
        if _is_image(e.name) and e.is_file():
            yield prefix + e.name, e.path
    for e in entries:
        if e.is_dir():
            yield from _images_below(e.path, f"{prefix}{e.name}/", seen)
