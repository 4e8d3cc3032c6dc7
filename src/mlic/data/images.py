"""Images to tensors: decoding, augmentation and normalisation, shared by training and prediction.

``Preprocessing`` travels in the artifact, so prediction derives its
transforms from what training used and nothing is retyped.

Decoding (``read_image``) turns every common file into uint8 RGB as it is
displayed: EXIF orientation applied; grey, 1-bit, palette, CMYK and 16-bit
images converted; alpha dropped. A missing, truncated, corrupt or oversized
file is a ``DataError`` that names it, and ``ImageDataset`` then skips the
sample or stops (``Decoding.bad_images``). ``ImageCache`` keeps a small data
set decoded in memory.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import struct
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, default_collate
from torchvision.transforms import v2

from mlic.data.manifest import Manifest
from mlic.errors import ConfigError, DataError
from mlic.fileio import atomic_write_text

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif")
"""File endings read as images (lower case): by folder search and by extension lookup in manifests."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Preprocessing:
    """How images become model inputs; saved in the artifact."""

    image_size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    hflip: bool = True
    """Whether training may mirror images (off where mirroring changes meaning, like digits)."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        kw = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        for k in ("image_size", "mean", "std"):
            if k in kw:
                kw[k] = tuple(kw[k])
        return cls(**kw)


AUGMENTATIONS = ("light", "shift", "none")


def build_transform(pre: Preprocessing, *, train: bool = False, augment: str = "light") -> v2.Compose:
    """Geometric transform of a uint8 RGB tensor ``[3, H, W]`` to ``pre.image_size``, still uint8.

    Normalisation is not here: the classifier normalises whole batches (three
    times cheaper than per sample, and it travels with the exported model).
    Training augmentations:

    - ``light``: a random crop of 80-100% of the area (aspect 0.9-1.1) resized
      to the input size, and a horizontal flip when ``pre.hflip``; for photos.
    - ``shift``: a random translation of up to 1/16 of the side (pad and crop),
      no rescaling; for data where absolute size carries meaning (MultiDigits'
      ``largest``: zooming in taught the model that large digits look larger).
    - ``none``: resize only.

    (A random affine warp cost about 100x more per sample on CPU.)
    """
    if augment not in AUGMENTATIONS:
        raise DataError(f"unknown augmentation {augment!r}; expected one of {list(AUGMENTATIONS)}")
    interpolation = v2.InterpolationMode(pre.interpolation)
    size = list(pre.image_size)
    resize = v2.Resize(size, interpolation=interpolation, antialias=True)
    if not train or augment == "none":
        return v2.Compose([resize])
    if augment == "shift":
        steps: list = [resize, v2.RandomCrop(size, padding=max(1, min(size) // 16))]
    else:
        steps = [
            v2.RandomResizedCrop(
                size, scale=(0.8, 1.0), ratio=(0.9, 1.1), interpolation=interpolation, antialias=True
            )
        ]
    if pre.hflip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps)


MAX_IMAGE_PIXELS = 89_478_485
"""Default pixel limit (Pillow's warning limit, about 9,459 x 9,459): larger images are refused unread."""
DECODE_MARGIN = 1.2
"""Decoded images keep a shorter side of at least this many times the input size (see ``decode_size``)."""
BAD_IMAGES = ("skip", "fail")
EXIF_ORIENTATION = 0x0112
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270,
              7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}  # fmt: skip
_DECODE_ERRORS = (
    OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, OverflowError, RuntimeError,
    struct.error, zlib.error,
)  # fmt: skip
"""What Pillow raises for files it cannot read: OSError covers truncation and unknown formats;
OverflowError, a size beyond a C int in a header when there is no pixel limit; RuntimeError, the
AVIF decoder's failures and (NotImplementedError) a variant that a plugin does not support."""
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def decode_size(pre: Preprocessing) -> int:
    """The shorter side an image keeps when decoded for ``pre``: the larger input side x ``DECODE_MARGIN``.

    A random-resized crop of at least 80% of the area at aspect 0.9-1.1 spans at
    least 0.85 of the image's shorter side, so an image decoded this large still
    gives every crop more pixels than the input has: reduced-scale decoding
    (``read_image(min_side=...)``) loses nothing the model sees.
    """
    return math.ceil(max(pre.image_size) * DECODE_MARGIN)


