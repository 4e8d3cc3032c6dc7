"""Label maps drawn and written: what ``mlic explain`` does, and the PNGs the server returns.

``Predictor.explain`` (``mlic.predict``) computes the maps; this module picks
which to draw for each image (its decided labels and each attribute's most
probable class, plus any named), draws them over the image
(``mlic.overlays``) and writes them as PNG files, or encodes them for the
HTTP API.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from mlic.data.images import ImageInput
from mlic.errors import ConfigError
from mlic.fileio import atomic_write_bytes, atomic_write_text
from mlic.overlays import overlay, png_bytes
from mlic.predict import LabelMaps, Predictor

MAX_SIDE = 1024
"""The longest side of the overlays ``mlic explain`` writes (larger images are shrunk)."""
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


def drawn(
    predictor: Predictor,
    images: Sequence[ImageInput],
    labels: Iterable[str] = (),
    *,
    every: bool = False,
    method: str | None = None,
    max_side: int | None = None,
) -> tuple[LabelMaps, list[dict[str, np.ndarray]]]:
    """The maps of ``images`` and, per image, ``{output name: overlay uint8 [H, W, 3]}``.

    Drawn for each image: its decided labels, each attribute's most probable
    class, and the outputs ``labels`` names (labels, ``attribute=class`` or an
    attribute for all its classes); with ``every``, every output.
    """
    labels = list(labels)
    names = predictor.output_columns(labels)[0]  # checks the names before any image is read
    maps = predictor.explain(images, None, method=method, max_side=max_side)
    out = []
    for i, m in enumerate(maps.maps):
        if m is None:
            out.append({})
            continue
        chosen = maps.names if every else maps.shown(i, predictor.schema, names)
        index = {name: j for j, name in enumerate(maps.names)}
        out.append({name: overlay(maps.images[i], m[index[name]]) for name in chosen})
    return maps, out


def explain_to_folder(
    predictor: Predictor,
    images: Sequence[ImageInput],
    out: str | Path,
    labels: Iterable[str] = (),
    *,
    every: bool = False,
    method: str | None = None,
    max_side: int | None = MAX_SIDE,
) -> Iterator[dict]:
    """Write each image's overlays as ``OUT/<n>_<name>/<output>.png``; yield one record per image.

    Images go through ``Predictor.explain`` ``predictor.batch_size`` at a time.
    A record is ``{"path", "labels" (decided), "method", "folder", "maps":
    {output name: file}}``, or ``{"path", "error"}`` for an image skipped as
    unreadable. Each folder also gets ``maps.json`` (the record). Overlays are
    drawn at the image's size, shrunk to ``max_side`` pixels on the longest side
    (None: never). Files are written atomically; existing ones are replaced.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder; give a folder for the maps")
    images, labels = list(images), list(labels)
    step = max(1, predictor.batch_size)
    for start in range(0, len(images), step):
        chunk = images[start : start + step]
        maps, pictures = drawn(predictor, chunk, labels, every=every, method=method, max_side=max_side)
        for offset, (image, picture) in enumerate(zip(chunk, pictures)):
            i = start + offset
            path = str(image) if isinstance(image, str | Path) else None
            if maps.errors[offset] is not None:
                yield {"path": path, "error": maps.errors[offset]}
                continue
            stem = Path(path).stem if path else "image"
            folder = out / f"{i:04d}_{_safe(stem)}"
            folder.mkdir(parents=True, exist_ok=True)
            files: dict[str, str] = {}
            for name, pixels in picture.items():
                file = folder / _unique(f"{_safe(name)}.png", files.values())
                atomic_write_bytes(file, png_bytes(pixels))
                files[name] = str(file)
            decided = [predictor.schema.labels[j] for j in np.flatnonzero(maps.decided[offset])]
            record = {"path": path, "labels": decided, "method": maps.method, "folder": str(folder),
                      "maps": files}  # fmt: skip
            atomic_write_text(folder / "maps.json", json.dumps(record, indent=2) + "\n")
            yield record


def encoded(pictures: dict[str, np.ndarray], max_side: int) -> dict[str, str]:
    """Overlays as ``data:image/png;base64,...`` URLs, at most ``max_side`` pixels on their longest side."""
    return {
        name: "data:image/png;base64," + base64.b64encode(png_bytes(pixels, max_side)).decode("ascii")
        for name, pixels in pictures.items()
    }


def _safe(name: str) -> str:
    return _UNSAFE.sub("_", name).strip("._")[:100] or "output"


def _unique(file: str, taken: Iterable[str]) -> str:
    names = {Path(t).name for t in taken}
    stem, n = file.removesuffix(".png"), 1
    while file in names:
        n += 1
        file = f"{stem}_{n}.png"
    return file
