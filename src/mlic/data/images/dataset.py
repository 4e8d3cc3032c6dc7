"""Datasets of decoded images: training samples with their targets, and plain inputs to predict on.

Both decode through ``decode_image`` and follow one ``Decoding``: the
reduced-scale decode size, the pixel limit, and whether an unreadable image
stops the run (``fail``) or is skipped (``skip``; training lists it in
``bad_images.txt``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset, default_collate
from torchvision.transforms import v2

from mlic.data.images.bad_images import BAD_IMAGES, log_bad_image
from mlic.data.images.cache import ImageCache
from mlic.data.images.decode import MAX_IMAGE_PIXELS, ImageInput, decode_image
from mlic.data.manifest import Manifest
from mlic.errors import ConfigError, DataError


@dataclass(frozen=True)
class Decoding:
    """How datasets read image files, and what they do with those they cannot read.

    - ``min_side``: decode JPEGs at reduced scale down to this shorter side
      (``decode_size``); None: at full size.
    - ``max_pixels``: refuse larger images (decompression-bomb guard); None: no limit.
    - ``bad_images``: ``fail`` raises the first ``DataError``; ``skip`` drops the
      sample and, with ``bad_log``, appends ``path<TAB>reason`` to that file
      (``mlic.data.images.bad_images``).
    """

    min_side: int | None = None
    max_pixels: int | None = MAX_IMAGE_PIXELS
    bad_images: str = "fail"
    bad_log: str | None = None

    def __post_init__(self) -> None:
        if self.bad_images not in BAD_IMAGES:
            raise ConfigError(f"bad_images must be one of {list(BAD_IMAGES)}, not {self.bad_images!r}")

    def decode(self, image: ImageInput) -> torch.Tensor:
        """``decode_image`` at this decode size and pixel limit."""
        return decode_image(image, min_side=self.min_side, max_pixels=self.max_pixels)


def manifest_images(manifest: Manifest) -> Sequence[ImageInput]:
    """What to decode for each image of a manifest: its pixels when held in memory, else its file."""
    return manifest.pixels if manifest.pixels is not None else manifest.paths


class ImageDataset(Dataset):
    """A manifest as (image, label list, attribute targets) samples; ``collate`` makes them batches.

    A sample's label targets are the image's list from ``Manifest.label_lists``
    (label indices and their values), not a dense row: at 10,000 labels a
    dense row per sample would be 10 kB copied through every worker. Under
    ``Decoding(bad_images="skip")`` an unreadable image's sample is None, which
    ``collate`` drops; ``bad`` holds the ones this process met.
    """

    def __init__(
        self,
        manifest: Manifest,
        transform: v2.Compose,
        *,
        decoding: Decoding | None = None,
        cache: ImageCache | None = None,
    ) -> None:
        self.manifest = manifest
        self.transform = transform
        self.decoding = decoding or Decoding()
        self.cache = cache
        self.images = manifest_images(manifest)
        self.label_lists = manifest.label_lists
        self.attributes = torch.from_numpy(manifest.attributes)
        self.collate = Collate(manifest.schema.n_labels, manifest.label_lists.fill)
        self.bad: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.manifest)

    def load(self, index: int) -> torch.Tensor:
        if self.cache is not None and self.manifest.pixels is None:
            return self.cache.image(index)
        return self.decoding.decode(self.images[index])

    def __getitem__(
        self, index: int
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], torch.Tensor] | None:
        if index in self.bad:  # known unreadable: not decoded, nor logged, again
            return None
        try:
            image = self.load(index)
        except DataError as e:
            if self.decoding.bad_images == "fail":
                raise
            self.bad[index] = str(e)
            log_bad_image(self.decoding.bad_log, str(self.manifest.paths[index]), str(e))
            return None
        indices, values = self.label_lists.row(index)
        label_list = (torch.from_numpy(indices), torch.from_numpy(values))
        return self.transform(image), label_list, self.attributes[index]


@dataclass(frozen=True)
class Collate:
    """Stack samples of an ``ImageDataset`` into ``(images, labels [B, L] int8, attributes [B, A])``.

    The label lists become a dense matrix here, per batch, and nowhere earlier.
    Skipped samples (None) are dropped; a batch with none left is None.
    """

    n_labels: int
    fill: int = 0

    def __call__(self, samples: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        samples = [s for s in samples if s is not None]
        if not samples:
            return None
        images = default_collate([s[0] for s in samples])  # in a worker, straight into shared memory
        attributes = torch.stack([s[2] for s in samples])
        return images, dense_labels([s[1] for s in samples], self.n_labels, self.fill), attributes


def dense_labels(rows: list[tuple[torch.Tensor, torch.Tensor]], n_labels: int, fill: int) -> torch.Tensor:
    """The int8 ``[B, n_labels]`` targets of a batch from each sample's label list (indices, values)."""
    labels = torch.full((len(rows), n_labels), fill, dtype=torch.int8)
    if rows:
        which = torch.cat([torch.full((len(r[0]),), i, dtype=torch.int64) for i, r in enumerate(rows)])
        labels[which, torch.cat([r[0] for r in rows]).long()] = torch.cat([r[1] for r in rows])
    return labels


