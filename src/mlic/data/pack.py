"""``mlic data pack``: any data mlic reads, written as shards for streaming (layout in ``mlic.data.shards``).

The source is read as every command reads it (``load_data``; MultiDigits'
train and validation canvases for ``demo``), optionally split into train and
validation by the same stratification as training's ``--val-fraction``, and
each split written as litdata chunks plus its targets. Image bytes are copied
as they are, unless ``max_side`` asks for smaller images: then larger ones
are decoded, scaled to that longer side and re-encoded (JPEG stays JPEG,
anything else becomes PNG).

A local pack is written to a temporary folder beside DEST and renamed into
place at the end; an S3 pack uploads each chunk as it is complete and
``mlic-shards.json`` last, so that a pack that stopped half-way is not taken
for data (``mlic.data.shards.locate``).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from mlic.data.formats import DEMO, load_data
from mlic.data.images import decode_image
from mlic.data.manifest import Manifest, check_files
from mlic.data.shards import (
    FORMAT,
    SHARDS_FILE,
    TARGETS_FILE,
    VERSION,
    bucket_key,
    is_remote,
    join,
    s3_client,
)
from mlic.data.split import stratified_split
from mlic.errors import ConfigError, DataError
from mlic.extras import require

CHUNK_BYTES = 64 * 2**20
"""Bytes of encoded images per litdata chunk: what a loader worker fetches and holds at a time."""
JPEG_QUALITY = 90
"""Quality of images re-encoded as JPEG when packed with a maximum side."""


def pack(
    data: str | Path,
    out: str | Path,
    *,
    max_side: int | None = None,
    val_fraction: float = 0.0,
    seed: int = 0,
    demo_train: int = 10_000,
    demo_val: int = 1_000,
    chunk_bytes: int = CHUNK_BYTES,
    overwrite: bool = False,
    **source_options: object,
) -> dict:
    """Pack ``data`` (any format, or ``"demo"``) as shards at ``out`` (a folder or ``s3://`` URL).

    ``val_fraction`` > 0 writes splits ``train`` and ``val`` (stratified,
    seeded); otherwise one split, ``all`` (MultiDigits always has its
    ``train`` and ``val``). Returns what ``mlic-shards.json`` says.
    """
    require("stream", "mlic data pack")
    if max_side is not None and max_side < 1:
        raise ConfigError(f"max_side must be a positive number of pixels, got {max_side}")
    splits = source_splits(data, val_fraction, seed, demo_train, demo_val, source_options)
    with destination(out, overwrite) as dest:
        entries = {name: write_split(dest, name, m, max_side, chunk_bytes) for name, m in splits.items()}
        schema = next(iter(splits.values())).schema
        info = {"format": FORMAT, "version": VERSION, "mlic": mlic_version(), "source": str(data),
                "schema": schema.to_dict(), "max_side": max_side, "splits": entries}  # fmt: skip
        dest.put_bytes(SHARDS_FILE, (json.dumps(info, indent=1) + "\n").encode())
    return info


def source_splits(
    data: str | Path, val_fraction: float, seed: int, demo_train: int, demo_val: int, source_options: dict
) -> dict[str, Manifest]:
    """The manifests to write, by split name."""
    if str(data) == DEMO:
        return {
            "train": load_data(DEMO, split="train", demo_samples=demo_train, seed=seed),
            "val": load_data(DEMO, split="val", demo_samples=demo_val, seed=seed),
        }
    manifest = load_data(data, **source_options)
    check_files(manifest)
    if not val_fraction:
        return {"all": manifest}
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    parts = stratified_split(manifest, {"train": 1.0 - val_fraction, "val": val_fraction}, seed)
    return {"train": parts["train"], "val": parts["val"]}


def write_split(
    dest: Destination, name: str, manifest: Manifest, max_side: int | None, chunk_bytes: int
) -> dict:
    """Write one split's chunks and targets; its entry in ``mlic-shards.json`` (size and label counts)."""
    from mlic.data.streaming import write_items

    folder = dest.folder(name)
    n = write_items(folder, items(manifest, max_side), chunk_bytes=chunk_bytes,
                    on_chunk=lambda path: dest.put_file(name, path))  # fmt: skip
    lists = manifest.label_lists
    targets = io.BytesIO()
    np.savez(targets, indptr=lists.indptr, indices=lists.indices, values=lists.values, fill=lists.fill,
             attributes=manifest.attributes, names=np.array(manifest.paths, dtype=str))  # fmt: skip
    dest.put_bytes(f"{name}/{TARGETS_FILE}", targets.getvalue())
    counts = lists.counts()
    kinds = ("positive", "negative", "unknown")
    return {"images": n, "fill": lists.fill, **{k: counts[k].tolist() for k in kinds}}


def items(manifest: Manifest, max_side: int | None) -> Iterator[dict]:
    """Each image of ``manifest`` as a shard item: its index, encoded bytes and targets."""
    lists = manifest.label_lists
    for i in range(len(manifest)):
        indices, values = lists.row(i)
        yield {
            "index": i,
            "image": image_bytes(manifest, i, max_side),
            "labels": np.asarray(indices, dtype=np.int32),
            "values": np.asarray(values, dtype=np.int8),
            "attributes": np.asarray(manifest.attributes[i], dtype=np.int64),
        }


def image_bytes(manifest: Manifest, i: int, max_side: int | None) -> bytes:
    """Image ``i`` encoded: the file's bytes as they are, or smaller when over ``max_side``."""
    if manifest.pixels is not None:  # MultiDigits: pixels in memory, stored as PNG
        return encode(Image.fromarray(np.asarray(manifest.pixels[i])), "PNG", max_side)
    path = manifest.paths[i]
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read the image ({e.strerror or e})") from None
    if max_side is None:
        return raw
    with Image.open(io.BytesIO(raw)) as im:
        if max(im.size) <= max_side:
            return raw
        kind = "JPEG" if im.format == "JPEG" else "PNG"
    pixels = decode_image(io.BytesIO(raw), name=path)  # as displayed: EXIF orientation, RGB
    return encode(Image.fromarray(pixels.permute(1, 2, 0).numpy()), kind, max_side)


def encode(image: Image.Image, kind: str, max_side: int | None) -> bytes:
    """``image`` as ``kind`` (PNG or JPEG) bytes, scaled down to ``max_side`` where it is larger."""
    if max_side is not None and max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, kind, **({"quality": JPEG_QUALITY} if kind == "JPEG" else {}))
    return buffer.getvalue()


