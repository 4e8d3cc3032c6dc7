"""Data: sources -> manifest -> image datasets; and MultiDigits, the embedded default."""

from __future__ import annotations

from pathlib import Path

from mlic.data.demo import multidigits
from mlic.data.manifest import Manifest
from mlic.data.sources import FORMATS, detect_format, load_source
from mlic.data.targets import LabelLists
from mlic.errors import DataError
from mlic.schema import LabelSchema

DEMO = "demo"

__all__ = [
    "DEMO",
    "FORMATS",
    "LabelLists",
    "Manifest",
    "detect_format",
    "load_data",
    "load_source",
    "multidigits",
    "stratified_split",
    "write_splits",
]


def load_data(
    data: str | Path,
    *,
    schema: LabelSchema | None = None,
    split: str = "test",
    demo_samples: int | None = None,
    seed: int = 0,
    **source_options: object,
) -> Manifest:
    """A manifest from ``"demo"`` (that MultiDigits ``split``) or a data file in any known format.

    With ``schema`` (a trained model's), targets are laid out for it; labels
    the model lacks are dropped and listed in ``manifest.meta["dropped"]``.
    """
    if str(data) == DEMO:
        manifest = multidigits(split, demo_samples, seed=seed)
    else:
        if not Path(data).exists():
            raise DataError(f"{data}: no such file (use 'demo' for the built-in MultiDigits data)")
        manifest = load_source(data, schema=schema, **source_options)
    return manifest if schema is None else manifest.to_schema(schema)


# after load_data, which this module uses. (``describe`` stays in ``mlic.data.describe``: a
# function of that name here would hide the module of the same name.)
from mlic.data.split import stratified_split, write_splits  # noqa: E402
