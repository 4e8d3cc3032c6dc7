"""Preprocessing: how decoded images become model inputs, saved in the artifact.

``Preprocessing`` travels in the artifact, so prediction derives its
transforms from what training used and nothing is retyped. Normalisation is
not here: the classifier normalises whole batches, inside the exported model too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torchvision.transforms import v2

from mlic.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AUGMENTATIONS = ("light", "trivial", "shift", "none")
RESIZES = ("crop", "squash")
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
    resize: str = "crop"
    """How an image is fitted to ``image_size`` for prediction: ``crop`` scales it until it covers the
    input and keeps the centre (aspect kept, as timm and torchvision evaluate); ``squash`` stretches
    the whole image. Artifacts written before this field squash. On Corel-5k's 3:2 photos with
    ImageNet weights, nearest-neighbour retrieval on cropped inputs beat squashed ones by 0.014 mAP."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        kw = {"resize": "squash"} | {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        for k in ("image_size", "mean", "std"):
            if k in kw:
                kw[k] = tuple(kw[k])
        return cls(**kw)


def build_transform(pre: Preprocessing, *, train: bool = False, augment: str = "light") -> v2.Compose:
    """Geometric transform of a uint8 RGB tensor ``[3, H, W]`` to ``pre.image_size``, still uint8.

    Normalisation is not here: the classifier normalises whole batches (three
    times cheaper than per sample, and it travels with the exported model).
    Prediction fits the image by ``pre.resize``. Training augmentations:

    - ``light``: a random crop of 50-100% of the area at aspect 3/4-4/3,
      resized to the input size, and a horizontal flip when ``pre.hflip``; for
      photos. (The earlier 80-100% at aspect 0.9-1.1 found no such crop in a
      3:2 photo and fell back to the same centre crop every time.)
    - ``trivial``: ``light``, then TrivialAugment (Müller and Hutter 2021:
      one colour or geometric operation at a random strength per image,
      torchvision's ``TrivialAugmentWide``); stronger, for longer trainings.
    - ``shift``: the prediction resize, then a random translation of up to 1/16
      of the side (pad and crop), no rescaling; for data where absolute size
      carries meaning (MultiDigits' ``largest``: zooming in taught the model
      that large digits look larger).
    - ``none``: the prediction resize only.

    (A random affine warp cost about 100x more per sample on CPU.)
    """
    if augment not in AUGMENTATIONS:
        raise DataError(f"unknown augmentation {augment!r}; expected one of {list(AUGMENTATIONS)}")
    if pre.resize not in RESIZES:
        raise DataError(f"unknown resize {pre.resize!r}; expected one of {list(RESIZES)}")
    interpolation = v2.InterpolationMode(pre.interpolation)
    size = list(pre.image_size)
    if pre.resize == "squash":
        fit: list = [v2.Resize(size, interpolation=interpolation, antialias=True)]
    else:
        fit = [CoverCrop(size, interpolation)]
    if not train or augment == "none":
        return v2.Compose(fit)
    if augment == "shift":
        steps = [*fit, v2.RandomCrop(size, padding=max(1, min(size) // 16))]
    else:
        steps = [
            v2.RandomResizedCrop(
                size, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3), interpolation=interpolation, antialias=True
            )
        ]
    if pre.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if augment == "trivial":
        steps.append(v2.TrivialAugmentWide(interpolation=interpolation))
    return v2.Compose(steps)


class CoverCrop(torch.nn.Module):
    """Scale an image, aspect kept, until it just covers ``size`` (height, width), then keep the centre.

    torchvision's ``Resize(int)`` + ``CenterCrop`` is the same for square
    inputs; this also covers a non-square input exactly.
    """

    def __init__(self, size: Sequence[int], interpolation: v2.InterpolationMode) -> None:
        super().__init__()
        self.size, self.interpolation = [int(size[0]), int(size[1])], interpolation

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        (height, width), (h, w) = self.size, image.shape[-2:]
        scale = max(height / h, width / w)
        covered = [max(height, round(h * scale)), max(width, round(w * scale))]
        image = v2.functional.resize(image, covered, interpolation=self.interpolation, antialias=True)
        return v2.functional.center_crop(image, self.size)


def decode_size(pre: Preprocessing) -> int:
    """The shorter side an image keeps when decoded for ``pre``: the larger input side x ``DECODE_MARGIN``.

    The centre crop of prediction needs the larger input side; a random-resized
    crop of half the area at aspect 4/3 spans 0.61 of a square image's side, so
    the smallest training crops are upsampled by up to 1.4x from an image
    decoded this large, which a 0.5-1.0 scale augmentation tolerates; in
    exchange the decoded-image cache stays small.
    """
    return math.ceil(max(pre.image_size) * DECODE_MARGIN)