class InputImages(Dataset):
    """Images to run a model on, as ``(image, None)``; ``(None, error)`` if unreadable and skipped.

    Rows always match the inputs: a skipped image keeps its place, with its
    error, so that outputs line up with what the caller passed. With a
    ``bad_log``, skipped files are listed there too. With ``targets`` (the
    manifest the images come from), each sample also carries its label list
    and attribute targets, and batches their dense rows (as ``Collate`` makes
    them), so that targets travel batch by batch and never as one matrix.
    With a ``cache`` (of those images, by index), images come from it.
    """

    def __init__(
        self,
        images: Sequence[ImageInput],
        transform: v2.Compose,
        decoding: Decoding,
        targets: Manifest | None = None,
        cache: ImageCache | None = None,
    ) -> None:
        self.images, self.transform, self.decoding, self.targets = images, transform, decoding, targets
        self.cache = cache

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple:
        try:
            raw = self.cache.image(i) if self.cache is not None else self.decoding.decode(self.images[i])
            image, error = self.transform(raw), None
        except DataError as e:
            if self.decoding.bad_images == "fail":
                raise
            if isinstance(self.images[i], str):
                log_bad_image(self.decoding.bad_log, self.images[i], str(e))
            image, error = None, str(e)
        if self.targets is None:
            return image, error
        indices, values = self.targets.label_lists.row(i)
        row = (torch.from_numpy(indices), torch.from_numpy(values))
        return image, error, row, torch.from_numpy(self.targets.attributes[i])

    def collate(self, samples: list) -> tuple:
        """The readable images stacked (None if there are none), each sample's error or None, and with
        ``targets`` the batch's label targets ``[B, L]`` and attribute targets ``[B, A]``."""
        images = [s[0] for s in samples if s[0] is not None]
        batch = ((torch.stack(images) if images else None), [s[1] for s in samples])
        if self.targets is None:
            return batch
        lists = self.targets.label_lists
        labels = dense_labels([s[2] for s in samples], lists.shape[1], lists.fill)
        return (*batch, labels, torch.stack([s[3] for s in samples]))


def worker_error(error: DataError) -> DataError:
    """``error`` without the worker traceback that DataLoader adds when it re-raises it in this process.

    The original's own traceback is dropped: it holds the loader in a reference
    cycle, and the loader's worker processes would otherwise stop only at the
    next garbage collection, after a 5-second timeout each.
    """
    text = str(error)
    caught = re.match(r"Caught (\w+) ", text)
    marker = f"{caught[1]}: " if caught else ""
    if not caught or marker not in text:
        return error
    error.__traceback__ = None
    return type(error)(text.rsplit(marker, 1)[1].strip())
