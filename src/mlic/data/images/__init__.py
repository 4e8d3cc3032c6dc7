"""Images to tensors, shared by training and prediction.

- ``decode``: ``decode_image``, the one function that turns files, uploaded
  bytes, PIL images and arrays into uint8 RGB tensors;
- ``transforms``: ``Preprocessing`` (saved in the artifact) and the resize and
  augmentation derived from it;
- ``dataset``: ``ImageDataset`` (training samples with targets), ``InputImages``
  (images to predict on) and ``Decoding``, what both do with unreadable files;
- ``bad_images``: the list of skipped files; ``cache``: decoded images in memory.
"""

from mlic.data.images.bad_images import BAD_IMAGES, log_bad_image, read_bad_images, tidy_bad_images
from mlic.data.images.cache import ImageCache, available_memory, build_cache
from mlic.data.images.dataset import (
    Collate,
    Decoding,
    ImageDataset,
    InputImages,
    manifest_images,
    worker_error,
)
from mlic.data.images.decode import (
    IMAGE_SUFFIXES,
    MAX_IMAGE_PIXELS,
    ImageFormatError,
    ImageInput,
    ImageTooLargeError,
    array_to_tensor,
    decode_image,
    exif_orient,
    open_image,
    pil_to_tensor,
    reading,
)
from mlic.data.images.transforms import (
    AUGMENTATIONS,
    DECODE_MARGIN,
    IMAGENET_MEAN,
    IMAGENET_STD,
    RESIZES,
    Preprocessing,
    build_transform,
    decode_size,
)

__all__ = [
    "AUGMENTATIONS",
    "BAD_IMAGES",
    "DECODE_MARGIN",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_SUFFIXES",
    "MAX_IMAGE_PIXELS",
    "RESIZES",
    "Collate",
    "Decoding",
    "ImageCache",
    "ImageDataset",
    "ImageFormatError",
    "ImageInput",
    "ImageTooLargeError",
    "InputImages",
    "Preprocessing",
    "array_to_tensor",
    "available_memory",
    "build_cache",
    "build_transform",
    "decode_image",
    "decode_size",
    "exif_orient",
    "log_bad_image",
    "manifest_images",
    "open_image",
    "pil_to_tensor",
    "read_bad_images",
    "reading",
    "tidy_bad_images",
    "worker_error",
]
