"""Shards: a data set packed for streaming (``mlic data pack``), in a folder or under an ``s3://`` URL.

Layout of a pack at DEST::

    DEST/mlic-shards.json     the schema, the splits, their sizes and label counts (written last)
    DEST/<split>/index.json   litdata's index of the split's chunks
    DEST/<split>/chunk-*.bin  litdata chunks: per image, its encoded bytes (as in the source file, or
                              re-encoded where packed with a maximum side), its index in the split, its
                              label list (indices and values 1 / 0 / -1) and attribute targets
    DEST/<split>/targets.npz  the split's targets and image names at once, for evaluation and validation

Splits are ``train`` and ``val`` when packed with a validation share, else one
split, ``all``. ``DEST/<split>`` names one split wherever data is read.
Training streams the training split (``mlic.data.streaming``); validation and
evaluation read a split as a ``Manifest`` whose images are fetched from the
shards by index (``ShardImages``). A folder or URL is shard data when it holds
``mlic-shards.json``; a pack that stopped before writing it is refused as unfinished.

S3 goes through boto3, configured as boto3 is: credentials and region from the
usual variables or files, an S3-compatible server from ``AWS_ENDPOINT_URL``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlic.data.images.bad_images import log_bad_image
from mlic.data.images.dataset import Decoding
from mlic.data.manifest import Manifest
from mlic.data.targets import LabelLists
from mlic.errors import DataError, SchemaError
from mlic.extras import require
from mlic.schema import LabelSchema

SHARDS_FILE = "mlic-shards.json"
"""The pack's own file at DEST, written after everything else."""
TARGETS_FILE = "targets.npz"
"""Per split: its label lists, attribute targets and image names."""
FORMAT = "mlic-shards"
VERSION = 1
SPLITS = ("train", "val", "all")
"""The split names a pack may hold: ``train`` and ``val``, or ``all``."""


# -- where a pack lives -------------------------------------------------------------------------------
def is_remote(url: str | Path) -> bool:
    """Whether ``url`` names an object store location (``s3://``) rather than a local path."""
    return str(url).startswith("s3://")


def join(base: str | Path, name: str) -> str:
    """``base/name`` for a folder or an ``s3://`` URL."""
    return f"{str(base).rstrip('/')}/{name}" if is_remote(base) else str(Path(base) / name)


def s3_client() -> Any:
    """A boto3 S3 client, configured from the environment (``AWS_ENDPOINT_URL`` for other servers)."""
    require("stream", "reading or writing shards on S3")
    import boto3

    return boto3.client("s3")


def bucket_key(url: str) -> tuple[str, str]:
    """The bucket and key of ``s3://bucket/key``; a URL without a bucket is a ``DataError``."""
    bucket, _, key = str(url)[len("s3://") :].partition("/")
    if not bucket:
        raise DataError(f"{url}: not an S3 location; expected s3://BUCKET/PREFIX")
    return bucket, key.strip("/")


def read_bytes(url: str) -> bytes | None:
    """The bytes of a file or S3 object; None when it does not exist."""
    if not is_remote(url):
        try:
            return Path(url).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = bucket_key(url)
    try:
        return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NoSuchBucket"):
            return None
        raise DataError(f"{url}: cannot read it from S3 ({e})") from None
    except BotoCoreError as e:
        raise DataError(f"{url}: cannot reach S3 ({e})") from None


def is_shards(data: str | Path) -> bool:
    """Whether ``data`` is a pack, or one split of a pack (``DEST/<split>``)."""
    if not is_remote(data) and not Path(data).is_dir():
        return False
    return locate(data) is not None


def locate(data: str | Path) -> tuple[str, str | None] | None:
    """The pack's location and the split ``data`` names (None: the pack itself); None if no pack is there."""
    data = str(data).rstrip("/")
    if read_bytes(join(data, SHARDS_FILE)) is not None:
        return data, None
    parent, _, name = data.rpartition("/")
    if name in SPLITS and parent and read_bytes(join(parent, SHARDS_FILE)) is not None:
        return parent, name
    return None


