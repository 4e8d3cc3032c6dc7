"""Data formats: one module per format, and the registry that detects and reads them all.

Each format module (``csv_tags``, ``csv_multihot``, ``jsonl``, ``coco``,
``voc``, ``folders``, ``demo``) holds its detection, its reader (and its
writer where mlic writes the format) and declares them in a ``FORMAT``
(:class:`~mlic.data.formats.spec.Format`). ``REGISTRY`` lists them; adding a
format is a module and a line here. ``load_data`` and ``detect_format`` go
through the registry only.

Every reader resolves image paths, infers a schema (or maps the data onto a
given one) and builds label targets as per-image lists, so that 100,000 rows
of 1,000 labels load in seconds. Every error a file can cause is a
``DataError`` that names the file, the line and the field.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from mlic.data.formats import coco, csv_multihot, csv_tags, demo, folders, jsonl, voc
from mlic.data.formats.csv_table import is_csv
from mlic.data.formats.spec import Format
from mlic.data.manifest import Manifest
from mlic.data.shards import is_remote, is_shards, load_shards
from mlic.errors import ConfigError, DataError
from mlic.schema import LabelSchema

REGISTRY: tuple[Format, ...] = (
    demo.FORMAT,
    voc.FORMAT,  # before the CSVs: an image-set list is a .txt file
    folders.FORMAT,
    coco.FORMAT,
    jsonl.FORMAT,
    csv_tags.FORMAT,
    csv_multihot.FORMAT,
)
"""Every format, in the order detection tries them; the first that recognises a path reads it."""
FORMATS: dict[str, Format] = {f.name: f for f in REGISTRY}
"""The formats by name (what ``--format`` takes)."""
DEMO = demo.DEMO


def detect_format(path: str | Path) -> str:
    """The name of the format of a data file or folder, from its suffix and, where needed, its first bytes.

    A folder is VOC when it holds ``Annotations/`` (or is a VOCdevkit holding
    one VOC root), else one folder per label; a ``.txt`` below ``ImageSets/``
    is a VOC image-set list; a ``.json`` is COCO or JSON lines, judged from its
    head; a CSV is a tags CSV when its header names a tags column.
    """
    p = Path(path)
    for fmt in REGISTRY:
        if fmt.detect(p):
            return fmt.name
    suffix = p.suffix.lower()
    candidates = [f for f in REGISTRY if suffix and suffix in f.suffixes]
    if candidates:
        names = " or ".join(f.name for f in candidates)
        shapes = " nor ".join(f.looks_like for f in candidates)
        raise DataError(f"{path}: not {shapes}; pass the format (--format {names}) if it is one of them")
    suffixes = list(dict.fromkeys(s for f in REGISTRY for s in f.suffixes))
    raise DataError(
        f"{path}: cannot tell the format from the suffix {suffix or '(none)'!r}; expected a folder or one of "
        f"{suffixes}, or pass the format, one of {list(FORMATS)}"
    )


def check_format(name: str) -> Format:
    """The registered format called ``name``; an unknown name lists the formats and the closest one."""
    if name in FORMATS:
        return FORMATS[name]
    close = difflib.get_close_matches(str(name), FORMATS, n=1, cutoff=0.4)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown data format {name!r}; expected one of {list(FORMATS)}{hint}")


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

    Each format takes the options that apply to it (``Format.options``) and
    ignores the others, except two that would silently change nothing:
    ``drop_unannotated`` applies to COCO only, and an images root does not
    apply to formats that find their images themselves (folders).
    """
    if format is not None:
        fmt = check_format(format)
    elif tags_column is not None and is_csv(Path(path)):
        fmt = csv_tags.FORMAT
    else:
        fmt = FORMATS[detect_format(path)]
    if drop_unannotated and "drop_unannotated" not in fmt.options:
        raise ConfigError(f"{path}: dropping unannotated images applies to COCO data only, not to {fmt.name}")
    if images_root is not None and "images_root" not in fmt.options:
        raise ConfigError(f"{path}: an images root does not apply to {fmt.name} data (it finds its images)")
    given = {"images_root": images_root, "tag_separator": tag_separator, "path_column": path_column,
             "tags_column": tags_column, "drop_unannotated": drop_unannotated}  # fmt: skip
    return fmt.read(path, schema=schema, **{k: v for k, v in given.items() if k in fmt.options})


def load_data(
    data: str | Path,
    *,
    schema: LabelSchema | None = None,
    split: str = "test",
    demo_samples: int | None = None,
    seed: int = 0,
    **source_options: object,
) -> Manifest:
    """A manifest from ``"demo"`` (that MultiDigits ``split``), a data file in any known format, or shards.

    Shards (``mlic data pack``; a folder or ``s3://`` URL) are read as one of
    their splits, ``DEST/<split>`` or the pack's only one, with images fetched
    when decoded (``mlic.data.shards``). With ``schema`` (a trained model's),
    targets are laid out for it; labels the model lacks are dropped and listed
    in ``manifest.meta["dropped"]``.
    """
    if str(data) == DEMO:
        manifest = demo.FORMAT.read(data, split=split, n=demo_samples, seed=seed)
    elif is_remote(data) or is_shards(data):
        manifest = load_shards(data)
    else:
        if not Path(data).exists():
            raise DataError(f"{data}: no such file (use 'demo' for the built-in MultiDigits data)")
        manifest = load_source(data, schema=schema, **source_options)
    return manifest if schema is None else manifest.to_schema(schema)


__all__ = [
    "DEMO",
    "FORMATS",
    "REGISTRY",
    "Format",
    "check_format",
    "detect_format",
    "load_data",
    "load_source",
]
