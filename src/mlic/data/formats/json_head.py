"""The head of a ``.json`` file, which tells COCO from JSON lines without parsing a large file twice."""

from __future__ import annotations

import json
from pathlib import Path

from mlic.data.formats.source import SourceFile

JSON_HEAD = 1 << 20
"""Bytes of a ``.json`` file that format detection reads (a COCO file is parsed once, by ``read_coco``)."""


def json_head(path: Path, size: int | None = None) -> tuple[str, bool]:
    """The first ``size`` (default ``JSON_HEAD``) bytes as stripped text, and whether they are all of it."""
    size = JSON_HEAD if size is None else size
    src = SourceFile(path, None)
    head = src.head(size + 1)
    text = head[:size].decode("utf-8-sig", errors="replace").strip()
    if not text:
        raise src.error(None, None, "the file is empty")
    return text, len(head) <= size


def loads_or_none(text: str) -> object:
    """``json.loads(text)``, or None for text that is not JSON (or nested too deeply)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        return None


def first_line_is_record(text: str) -> bool:
    """Whether the text has several lines and the first is a JSON object with a ``"path"``."""
    first, newline, _ = text.partition("\n")
    return bool(newline) and isinstance(obj := loads_or_none(first), dict) and "path" in obj


def is_coco_object(obj: object) -> bool:
    """Whether a parsed JSON value is a COCO object: ``images`` and ``annotations`` or ``categories``."""
    return isinstance(obj, dict) and "images" in obj and ("annotations" in obj or "categories" in obj)
