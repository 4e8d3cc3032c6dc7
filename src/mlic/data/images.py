"""Images to tensors: decoding, augmentation and normalisation, shared by training and prediction.

``Preprocessing`` travels in the artifact, so prediction derives its
transforms from what training used and nothing is retyped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms import v2

from mlic.data.manifest import Manifest
from mlic.errors import DataError

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


def read_image(path: str | Path) -> torch.Tensor:
    """Decode an image file to a uint8 RGB tensor ``[3, H, W]``, honouring EXIF orientation."""
    try:
        with Image.open(path) as im:
            return pil_to_tensor(ImageOps.exif_transpose(im))
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DataError(f"{path}: cannot decode image ({e})") from None


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image of any mode as a uint8 RGB tensor ``[3, H, W]``."""
    if image.mode != "RGB":
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            image = Image.fromarray((np.asarray(image, dtype=np.float32) / 256).clip(0, 255).astype(np.uint8))
        image = image.convert("RGBA").convert("RGB") if image.mode in ("P", "LA") else image.convert("RGB")
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def array_to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8 pixels ``[H, W]`` or ``[H, W, 3]`` as a uint8 RGB tensor ``[3, H, W]``."""
    t = torch.from_numpy(np.ascontiguousarray(pixels))
    return t.unsqueeze(0).expand(3, -1, -1) if t.ndim == 2 else t.permute(2, 0, 1)


class ImageDataset(Dataset):
    """A manifest as (image, label list, attribute targets) samples; ``collate`` makes them batches.

    A sample's label targets are the image's list from ``Manifest.label_lists``
    (label indices and their values), not a dense row: at 10,000 labels a
    dense row per sample would be 10 kB copied through every worker.
    """

    def __init__(self, manifest: Manifest, transform: v2.Compose) -> None:
        self.manifest = manifest
        self.transform = transform
        self.label_lists = manifest.label_lists
        self.attributes = torch.from_numpy(manifest.attributes)
        self.collate = Collate(manifest.schema.n_labels, manifest.label_lists.fill)

    def __len__(self) -> int:
        return len(self.manifest)

    def load(self, index: int) -> torch.Tensor:
        if self.manifest.pixels is not None:
            return array_to_tensor(self.manifest.pixels[index])
        return read_image(self.manifest.paths[index])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        indices, values = self.label_lists.row(index)
        label_list = (torch.from_numpy(indices), torch.from_numpy(values))
        return self.transform(self.load(index)), label_list, self.attributes[index]


@dataclass(frozen=True)
class Collate:
    """Stack samples of an ``ImageDataset`` into ``(images, labels [B, L] int8, attributes [B, A])``.

    The label lists become a dense matrix here, per batch, and nowhere earlier.
    """

    n_labels: int
    fill: int = 0

    def __call__(self, samples: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images = torch.stack([s[0] for s in samples])
        attributes = torch.stack([s[2] for s in samples])
        labels = torch.full((len(samples), self.n_labels), self.fill, dtype=torch.int8)
        rows = torch.cat([torch.full((len(s[1][0]),), i, dtype=torch.int64) for i, s in enumerate(samples)])
        columns = torch.cat([s[1][0] for s in samples]).long()
        labels[rows, columns] = torch.cat([s[1][1] for s in samples])
        return images, labels, attributes
