"""One folder per label: ``ROOT/<label>/<image>``; labels are the folder names, sorted."""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Iterator
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
from mlic.data.formats.voc import voc_roots
from mlic.data.images.decode import IMAGE_SUFFIXES
from mlic.data.manifest import Manifest
from mlic.data.targets import LabelLists
from mlic.schema import LabelSchema

NAME = "folders"
_IGNORED_FOLDERS = ("__MACOSX",)  # left by zip tools; never a label


def detect(path: Path) -> bool:
    """Any folder that is not a VOC root (nor holds one)."""
    return path.is_dir() and not voc_roots(path)


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
        raise data_error(path, None, "no such folder")
    src = SourceFile(path, root)
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
        raise data_error(path, None, f"no image files found (looked for {', '.join(IMAGE_SUFFIXES)})")
    empty = [name for name in folders if not found[name]]
    if empty:
        warnings.warn(f"{path}: label folder(s) without images: {empty}", UserWarning, stacklevel=2)
    if schema is None:
        schema = make_schema(src, folders, [])
    dropped: Counter = Counter()
    labels = LabelLists.from_lists(label_indices(schema, tags, dropped), schema.n_labels)
    return build_manifest(src, NAME, schema, paths, labels, no_attributes(len(paths), schema), dropped)


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
        raise data_error(folder, None, f"cannot list the folder: {e.strerror or e}") from None


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


FORMAT = Format(NAME, detect, read_folders, options=(), looks_like="a folder of label folders")
