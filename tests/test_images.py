"""Tests of mlic.data.images: decoding every common image mode, transforms, datasets and Preprocessing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mlic.data.images import (
    AUGMENTATIONS,
    IMAGENET_MEAN,
    ImageDataset,
    Preprocessing,
    build_transform,
    pil_to_tensor,
    read_image,
)
from mlic.data.manifest import Manifest
from mlic.errors import DataError
from mlic.schema import Attribute, LabelSchema

SCHEMA = LabelSchema(("a", "b"), (Attribute("size", ("s", "l")),))


def rgb_array(h: int = 12, w: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def check_rgb_tensor(t: torch.Tensor, h: int, w: int) -> None:
    assert isinstance(t, torch.Tensor)
    assert t.dtype == torch.uint8
    assert t.shape == (3, h, w)


# -- read_image ------------------------------------------------------------------------------------
def test_read_rgb_png_is_lossless(tmp_path):
    a = rgb_array()
    Image.fromarray(a).save(tmp_path / "x.png")
    t = read_image(tmp_path / "x.png")
    check_rgb_tensor(t, 12, 10)
    np.testing.assert_array_equal(t.permute(1, 2, 0).numpy(), a)


def test_read_grayscale_repeats_the_channel(tmp_path):
    g = rgb_array()[:, :, 0]
    Image.fromarray(g, mode="L").save(tmp_path / "g.png")
    t = read_image(str(tmp_path / "g.png"))
    check_rgb_tensor(t, 12, 10)
    for c in range(3):
        np.testing.assert_array_equal(t[c].numpy(), g)


def test_read_palette(tmp_path):
    im = Image.new("P", (6, 4))
    im.putpalette([0, 0, 0, 200, 10, 30] + [0] * 762)
    im.putpixel((2, 1), 1)
    im.save(tmp_path / "p.png")
    with Image.open(tmp_path / "p.png") as check:
        assert check.mode == "P"
    t = read_image(tmp_path / "p.png")
    check_rgb_tensor(t, 4, 6)
    assert t[:, 1, 2].tolist() == [200, 10, 30]
    assert t[:, 0, 0].tolist() == [0, 0, 0]


def test_read_palette_with_transparency(tmp_path):
    im = Image.new("P", (4, 4))
    im.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    im.putpixel((0, 0), 1)
    im.info["transparency"] = 0
    im.save(tmp_path / "pt.png", transparency=0)
    t = read_image(tmp_path / "pt.png")
    check_rgb_tensor(t, 4, 4)
    assert t[:, 0, 0].tolist() == [200, 100, 50]


def test_read_rgba_drops_alpha(tmp_path):
    a = np.zeros((5, 7, 4), dtype=np.uint8)
    a[..., 0], a[..., 1], a[..., 2], a[..., 3] = 40, 80, 120, 128
    Image.fromarray(a, mode="RGBA").save(tmp_path / "x.png")
    t = read_image(tmp_path / "x.png")
    check_rgb_tensor(t, 5, 7)
    assert t[:, 3, 3].tolist() == [40, 80, 120]


def test_read_la(tmp_path):
    im = Image.new("LA", (5, 3), (90, 255))
    im.putpixel((1, 1), (200, 60))
    im.save(tmp_path / "la.png")
    with Image.open(tmp_path / "la.png") as check:
        assert check.mode == "LA"
    t = read_image(tmp_path / "la.png")
    check_rgb_tensor(t, 3, 5)
    assert t[:, 0, 0].tolist() == [90, 90, 90]
    assert t[:, 1, 1].tolist() == [200, 200, 200]


def test_read_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (10, 6), (0, 255, 255, 0)).save(tmp_path / "c.jpg")  # pure red in CMYK
    with Image.open(tmp_path / "c.jpg") as check:
        assert check.mode == "CMYK"
    t = read_image(tmp_path / "c.jpg")
    check_rgb_tensor(t, 6, 10)
    r, g, b = (int(v) for v in t[:, 3, 5])
    assert r > 230 and g < 25 and b < 25


def test_read_16_bit_grayscale(tmp_path):
    values = (np.arange(6 * 8, dtype=np.uint16).reshape(6, 8) * 1300).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as check:
        assert check.mode == "I;16"
    t = read_image(tmp_path / "deep.png")
    check_rgb_tensor(t, 6, 8)
    expected = (values / 256).astype(np.uint8)  # the high byte: 0-65535 maps onto 0-255
    for c in range(3):
        np.testing.assert_array_equal(t[c].numpy(), expected)
    assert int(t.max()) == 47 * 1300 // 256  # scaled, not clipped at 255


def test_read_exif_rotated_jpeg_is_transposed(tmp_path):
    # A 10 wide x 6 high image whose left column band is white; orientation 6 means
    # "rotate 90 degrees clockwise to display", so the band ends up on top.
    a = np.zeros((6, 10, 3), dtype=np.uint8)
    a[:, :3] = 255
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    t = read_image(tmp_path / "rot.jpg")
    check_rgb_tensor(t, 10, 6)  # H and W swapped
    assert t[:, :3].float().mean() > 200  # the white band is now the top rows
    assert t[:, 5:].float().mean() < 50


def test_read_image_without_exif_keeps_its_orientation(tmp_path):
    a = np.zeros((6, 10, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "plain.jpg")
    check_rgb_tensor(read_image(tmp_path / "plain.jpg"), 6, 10)


@pytest.mark.parametrize(
    "content", [b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20], ids=["text", "bad-png"]
)
def test_corrupt_file_names_the_path(tmp_path, content):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(DataError, match="cannot decode image") as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_truncated_file_names_the_path(tmp_path):
    Image.fromarray(rgb_array(64, 64)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as info:
        read_image(tmp_path / "cut.png")
    assert str(tmp_path / "cut.png") in str(info.value)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"nope\.png"):
        read_image(tmp_path / "nope.png")


def test_pil_to_tensor_rgb_and_one_bit():
    a = rgb_array()
    np.testing.assert_array_equal(pil_to_tensor(Image.fromarray(a)).permute(1, 2, 0).numpy(), a)
    bits = Image.new("1", (4, 3), 0)
    bits.putpixel((0, 0), 1)
    t = pil_to_tensor(bits)
    check_rgb_tensor(t, 3, 4)
    assert t[:, 0, 0].tolist() == [255, 255, 255] and t[:, 1, 1].tolist() == [0, 0, 0]


# -- build_transform -------------------------------------------------------------------------------
PRE = Preprocessing(image_size=(24, 32))


@pytest.mark.parametrize("augment", AUGMENTATIONS)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_transform_output_size_and_dtype(train, augment):
    torch.manual_seed(0)
    transform = build_transform(PRE, train=train, augment=augment)
    for h, w in [(50, 70), (24, 32), (9, 13)]:
        x = torch.from_numpy(rgb_array(h, w)).permute(2, 0, 1)
        y = transform(x)
        assert y.dtype == torch.uint8
        assert y.shape == (3, 24, 32)


def test_eval_transform_is_deterministic_and_resizes_only():
    x = torch.from_numpy(rgb_array(40, 40)).permute(2, 0, 1)
    transform = build_transform(Preprocessing(image_size=(40, 40)), train=False)
    torch.manual_seed(0)
    a = transform(x)
    torch.manual_seed(1)
    b = transform(x)
    assert torch.equal(a, b)
    assert torch.equal(a, x)  # resizing to its own size changes nothing


def test_train_augmentations_are_random():
    x = torch.from_numpy(rgb_array(40, 40)).permute(2, 0, 1)
    for augment in ("light", "shift"):
        transform = build_transform(Preprocessing(image_size=(40, 40)), train=True, augment=augment)
        torch.manual_seed(0)
        outputs = [transform(x) for _ in range(8)]
        assert any(not torch.equal(o, outputs[0]) for o in outputs[1:]), augment


def test_unknown_augmentation():
    with pytest.raises(DataError, match=r"unknown augmentation 'heavy'; expected one of \['light'"):
        build_transform(PRE, train=True, augment="heavy")


def asymmetric_image() -> torch.Tensor:
    """Bright left half, dark right half: mirroring swaps which half is bright."""
    x = torch.zeros(3, 32, 32, dtype=torch.uint8)
    x[:, :, :16] = 250
    return x


def left_is_brighter(y: torch.Tensor) -> bool:
    w = y.shape[-1]
    return bool(y[..., : w // 2].float().mean() > y[..., w // 2 :].float().mean())


@pytest.mark.parametrize("augment", ["light", "shift"])
def test_hflip_false_never_mirrors(augment):
    x = asymmetric_image()
    pre = Preprocessing(image_size=(32, 32), hflip=False)
    transform = build_transform(pre, train=True, augment=augment)
    torch.manual_seed(0)
    assert all(left_is_brighter(transform(x)) for _ in range(60))
    # With hflip on, the same seeds mirror a good share of the samples.
    transform = build_transform(Preprocessing(image_size=(32, 32), hflip=True), train=True, augment=augment)
    torch.manual_seed(0)
    mirrored = sum(not left_is_brighter(transform(x)) for _ in range(60))
    assert 10 <= mirrored <= 50


def test_augment_none_never_mirrors_even_with_hflip():
    x = asymmetric_image()
    for hflip in (True, False):
        transform = build_transform(
            Preprocessing(image_size=(32, 32), hflip=hflip), train=True, augment="none"
        )
        torch.manual_seed(0)
        assert all(torch.equal(transform(x), x) for _ in range(20))


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


# -- Preprocessing ---------------------------------------------------------------------------------
def test_preprocessing_defaults():
    pre = Preprocessing()
    assert pre.image_size == (224, 224) and pre.mean == IMAGENET_MEAN and pre.hflip is True


def test_preprocessing_round_trip_through_json():
    pre = Preprocessing(
        image_size=(48, 64), mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6), interpolation="bicubic", hflip=False
    )
    data = json.loads(json.dumps(pre.to_dict()))
    assert data["image_size"] == [48, 64]
    again = Preprocessing.from_dict(data)
    assert again == pre
    assert isinstance(again.image_size, tuple) and isinstance(again.mean, tuple)
    assert Preprocessing.from_dict(pre.to_dict()) == pre


def test_preprocessing_from_dict_ignores_unknown_keys_and_fills_defaults():
    pre = Preprocessing.from_dict({"image_size": [32, 32], "future_option": 1})
    assert pre == Preprocessing(image_size=(32, 32))


def test_interpolation_is_used():
    x = torch.from_numpy(rgb_array(9, 9)).permute(2, 0, 1)
    nearest = build_transform(Preprocessing(image_size=(27, 27), interpolation="nearest"))(x)
    bilinear = build_transform(Preprocessing(image_size=(27, 27), interpolation="bilinear"))(x)
    # Nearest upscaling by 3 repeats every pixel in a 3x3 block; bilinear blends them.
    assert torch.equal(nearest, x.repeat_interleave(3, 1).repeat_interleave(3, 2))
    assert not torch.equal(bilinear, nearest)