# -- reading a pack ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class StoredCounts:
    """A split's label counts as the pack recorded them: what the loss and the priors need of its targets.

    Stands in for ``LabelLists`` where only ``counts()`` is read (``pos_weight
    auto``, the selective missing-label policy, the top-k priors), so that
    training from shards never holds a per-image target in memory.
    """

    positive: np.ndarray
    negative: np.ndarray
    unknown: np.ndarray
    n_images: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.n_images, len(self.positive)

    def counts(self) -> dict[str, np.ndarray]:
        return {"positive": self.positive, "negative": self.negative, "unknown": self.unknown}


@dataclass(frozen=True)
class Shards:
    """One split of a pack: where it is, its schema, size and label counts; no image or target is read.

    ``label_lists`` holds the counts only (``StoredCounts``); ``manifest()``
    reads the split's targets for validation and evaluation.
    """

    url: str
    name: str
    schema: LabelSchema
    n_images: int
    label_lists: StoredCounts
    fill: int = 0
    """The label value of labels an item's list leaves out (``LabelLists.fill``)."""

    def __len__(self) -> int:
        return self.n_images

    def manifest(self) -> Manifest:
        """The split as a ``Manifest``: its targets and names read now, its images fetched when decoded."""
        where = join(self.url, TARGETS_FILE)
        raw = read_bytes(where)
        if raw is None:
            raise DataError(f"{where}: missing; the pack is incomplete, pack it again")
        try:
            with np.load(io.BytesIO(raw), allow_pickle=False) as f:
                parts = (f["indptr"], f["indices"], f["values"], int(f["fill"]))
                lists = LabelLists(self.schema.n_labels, *parts)
                attributes, names = f["attributes"], [str(n) for n in f["names"]]
        except (KeyError, ValueError, OSError, SchemaError) as e:
            raise DataError(f"{where}: not a targets file of an mlic pack ({e})") from None
        if len(names) != self.n_images:
            raise DataError(f"{where}: {len(names)} images where {SHARDS_FILE} says {self.n_images}")
        images = ShardImages(self.url, np.arange(self.n_images))
        meta = {"format": FORMAT, "split": self.name}
        return Manifest(self.schema, names, lists, attributes, pixels=images, source=self.url, meta=meta)


@dataclass(frozen=True)
class ShardSet:
    """A pack: its location, schema and splits, from ``mlic-shards.json``."""

    url: str
    schema: LabelSchema
    splits: dict[str, dict]
    info: dict

    @classmethod
    def open(cls, url: str | Path) -> ShardSet:
        """Read the pack at ``url``; a missing or malformed ``mlic-shards.json`` is a ``DataError``."""
        url = str(url).rstrip("/")
        where = join(url, SHARDS_FILE)
        raw = read_bytes(where)
        if raw is None:
            raise DataError(f"{where}: not found; not a pack of mlic data (or its packing did not finish)")
        try:
            info = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"{where}: not valid JSON ({e})") from None
        if not isinstance(info, dict) or info.get("format") != FORMAT:
            raise DataError(f"{where}: field 'format': expected {FORMAT!r}")
        if info.get("version") != VERSION:
            raise DataError(f"{where}: field 'version': {info.get('version')!r}; this mlic reads {VERSION}")
        try:
            schema = LabelSchema.from_dict(info["schema"])
        except (KeyError, SchemaError) as e:
            raise DataError(f"{where}: field 'schema': {e}") from None
        splits = info.get("splits")
        if not isinstance(splits, dict) or not splits or not set(splits) <= set(SPLITS):
            raise DataError(f"{where}: field 'splits': expected some of {list(SPLITS)}, got {splits!r}")
        return cls(url, schema, splits, info)

    def split(self, name: str) -> Shards:
        """Split ``name``; one the pack lacks is a ``DataError`` that lists those it has."""
        if name not in self.splits:
            raise DataError(f"{self.url}: no split {name!r}; this pack holds {list(self.splits)}")
        entry, where = self.splits[name], f"{join(self.url, SHARDS_FILE)}: field 'splits.{name}'"
        try:
            n, lengths, fill = int(entry["images"]), self.schema.n_labels, int(entry["fill"])
            counts = {k: np.asarray(entry[k], dtype=np.int64) for k in ("positive", "negative", "unknown")}
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{where}: {e!r}") from None
        if any(c.shape != (lengths,) for c in counts.values()):
            raise DataError(f"{where}: label counts must have one entry per label ({lengths})")
        stored = StoredCounts(**counts, n_images=n)
        return Shards(join(self.url, name), name, self.schema, n, stored, fill)

    def only_split(self) -> Shards:
        """The pack's one split; a pack with several is a ``DataError`` that says how to name one."""
        if len(self.splits) != 1:
            names = ", ".join(join(self.url, s) for s in self.splits)
            raise DataError(f"{self.url}: this pack holds the splits {list(self.splits)}; name one: {names}")
        return self.split(next(iter(self.splits)))