def mlic_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mlic")
    except PackageNotFoundError:
        return "unknown"


# -- destinations --------------------------------------------------------------------------------------
class Destination:
    """Where a pack is written: files staged in a local folder, then kept (local) or uploaded (S3)."""

    def __init__(self, out: str, staging: Path) -> None:
        self.out, self.staging = out, staging

    def folder(self, split: str) -> str:
        path = self.staging / split
        path.mkdir(parents=True, exist_ok=True)
        return str(path)

    def put_file(self, split: str, path: str) -> None:
        """A finished file of ``split`` (already in its staging folder)."""

    def put_bytes(self, name: str, data: bytes) -> None:
        path = self.staging / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def __enter__(self) -> Destination:
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


class FolderDestination(Destination):
    """A local pack: written in a hidden folder beside ``out``, renamed to ``out`` when complete."""

    def __init__(self, out: str, overwrite: bool) -> None:
        target = Path(out)
        if target.exists() and not overwrite:
            raise ConfigError(f"{out}: exists; choose another --out or pass --overwrite")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.packing-", dir=target.parent))
        super().__init__(out, staging)
        self.overwrite = overwrite

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            target = Path(self.out)
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            os.replace(self.staging, target)
        super().__exit__(exc_type, *exc)


class S3Destination(Destination):
    """An S3 pack: each file uploaded as soon as it is complete, then removed from the staging folder."""

    def __init__(self, out: str, overwrite: bool) -> None:
        super().__init__(out, Path(tempfile.mkdtemp(prefix="mlic-pack-")))
        self.client = s3_client()
        self.bucket, self.prefix = bucket_key(out)
        from mlic.data.shards import read_bytes

        if not overwrite and read_bytes(join(out, SHARDS_FILE)) is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            raise ConfigError(f"{out}: holds a pack already; choose another --out or pass --overwrite")

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def put_file(self, split: str, path: str) -> None:
        name = f"{split}/{os.path.basename(path)}"
        self.upload(name, lambda: self.client.upload_file(path, self.bucket, self.key(name)))
        os.remove(path)

    def put_bytes(self, name: str, data: bytes) -> None:
        self.upload(name, lambda: self.client.put_object(Bucket=self.bucket, Key=self.key(name), Body=data))

    def upload(self, name: str, call) -> None:
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            call()
        except (ClientError, BotoCoreError, S3UploadFailedError) as e:
            raise DataError(f"{join(self.out, name)}: cannot write it to S3 ({e})") from None


def destination(out: str | Path, overwrite: bool) -> Destination:
    """The destination of a pack at ``out``: ``s3://`` or a local folder."""
    if is_remote(out):
        return S3Destination(str(out), overwrite)
    return FolderDestination(str(out), overwrite)
