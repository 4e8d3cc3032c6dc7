"""``Format``: what the registry knows of one data format, declared by the format's own module."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlic.data.manifest import Manifest


@dataclass(frozen=True)
class Format:
    """One data format: its name, how to recognise it, how to read it (and write it, where mlic does).

    ``detect(path)`` says whether ``path`` is in this format (it may read the
    file's first bytes; an unreadable file is a ``DataError``). ``read(path,
    *, schema=None, **options)`` returns a ``Manifest``; ``options`` names the
    keyword options it takes besides ``schema``. ``suffixes`` are the file
    endings it is found under (none for a folder), for the message when no
    format recognises a file; ``looks_like`` says what such a file holds.
    """

    name: str
    detect: Callable[[Path], bool]
    read: Callable[..., Manifest]
    options: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()
    looks_like: str = ""
    write: Callable[..., object] | None = None
