"""Data: files in any format -> ``Manifest`` -> image datasets; MultiDigits, the embedded default.

- ``formats``: one module per data format and the registry (``load_data``, ``detect_format``);
- ``manifest``, ``targets``: a data set whatever its format, its labels as per-image lists;
- ``images``: decoding, preprocessing, datasets and the image cache;
- ``describe``, ``file_checks``, ``split``: ``mlic data inspect`` and ``mlic data split``.
"""

from __future__ import annotations

from mlic.data.formats import DEMO, FORMATS, detect_format, load_data, load_source
from mlic.data.formats.demo import multidigits
from mlic.data.manifest import Manifest
from mlic.data.split import stratified_split, write_splits
from mlic.data.targets import LabelLists

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
