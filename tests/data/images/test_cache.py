"""Tests of mlic.data.images.cache: the decoded-image cache gives what the files give, within its bound."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from mlic.data.images.cache import available_memory, build_cache
from mlic.data.images.dataset import Decoding, ImageDataset
from mlic.data.images.decode import EXIF_ORIENTATION
from mlic.data.images.transforms import (
    Preprocessing,
    build_transform,
)
from mlic.data.manifest import Manifest
from mlic.errors import ConfigError, DataError
from mlic.schema import Attribute, LabelSchema

SCHEMA = LabelSchema(("a", "b"), (Attribute("size", ("s", "l")),))


def rgb_array(h: int = 12, w: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def saved(tmp_path, image: Image.Image, name: str, **options) -> str:
    image.save(tmp_path / name, **options)
    return str(tmp_path / name)


# -- reduced-scale (draft) JPEG decoding -----------------------------------------------------------
def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth photo-like pixels (noise upsampled from a coarse grid), which JPEG keeps well."""
    grid = np.random.default_rng(seed).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(grid).resize((w, h), Image.Resampling.BICUBIC))


# -- unreadable images in datasets -----------------------------------------------------------------
def files_manifest(tmp_path, n: int, bad: set[int], size: tuple[int, int] = (12, 10)) -> Manifest:
    """``n`` PNG files, those at positions ``bad`` corrupt; labels: image i has label a iff i is even."""
    paths = []
    for i in range(n):
        path = tmp_path / f"img{i}.png"
        if i in bad:
            path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)
        else:
            Image.fromarray(rgb_array(*size, seed=i)).save(path)
        paths.append(str(path))
    labels = np.array([[1 - i % 2, i % 2] for i in range(n)])
    return Manifest(SCHEMA, paths, labels, np.zeros((n, 1), dtype=np.int64))


def loader_over(ds: ImageDataset, workers: int, batch_size: int = 2) -> DataLoader:
    return DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=ds.collate)


# -- decoded-image cache ---------------------------------------------------------------------------
def test_cache_gives_the_same_batches_as_the_files(tmp_path):
    pre = Preprocessing(image_size=(16, 16))  # decode_size 20: these files are stored as they are
    paths = []
    for i, (h, w) in enumerate([(12, 18), (20, 15), (9, 30), (16, 16)]):
        paths.append(saved(tmp_path, Image.fromarray(rgb_array(h, w, seed=i)), f"{i}.png"))
    manifest = Manifest(SCHEMA, paths, np.zeros((4, 2)), np.zeros((4, 1)))
    cache = build_cache(manifest, pre)
    assert cache.nbytes == 3 * (12 * 18 + 20 * 15 + 9 * 30 + 16 * 16) and not cache.errors
    transform = build_transform(pre, train=True, augment="none")
    [plain] = list(loader_over(ImageDataset(manifest, transform), 0, 4))
    for workers in (0, 2):
        [cached] = list(loader_over(ImageDataset(manifest, transform, cache=cache), workers, 4))
        for a, b in zip(plain, cached):
            assert torch.equal(a, b)


def test_cache_resizes_large_images_to_the_decode_size(tmp_path):
    pre = Preprocessing(image_size=(16, 16))
    image = Image.fromarray(photo(60, 40))
    exif = image.getexif()
    exif[EXIF_ORIENTATION] = 6  # displayed 60 wide x 40 high
    wide = Image.fromarray(photo(50, 80))
    paths = [saved(tmp_path, image, "turned.png", exif=exif), saved(tmp_path, wide, "wide.jpg")]
    manifest = Manifest(SCHEMA, paths, np.zeros((2, 2)), np.zeros((2, 1)))
    cache = build_cache(manifest, pre, num_workers=2)
    assert cache.shapes.tolist() == [[20, 30], [20, 32]]
    transform = build_transform(pre)
    for i in range(2):
        plain = ImageDataset(manifest, transform)[i][0]
        cached = ImageDataset(manifest, transform, cache=cache)[i][0]
        assert (plain.float() - cached.float()).abs().mean() < 3  # one more resize, of smooth content


def test_cache_records_unreadable_images_for_the_dataset_to_skip(tmp_path):
    manifest = files_manifest(tmp_path, 3, bad={1})
    (tmp_path / "img2.png").unlink()
    cache = build_cache(manifest, Preprocessing(image_size=(8, 8)))
    assert sorted(cache.errors) == [1, 2] and "no such file" in cache.errors[2]
    ds = ImageDataset(manifest, build_transform(Preprocessing(image_size=(8, 8))), cache=cache,
                      decoding=Decoding(bad_images="skip"))  # fmt: skip
    assert ds[0] is not None and ds[1] is None and ds[2] is None and sorted(ds.bad) == [1, 2]
    with pytest.raises(DataError, match=r"img1\.png"):
        ImageDataset(manifest, ds.transform, cache=cache)[1]


def test_cache_refuses_to_outgrow_its_memory_bound(tmp_path):
    manifest = files_manifest(tmp_path, 3, bad=set())
    with pytest.raises(ConfigError, match=r"caching 3 decoded images at shorter side 10 needs 0\.0 GiB"):
        build_cache(manifest, Preprocessing(image_size=(8, 8)), max_bytes=100)
    assert available_memory() > 0
