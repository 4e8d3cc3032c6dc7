"""Tests of mlic.data.images.dataset: samples from pixels and files, unreadable images skipped or fatal."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from mlic.data.images.bad_images import tidy_bad_images
from mlic.data.images.dataset import Decoding, ImageDataset, worker_error
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


def check_rgb_tensor(t: torch.Tensor, h: int, w: int) -> None:
    assert isinstance(t, torch.Tensor)
    assert t.dtype == torch.uint8
    assert t.shape == (3, h, w)


# -- ImageDataset ----------------------------------------------------------------------------------
def test_dataset_over_grey_pixels_expands_to_three_channels():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (3, 16, 16), dtype=np.uint8)
    labels = np.array([[1, 0], [0, -1], [1, 1]])
    attributes = np.array([[0], [1], [-1]])
    manifest = Manifest(SCHEMA, ["m0", "m1", "m2"], labels, attributes, pixels=pixels)
    ds = ImageDataset(manifest, build_transform(Preprocessing(image_size=(16, 16)), train=False))
    assert len(ds) == 3
    image, label_targets, attribute_targets = ds[1]
    check_rgb_tensor(image, 16, 16)
    for c in range(3):
        np.testing.assert_array_equal(image[c].numpy(), pixels[1])
    indices, values = label_targets  # the image's label list: only entries other than the fill (0)
    assert indices.tolist() == [1] and values.tolist() == [-1] and values.dtype == torch.int8
    assert attribute_targets.tolist() == [1] and attribute_targets.dtype == torch.int64
    images, labels, attrs = ds.collate([ds[i] for i in range(3)])
    assert images.shape == (3, 3, 16, 16) and labels.dtype == torch.int8
    np.testing.assert_array_equal(labels.numpy(), labels_dense := np.array(manifest.labels))
    assert labels_dense.tolist() == [[1, 0], [0, -1], [1, 1]]
    assert attrs.tolist() == [[0], [1], [-1]]


def test_dataset_over_rgb_pixels_resizes():
    pixels = np.stack([rgb_array(20, 30, seed) for seed in range(2)])
    manifest = Manifest(SCHEMA, ["m0", "m1"], np.zeros((2, 2)), np.zeros((2, 1)), pixels=pixels)
    ds = ImageDataset(manifest, build_transform(Preprocessing(image_size=(10, 15)), train=False))
    check_rgb_tensor(ds[0][0], 10, 15)
    same = ImageDataset(manifest, build_transform(Preprocessing(image_size=(20, 30)), train=False))
    np.testing.assert_array_equal(same[1][0].permute(1, 2, 0).numpy(), pixels[1])


def test_dataset_over_files(tmp_path):
    arrays = [rgb_array(8, 8, 1), rgb_array(12, 6, 2)]
    paths = []
    for i, a in enumerate(arrays):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(a).save(paths[-1])
    manifest = Manifest(SCHEMA, paths, np.array([[1, 0], [0, 1]]), np.array([[1], [0]]))
    ds = ImageDataset(manifest, build_transform(Preprocessing(image_size=(8, 8)), train=False))
    image = ds[0][0]
    np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), arrays[0])
    check_rgb_tensor(ds[1][0], 8, 8)
    assert ds[1][1][0].tolist() == [1] and ds[1][2].tolist() == [0]
    batch = ds.collate([ds[0], ds[1]])
    assert batch[0].shape == (2, 3, 8, 8) and batch[0].dtype == torch.uint8
    assert batch[1].tolist() == [[1, 0], [0, 1]]


def test_dataset_over_a_missing_file(tmp_path):
    manifest = Manifest(SCHEMA, [str(tmp_path / "gone.png")], np.zeros((1, 2)), np.zeros((1, 1)))
    ds = ImageDataset(manifest, build_transform(Preprocessing(image_size=(8, 8)), train=False))
    with pytest.raises(DataError, match=r"gone\.png"):
        ds[0]


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


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_drops_unreadable_images_from_their_batches_and_lists_them(tmp_path, workers):
    manifest = files_manifest(tmp_path, 8, bad={1, 4, 5})
    log = tmp_path / "bad_images.txt"
    ds = ImageDataset(manifest, build_transform(Preprocessing(image_size=(8, 8))),
                      decoding=Decoding(bad_images="skip", bad_log=str(log)))  # fmt: skip
    for _ in range(2):  # two epochs: each worker lists what it meets, tidy_bad_images keeps one line each
        batches = list(loader_over(ds, workers))
        assert [b and len(b[0]) for b in batches] == [1, 2, None, 2]  # images 4 and 5 make an empty batch
        labels = torch.cat([b[1] for b in batches if b is not None])
        assert labels.tolist() == [[1, 0], [1, 0], [0, 1], [1, 0], [0, 1]]  # images 0, 2, 3, 6, 7 in order
    listed = tidy_bad_images(log)
    assert sorted(listed) == [manifest.paths[i] for i in (1, 4, 5)]
    assert all(reason.startswith("cannot decode image") for reason in listed.values())
    lines = log.read_text().splitlines()
    assert len(lines) == 3 and lines[0] == f"{manifest.paths[1]}\t{listed[manifest.paths[1]]}"


@pytest.mark.parametrize("workers", [0, 2])
def test_fail_raises_a_data_error_naming_the_unreadable_image(tmp_path, workers):
    manifest = files_manifest(tmp_path, 4, bad={2})
    ds = ImageDataset(manifest, build_transform(Preprocessing(image_size=(8, 8))),
                      decoding=Decoding(bad_images="fail", bad_log=str(tmp_path / "bad.txt")))  # fmt: skip
    with pytest.raises(DataError) as info:
        list(loader_over(ds, workers))
    error = worker_error(info.value)
    del info  # its traceback holds the loader: the workers stop now, not at a garbage collection
    assert str(error).startswith(f"{manifest.paths[2]}: cannot decode image")
    assert "Traceback" not in str(error) and "\n" not in str(error)
    assert not (tmp_path / "bad.txt").exists()


def test_decoding_options_are_checked():
    with pytest.raises(ConfigError, match=r"bad_images must be one of \['skip', 'fail'\], not 'ignore'"):
        Decoding(bad_images="ignore")


def test_worker_error_keeps_plain_errors():
    plain = DataError("x.png: no such file")
    assert worker_error(plain) is plain