def read_image(
    path: str | Path, *, min_side: int | None = None, max_pixels: int | None = MAX_IMAGE_PIXELS
) -> torch.Tensor:
    """Decode an image file to a uint8 RGB tensor ``[3, H, W]``, honouring EXIF orientation.

    ``min_side``: a JPEG at least twice that size on both sides is decoded by
    libjpeg at 1/2, 1/4 or 1/8 scale (``Image.draft``), never below ``min_side``
    on either side: several times faster for photos far larger than the input.
    ``max_pixels``: a larger image is refused from its header, before any
    decoding (a decompression-bomb guard; None: no limit). Missing, truncated
    and corrupt files raise a ``DataError`` that names the file.
    """
    with reading(path), open_image(path, max_pixels) as im:
        if min_side:
            im.draft("RGB", (min_side, min_side))
        im.load()  # first, so that a truncated file fails here and never reads as half an image
        return pil_to_tensor(exif_orient(im))


@contextlib.contextmanager
def reading(path: str | Path) -> Iterator[None]:
    """Turn what the OS and Pillow raise while reading ``path`` into a ``DataError`` that names it."""
    try:
        yield
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except DataError:
        raise
    except UnidentifiedImageError:  # Pillow's message repeats the path, or shows a stream's repr
        raise DataError(f"{path}: cannot decode image (not a format Pillow can identify)") from None
    except _DECODE_ERRORS as e:
        raise DataError(f"{path}: cannot decode image ({e})") from None
    except MemoryError:  # a header without a pixel limit can declare billions of pixels
        raise DataError(f"{path}: cannot decode image (out of memory; is there a pixel limit?)") from None


def open_image(path: str | Path, max_pixels: int | None = MAX_IMAGE_PIXELS) -> Image.Image:
    """``Image.open`` (which reads the header only), refusing images of more than ``max_pixels``.

    Pillow's bomb warning is silenced: this limit replaces it. Pillow's hard
    limit (twice ``PIL.Image.MAX_IMAGE_PIXELS``) still applies, so the stricter
    of the two wins; only a ``max_pixels`` other than the default that exceeds
    it (or None) raises Pillow's to match.
    """
    pillow = Image.MAX_IMAGE_PIXELS
    asks_more = pillow is not None and (max_pixels is None or max_pixels > 2 * pillow)
    if asks_more and max_pixels != MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(path)
        except Image.DecompressionBombError as e:
            found = re.search(r"\((\d+) pixels\)", str(e))
            pixels = int(found[1]) if found else 0
            ours = max_pixels is not None and pixels > max_pixels
            limit = max_pixels if ours else 2 * (Image.MAX_IMAGE_PIXELS or 0)
            raise _too_large(path, f"{pixels:,} pixels", limit) from None
    w, h = image.size
    if max_pixels is not None and w * h > max_pixels:
        image.close()
        raise _too_large(path, f"{w} x {h} = {w * h:,} pixels", max_pixels)
    return image


def _too_large(path: str | Path, size: str, limit: int) -> DataError:
    return DataError(
        f"{path}: {size} is more than the limit of {limit:,} pixels (a decompression bomb?); "
        "raise max_image_pixels to read it"
    )


