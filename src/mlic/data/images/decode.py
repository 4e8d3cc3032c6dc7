"""Decoding: every image mlic reads becomes a uint8 RGB tensor ``[3, H, W]`` here, and only here.

``decode_image`` takes what training, prediction and the server are given:
a file path, the bytes of an uploaded file (a binary stream), a PIL image,
or uint8 pixels. Encoded images are decoded as they are displayed: EXIF
orientation applied; grey, 1-bit, palette, CMYK and 16-bit images converted;
alpha dropped. A missing, truncated, corrupt or oversized file is a
``DataError`` that names it.
"""

from __future__ import annotations

import contextlib
import re
import struct
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from mlic.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif")
"""File endings read as images (lower case): by folder search and by extension lookup in manifests."""
MAX_IMAGE_PIXELS = 89_478_485
"""Default pixel limit (Pillow's warning limit, about 9,459 x 9,459): larger images are refused unread."""
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

ImageInput = str | Path | BinaryIO | Image.Image | np.ndarray | torch.Tensor
"""What ``decode_image`` takes: a path or binary stream of an encoded image, a PIL image, uint8 pixels."""


class ImageTooLargeError(DataError):
    """An image whose header declares more pixels than the limit; refused before decoding."""


class ImageFormatError(DataError):
    """An image in a format the caller does not accept (``decode_image(formats=...)``)."""


def decode_image(
    image: ImageInput,
    *,
    min_side: int | None = None,
    max_pixels: int | None = MAX_IMAGE_PIXELS,
    formats: tuple[str, ...] | None = None,
    name: str | None = None,
) -> torch.Tensor:
    """Any image input as a uint8 RGB tensor ``[3, H, W]``, as it is displayed.

    - a file path or a binary stream: decoded, honouring EXIF orientation.
      ``min_side``: a JPEG at least twice that size on both sides is decoded by
      libjpeg at 1/2, 1/4 or 1/8 scale (``Image.draft``), never below
      ``min_side`` on either side: several times faster for photos far larger
      than the input. ``max_pixels``: a larger image is refused from its
      header, before any decoding (a decompression-bomb guard, an
      ``ImageTooLargeError``; None: no limit). ``formats``: the Pillow formats
      accepted (others are an ``ImageFormatError``; None: any). Missing,
      truncated and corrupt files raise a ``DataError`` that names the file,
      or ``name`` for a stream.
    - a PIL image: converted as :func:`pil_to_tensor` says.
    - uint8 pixels: an array ``[H, W]`` or ``[H, W, 3]``, or a tensor ``[3, H, W]``.
    """
    if isinstance(image, str | Path) or hasattr(image, "read"):
        shown = name or str(image)
        with reading(shown), open_image(image, max_pixels, name=shown) as im:
            if formats is not None and im.format not in formats:
                raise ImageFormatError(f"{shown}: {im.format} images are not accepted")
            if min_side:
                im.draft("RGB", (min_side, min_side))
            im.load()  # first, so that a truncated file fails here and never reads as half an image
            return pil_to_tensor(exif_orient(im))
    if isinstance(image, Image.Image):
        return pil_to_tensor(image)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
            raise DataError(
                f"image arrays must be uint8 [H, W] or [H, W, 3], got {image.dtype} {image.shape}"
            )
        return array_to_tensor(image)
    if isinstance(image, torch.Tensor) and image.dtype == torch.uint8 and image.ndim == 3:
        return image
    raise DataError(f"cannot use {type(image).__name__} as an image; pass a path, PIL image or uint8 array")


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


def open_image(
    path: str | Path | BinaryIO, max_pixels: int | None = MAX_IMAGE_PIXELS, *, name: str | None = None
) -> Image.Image:
    """``Image.open`` (which reads the header only), refusing images of more than ``max_pixels``.

    Pillow's bomb warning is silenced: this limit replaces it. Pillow's hard
    limit (twice ``PIL.Image.MAX_IMAGE_PIXELS``) still applies, so the stricter
    of the two wins; only a ``max_pixels`` other than the default that exceeds
    it (or None) raises Pillow's to match. Errors name ``name`` (default: ``path``).
    """
    shown = name or str(path)
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
            raise _too_large(shown, f"{pixels:,} pixels", limit) from None
    w, h = image.size
    if max_pixels is not None and w * h > max_pixels:
        image.close()
        raise _too_large(shown, f"{w} x {h} = {w * h:,} pixels", max_pixels)
    return image


def _too_large(path: str, size: str, limit: int) -> ImageTooLargeError:
    return ImageTooLargeError(
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
