"""CSV plumbing shared by the two CSV formats: records with line numbers, the header, named columns."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from mlic.data.formats.source import SourceFile

CSV_SUFFIXES = (".csv", ".tsv", ".txt")
PATH_COLUMNS = ("path", "image", "image_path", "image_name", "file", "filename", "file_name", "img")
TAGS_COLUMNS = ("tags", "labels", "label", "classes", "categories")


def is_csv(path: Path) -> bool:
    """Whether ``path`` has a CSV ending (``.csv``, ``.tsv``, ``.txt``)."""
    return path.suffix.lower() in CSV_SUFFIXES


def has_tags_column(path: Path) -> bool:
    """Whether the CSV's header names a tags column (one of ``TAGS_COLUMNS``, any case)."""
    return any(h.lower() in TAGS_COLUMNS for h in first_row(path))


def first_row(path: Path) -> list[str]:
    """The header of a CSV file, stripped."""
    src = SourceFile(path, None)
    return header(src, csv_rows(src))


def _delimiter(path: Path) -> str:
    return "\t" if path.suffix.lower() == ".tsv" else ","


def csv_rows(src: SourceFile) -> Iterator[tuple[int, list[str]]]:
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


def header(src: SourceFile, rows: Iterator[tuple[int, list[str]]]) -> list[str]:
    """The first record, stripped; its line is where header errors point."""
    first = next(rows, None)
    if first is None:
        raise src.error(None, None, "the file is empty")
    src.header_line = first[0]
    return [h.strip() for h in first[1]]


def find_column(src: SourceFile, header: list[str], given: str | None, names: tuple, what: str) -> int:
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


def check_width(src: SourceFile, line: int, row: list[str], header: list[str]) -> None:
    """A record must have as many fields as the header."""
    if len(row) != len(header):
        raise src.error(line, None, f"{len(row)} fields, but the header has {len(header)}: {header}")