def exif_orient(image: Image.Image) -> Image.Image:
    """``image`` as it is displayed: turned or mirrored by its EXIF orientation tag (itself if none)."""
    try:
        orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    except _DECODE_ERRORS:  # a broken EXIF block leaves the pixels readable
        orientation = 1
    method = _TRANSPOSE.get(orientation)
    return image if method is None else image.transpose(method)


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image of any mode as a uint8 RGB tensor ``[3, H, W]``.

    Grey (L) and 1-bit repeat their channel; palette (P), CMYK and YCbCr
    convert through Pillow (CMYK without colour management; Adobe's inverted
    CMYK JPEGs are read the right way round); 16-bit grey (I;16, I;16B, and I,
    taken as 16-bit) keeps its high byte (value / 256); 32-bit float (F) is
    clipped to 0-255. Alpha (RGBA, LA, PA, palette transparency) is
    dropped, keeping each pixel's stored colour: what ``convert("RGB")`` gives,
    and so what most pretrained models were trained on. The result is a
    channels-last view (HWC memory), the layout torchvision resizes fastest.
    """
    if image.mode in _SIXTEEN_BIT:
        high = (np.asarray(image, dtype=np.float32) / 256).clip(0, 255).astype(np.uint8)
        image = Image.fromarray(high)
    if image.mode in ("P", "PA", "LA"):
        image = image.convert("RGBA")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)


def array_to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8 pixels ``[H, W]`` or ``[H, W, 3]`` as a uint8 RGB tensor ``[3, H, W]``."""
    t = torch.from_numpy(np.ascontiguousarray(pixels))
    return t.unsqueeze(0).expand(3, -1, -1) if t.ndim == 2 else t.permute(2, 0, 1)


@dataclass(frozen=True)
class Decoding:
    """How ``ImageDataset`` reads image files, and what it does with those it cannot read.

    - ``min_side``: decode JPEGs at reduced scale down to this shorter side
      (``decode_size``); None: at full size.
    - ``max_pixels``: refuse larger images (decompression-bomb guard); None: no limit.
    - ``bad_images``: ``fail`` raises the first ``DataError``; ``skip`` drops the
      sample from its batch and, with ``bad_log``, appends ``path<TAB>reason`` to
      that file (one ``O_APPEND`` write per line, so that DataLoader worker
      processes can share it; ``tidy_bad_images`` then removes repeats).
    """

    min_side: int | None = None
    max_pixels: int | None = MAX_IMAGE_PIXELS
    bad_images: str = "fail"
    bad_log: str | None = None

    def __post_init__(self) -> None:
        if self.bad_images not in BAD_IMAGES:
            raise ConfigError(f"bad_images must be one of {list(BAD_IMAGES)}, not {self.bad_images!r}")


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
        self.label_lists = manifest.label_lists
        self.attributes = torch.from_numpy(manifest.attributes)
        self.collate = Collate(manifest.schema.n_labels, manifest.label_lists.fill)
        self.bad: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.manifest)

    def load(self, index: int) -> torch.Tensor:
        if self.manifest.pixels is not None:
            return array_to_tensor(self.manifest.pixels[index])
        if self.cache is not None:
            return self.cache.image(index)
        d = self.decoding
        return read_image(self.manifest.paths[index], min_side=d.min_side, max_pixels=d.max_pixels)

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
        labels = torch.full((len(samples), self.n_labels), self.fill, dtype=torch.int8)
        rows = torch.cat([torch.full((len(s[1][0]),), i, dtype=torch.int64) for i, s in enumerate(samples)])
        columns = torch.cat([s[1][0] for s in samples]).long()
        labels[rows, columns] = torch.cat([s[1][1] for s in samples])
        return images, labels, attributes


# -- unreadable images -----------------------------------------------------------------------------
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


def worker_error(error: DataError) -> DataError:
    """``error`` without the worker traceback that DataLoader adds when it re-raises it in this process.

    The original's own traceback is dropped: it holds the loader in a reference
    cycle, and the loader's worker processes would otherwise stop only at the
    next garbage collection, after a 5-second timeout each.
    """
    text, marker = str(error), "DataError: "
    if not text.startswith("Caught DataError") or marker not in text:
        return error
    error.__traceback__ = None
    return DataError(text.rsplit(marker, 1)[1].strip())


# -- decoded-image cache ---------------------------------------------------------------------------
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
        return self._slot(index).permute(2, 0, 1)

    def _slot(self, index: int) -> torch.Tensor:
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
                cache._slot(index).copy_(image)
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
            x = read_image(self.paths[i], min_side=self.side, max_pixels=self.max_pixels)
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