def open_split(data: str | Path) -> Shards:
    """The split that ``data`` names: ``DEST/<split>``, or DEST when the pack holds one split."""
    found = locate(data)
    if found is None:
        raise DataError(
            f"{data}: no {SHARDS_FILE} here; not a pack of mlic data, or its packing did not finish "
            "(see mlic data pack)"
        )
    base, name = found
    shards = ShardSet.open(base)
    return shards.only_split() if name is None else shards.split(name)


def load_shards(data: str | Path, schema: LabelSchema | None = None) -> Manifest:
    """A split of a pack (``open_split``) as a ``Manifest``, laid out for ``schema`` where given."""
    manifest = open_split(data).manifest()
    return manifest if schema is None else manifest.to_schema(schema)


class ShardImages(Sequence):
    """The encoded images of a split, by row, as binary streams that ``decode_image`` reads.

    Stands as a ``Manifest``'s ``pixels``: rows are fetched from the shards
    when decoded, in any process (loader workers open the shards themselves).
    ``rows`` maps this sequence's positions to indices in the split (a subset).
    """

    def __init__(self, url: str, rows: np.ndarray) -> None:
        require("stream", "reading shards")
        from mlic.data.streaming import ItemReader

        self.url, self.rows = url, np.asarray(rows, dtype=np.int64)
        self.reader = ItemReader(url)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, int | np.integer):
            return io.BytesIO(bytes(self.reader[int(self.rows[index])]["image"]))
        return ShardImages(self.url, self.rows[np.asarray(index)])


# -- streamed training samples --------------------------------------------------------------------------
class StreamedSample:
    """A streamed item as an ``ImageDataset`` sample: ``(image, (label indices, values), attributes)``.

    The image is decoded by ``decoding`` and transformed by
    ``transform(image, epoch, index)`` (the caller seeds the augmentation from
    those); an unreadable image is None under ``bad_images="skip"``, listed in
    the bad-image log as ``SPLIT#INDEX``.
    """

    def __init__(self, url: str, decoding: Decoding, transform: Any) -> None:
        self.url, self.decoding, self.transform = url, decoding, transform

    def __call__(self, item: dict, epoch: int) -> tuple | None:
        index = int(item["index"])
        try:
            image = self.decoding.decode(io.BytesIO(bytes(item["image"])))
        except DataError as e:
            if self.decoding.bad_images == "fail":
                raise DataError(f"{self.url}#{index}: {e}") from None
            log_bad_image(self.decoding.bad_log, f"{self.url}#{index}", str(e))
            return None
        labels = (torch.from_numpy(np.asarray(item["labels"])), torch.from_numpy(np.asarray(item["values"])))
        return self.transform(image, epoch, index), labels, torch.from_numpy(np.asarray(item["attributes"]))
