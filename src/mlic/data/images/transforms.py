"""Preprocessing: how decoded images become model inputs, saved in the artifact.

``Preprocessing`` travels in the artifact, so prediction derives its
transforms from what training used and nothing is retyped. Normalisation is
not here: the classifier normalises whole batches, inside the exported model too.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from torchvision.transforms import v2

from mlic.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AUGMENTATIONS = ("light", "shift", "none")
DECODE_MARGIN = 1.2
"""Decoded images keep a shorter side of at least this many times the input size (see ``decode_size``)."""


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


def decode_size(pre: Preprocessing) -> int:
    """The shorter side an image keeps when decoded for ``pre``: the larger input side x ``DECODE_MARGIN``.

    A random-resized crop of at least 80% of the area at aspect 0.9-1.1 spans at
    least 0.85 of the image's shorter side, so an image decoded this large still
    gives every crop more pixels than the input has: reduced-scale decoding
    (``decode_image(min_side=...)``) loses nothing the model sees.
    """
    return math.ceil(max(pre.image_size) * DECODE_MARGIN)
