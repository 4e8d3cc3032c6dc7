"""Pascal VOC: ``Annotations/<id>.xml`` per image, images in ``JPEGImages/``.

Labels are the object class names, sorted. A label is 1 when the image has an
object of it that is not ``difficult``, -1 (unknown) when all its objects are
difficult, and 0 otherwise.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from mlic.data.formats.source import (
    SourceFile,
    build_manifest,
    data_error,
    label_indices,
    make_schema,
    no_attributes,
)
from mlic.data.formats.spec import Format
from mlic.data.manifest import Manifest
from mlic.data.targets import LabelLists
from mlic.schema import LabelSchema

NAME = "voc"
_DIFFICULT = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False, "": False}


def detect(path: Path) -> bool:
    """A VOC root (or a folder such as VOCdevkit that holds one), or an image-set list below one."""
    return bool(voc_roots(path)) if path.is_dir() else is_voc_image_set(path)


def is_voc_image_set(path: str | Path) -> bool:
    """Whether ``path`` is a ``.txt`` list below an ``ImageSets`` folder (``ImageSets/Main/train.txt``)."""
    p = Path(path)
    return p.suffix.lower() == ".txt" and any(part.lower() == "imagesets" for part in p.parts[:-1])


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
    src = SourceFile(path, images_root if images_root is not None else root / "JPEGImages")
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
        schema = make_schema(src, sorted({n for rows in (present, unknown) for ns in rows for n in ns}), [])
    dropped: Counter = Counter()
    positives, unknowns = label_indices(schema, present, dropped), label_indices(schema, unknown, dropped)
    labels = LabelLists.from_lists(positives, schema.n_labels, unknown=unknowns)
    meta = {"root": str(root.absolute()), "images_root": src.root}
    if image_set is not None:
        meta["image_set"] = str(image_set)
    return build_manifest(src, NAME, schema, paths, labels, no_attributes(len(paths), schema), dropped, meta)


def voc_roots(path: Path) -> list[Path]:
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
        roots = voc_roots(path)
        if len(roots) != 1:
            found = f"holds several: {[str(r) for r in roots]}; pass one" if roots else "has no Annotations/"
            raise data_error(
                path, None, f"not a VOC root (a folder with Annotations/ and JPEGImages/): it {found}"
            )
        folder = roots[0] / "Annotations"
        xmls = sorted(p for p in folder.glob("*.xml") if not p.name.startswith("."))
        if not xmls:
            raise data_error(folder, None, "no .xml annotation files")
        return roots[0], [(p.stem, p) for p in xmls], None
    if not path.is_file():
        raise data_error(path, None, "no such file or folder")
    root = next((p for p in path.absolute().parents if (p / "Annotations").is_dir()), None)
    if root is None:
        raise data_error(
            path, None, "an image-set list must lie below a VOC root (a folder with Annotations/)"
        )
    return root, _voc_image_set(path, root / "Annotations"), path


def _voc_image_set(path: Path, annotations: Path) -> list[tuple[str, Path]]:
    """(id, annotation file) of each distinct id that the list names; a missing file is an error."""
    src = SourceFile(path, None)
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
        raise data_error(f"{xml_path}:{e.position[0]}", None, f"malformed XML: {e}") from None
    except (LookupError, ValueError) as e:  # the declared encoding: unknown, not for text, or multi-byte
        raise data_error(
            xml_path, None, f"malformed XML: cannot decode the declared encoding ({e})"
        ) from None
    except OSError as e:
        raise data_error(xml_path, None, f"cannot read the file: {e.strerror or e}") from None
    if root.tag != "annotation":
        raise data_error(xml_path, None, f"expected an <annotation> root element, got <{root.tag}>")
    objects = []
    for k, obj in enumerate(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise data_error(xml_path, f"object[{k}].name", "missing or empty class name")
        flag = (obj.findtext("difficult") or "").strip().lower()
        if flag not in _DIFFICULT:
            raise data_error(xml_path, f"object[{k}].difficult", f"expected 0 or 1, got {flag!r}")
        objects.append((name, _DIFFICULT[flag]))
    return (root.findtext("filename") or "").strip() or None, objects


FORMAT = Format(
    NAME,
    detect,
    read_voc,
    options=("images_root",),
    suffixes=(".txt",),
    looks_like="a VOC image-set list (below ImageSets/)",
)
