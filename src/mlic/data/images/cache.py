"""The decoded-image cache: a small data set's training images decoded once, shared by loader workers."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from mlic.data.images.decode import MAX_IMAGE_PIXELS, decode_image, open_image, reading
from mlic.data.images.transforms import Preprocessing, decode_size
from mlic.data.manifest import Manifest
from mlic.errors import ConfigError, DataError


@dataclass
class ImageCache:
    """Decoded images in one uint8 buffer, each ``[H, W, 3]`` with its shorter side at most ``side``.

    Built once before training (``build_cache``). DataLoader workers read the
    buffer without copying it: forked workers share the parent's memory, and
    elsewhere the buffer is moved to shared memory. Images that could not be
    read hold no pixels; ``errors`` has their messages.
    """

    pixels: torch.Tensor
    offsets: torch.Tensor
    shapes: torch.Tensor
    errors: dict[int, str]
    side: int

    @property
    def nbytes(self) -> int:
        return int(self.offsets[-1])

    def image(self, index: int) -> torch.Tensor:
        """Image ``index`` as a uint8 RGB tensor ``[3, H, W]`` (a view into the buffer)."""
        if index in self.errors:
            raise DataError(self.errors[index])
        return self.slot(index).permute(2, 0, 1)

    def slot(self, index: int) -> torch.Tensor:
        """The buffer's ``[H, W, 3]`` view of image ``index``."""
        h, w = self.shapes[index].tolist()
        start = int(self.offsets[index])
        return self.pixels[start : start + 3 * h * w].view(h, w, 3)


def build_cache(
    manifest: Manifest,
    pre: Preprocessing,
    *,
    num_workers: int = 0,
    max_pixels: int | None = MAX_IMAGE_PIXELS,
    max_bytes: int | None = None,
) -> ImageCache:
    """Decode every image of ``manifest`` once, resized so that its shorter side is at most ``decode_size``.

    Memory: 3 bytes per cached pixel, 3 s² x aspect per image at shorter side
    s = ``decode_size(pre)``: 269 at input size 224, so 290 kB per 4:3 photo,
    2.9 GB per 10,000. The exact size is known from the file headers before
    anything is decoded; above ``max_bytes`` (default: half the memory available
    now) this raises ``ConfigError``. Decoding runs in ``num_workers`` processes.
    The transforms then see the cached image in place of the file's: the same
    pixels where the file's shorter side is at most s, one more resize otherwise.
    """
    side = decode_size(pre)
    n = len(manifest)
    shapes, errors = torch.zeros(n, 2, dtype=torch.int64), {}
    for i, path in enumerate(manifest.paths):
        try:
            with reading(path), open_image(path, max_pixels) as im:
                shapes[i] = torch.tensor(_fit(im.height, im.width, side))
        except DataError as e:
            errors[i] = str(e)
    offsets = torch.zeros(n + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(3 * shapes[:, 0] * shapes[:, 1], 0)
    limit = max_bytes if max_bytes is not None else available_memory() // 2
    if int(offsets[-1]) > limit:
        bound = "" if max_bytes is not None else " (half the memory available)"
        raise ConfigError(
            f"caching {n:,} decoded images at shorter side {side} needs {offsets[-1] / 2**30:.1f} GiB, more "
            f"than the {limit / 2**30:.1f} GiB allowed{bound}; train without --cache-images, or with a "
            "smaller --image-size"
        )
    pixels = torch.empty(max(1, int(offsets[-1])), dtype=torch.uint8)
    cache = ImageCache(pixels, offsets, shapes, errors, side)
    fill = _CacheFill(manifest.paths, shapes, errors, side, max_pixels, pre.interpolation)
    for batch in DataLoader(fill, batch_size=16, num_workers=num_workers, collate_fn=list):
        for index, image, message in batch:
            if message is not None:
                errors[index] = message
            elif image is not None:
                shapes[index] = torch.tensor(image.shape[:2])
                cache.slot(index).copy_(image)
    if torch.multiprocessing.get_start_method() != "fork":
        cache.pixels.share_memory_()
    return cache


def _fit(h: int, w: int, side: int) -> tuple[int, int]:
    """``(h, w)`` scaled down so that the shorter side is ``side``; unchanged if it is already no longer."""
    scale = side / min(h, w)
    return (h, w) if scale >= 1 else (max(1, round(h * scale)), max(1, round(w * scale)))


class _CacheFill(Dataset):
    """One image decoded and resized for ``build_cache``: ``(index, pixels [H, W, 3] | None, error)``."""

    def __init__(
        self,
        paths: list[str],
        shapes: torch.Tensor,
        errors: dict[int, str],
        side: int,
        max_pixels: int | None,
        interpolation: str,
    ) -> None:
        self.paths, self.shapes, self.errors, self.side = paths, shapes, errors, side
        self.max_pixels, self.interpolation = max_pixels, v2.InterpolationMode(interpolation)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        if i in self.errors:
            return i, None, None
        try:
            x = decode_image(self.paths[i], min_side=self.side, max_pixels=self.max_pixels)
        except DataError as e:
            return i, None, str(e)
        h, w = self.shapes[i].tolist()
        if (x.shape[1] > x.shape[2]) != (h > w) and x.shape[1] != x.shape[2]:
            h, w = w, h  # turned by its EXIF orientation; the area, and so the slot, is the same
        if tuple(x.shape[1:]) != (h, w):
            x = v2.functional.resize(x, [h, w], interpolation=self.interpolation, antialias=True)
        return i, x.permute(1, 2, 0).contiguous(), None


def available_memory() -> int:
    """Bytes of memory available now: Linux's MemAvailable, within a cgroup's limit where one is set."""
    available = None
    try:
        with open("/proc/meminfo") as f:
            available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            available = min(available, int(limit) - used)
    except (OSError, StopIteration, ValueError):
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = 2**62  # unknown: no limit
    return available
