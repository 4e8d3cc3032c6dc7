"""The list of unreadable images that training skipped (``RUN/bad_images.txt``).

Worker processes append ``path<TAB>reason`` lines as they meet an image, one
``O_APPEND`` write per line, so that lines of many processes never mix;
``tidy_bad_images`` then removes the repeats.
"""

from __future__ import annotations

import os
from pathlib import Path

from mlic.fileio import atomic_write_text

BAD_IMAGES = ("skip", "fail")
"""What to do with an unreadable image: skip it (and list it), or stop at it."""


def log_bad_image(log: str | Path | None, path: str, message: str) -> None:
    """Append ``path<TAB>reason`` to ``log`` in one ``O_APPEND`` write: lines of many processes never mix."""
    if log is None:
        return
    reason = message.removeprefix(f"{path}: ")
    line = f"{_one_line(path)}\t{_one_line(reason)}\n".encode()
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _one_line(text: str) -> str:
    return " ".join(text.replace("\t", " ").splitlines())


def read_bad_images(log: str | Path) -> dict[str, str]:
    """The images listed in a bad-images file: path -> reason (the first, for a path listed twice)."""
    if not Path(log).is_file():
        return {}
    found: dict[str, str] = {}
    for line in Path(log).read_text(encoding="utf-8").splitlines():
        path, _, reason = line.partition("\t")
        if path:
            found.setdefault(path, reason)
    return found


def tidy_bad_images(log: str | Path) -> dict[str, str]:
    """Rewrite a bad-images file with each path once, sorted, and return its entries.

    Worker processes append as they meet an image, so an image can be listed
    once per worker and per epoch until this runs.
    """
    found = read_bad_images(log)
    if found:
        atomic_write_text(log, "".join(f"{p}\t{found[p]}\n" for p in sorted(found)))
    return found
