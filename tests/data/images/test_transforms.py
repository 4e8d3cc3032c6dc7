"""Tests of mlic.data.images.transforms: Preprocessing, the resize and the augmentations."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mlic.data.images.transforms import (
    AUGMENTATIONS,
    IMAGENET_MEAN,
    Preprocessing,
    build_transform,
    decode_size,
)
from mlic.errors import DataError


def rgb_array(h: int = 12, w: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


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
    for augment in ("light", "trivial", "shift"):
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
    # an artifact written before `resize` existed stretched its images
    assert pre == Preprocessing(image_size=(32, 32), resize="squash")
    assert Preprocessing.from_dict({"image_size": [32, 32], "resize": "crop"}).resize == "crop"


def test_crop_resize_keeps_the_aspect_and_the_centre():
    # a 3:2 image whose left and right thirds are 0 and whose middle third is 255
    image = torch.zeros(3, 40, 60, dtype=torch.uint8)
    image[:, :, 20:40] = 255
    cropped = build_transform(Preprocessing(image_size=(20, 20), resize="crop"))(image)
    squashed = build_transform(Preprocessing(image_size=(20, 20), resize="squash"))(image)
    assert cropped.shape == squashed.shape == (3, 20, 20)
    # crop: the centre 40x40 scaled to 20x20 holds the bright third in its middle half only
    assert cropped[:, :, 7:13].float().mean() == 255 and cropped[:, :, :3].float().mean() == 0
    # squash: all three thirds, so the bright band is narrower
    assert (squashed[0, 0] > 127).sum() < (cropped[0, 0] > 127).sum()


@pytest.mark.parametrize("size", [(20, 30), (30, 20), (25, 25)])
def test_crop_resize_covers_any_input_shape(size):
    image = torch.randint(0, 256, (3, 37, 53), dtype=torch.uint8)
    out = build_transform(Preprocessing(image_size=size, resize="crop"))(image)
    assert tuple(out.shape) == (3, *size)


def test_unknown_resize_is_refused():
    with pytest.raises(DataError, match="resize"):
        build_transform(Preprocessing(image_size=(8, 8), resize="stretch"))


def test_interpolation_is_used():
    x = torch.from_numpy(rgb_array(9, 9)).permute(2, 0, 1)
    nearest = build_transform(Preprocessing(image_size=(27, 27), interpolation="nearest"))(x)
    bilinear = build_transform(Preprocessing(image_size=(27, 27), interpolation="bilinear"))(x)
    # Nearest upscaling by 3 repeats every pixel in a 3x3 block; bilinear blends them.
    assert torch.equal(nearest, x.repeat_interleave(3, 1).repeat_interleave(3, 2))
    assert not torch.equal(bilinear, nearest)


def test_decode_size_leaves_room_for_random_resized_crops():
    assert decode_size(Preprocessing(image_size=(224, 224))) == 269
    assert decode_size(Preprocessing(image_size=(32, 48))) == 58
    # The smallest crop light augmentation takes spans 0.85 of the shorter side, still above the input.
    assert decode_size(Preprocessing()) * 0.85 >= 224
