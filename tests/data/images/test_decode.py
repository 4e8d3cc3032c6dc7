"""Tests of mlic.data.images.decode: image modes, EXIF orientation, pixel limits, draft decoding, fuzzing."""

from __future__ import annotations

import functools
import io
import struct
import tempfile
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st
from PIL import Image, features

from helpers import fuzz
from mlic.data.images.decode import EXIF_ORIENTATION, MAX_IMAGE_PIXELS, decode_image, pil_to_tensor
from mlic.data.images.transforms import (
    Preprocessing,
    build_transform,
    decode_size,
)
from mlic.errors import DataError, MlicError


def rgb_array(h: int = 12, w: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def check_rgb_tensor(t: torch.Tensor, h: int, w: int) -> None:
    assert isinstance(t, torch.Tensor)
    assert t.dtype == torch.uint8
    assert t.shape == (3, h, w)


# -- decode_image ------------------------------------------------------------------------------------
def test_read_rgb_png_is_lossless(tmp_path):
    a = rgb_array()
    Image.fromarray(a).save(tmp_path / "x.png")
    t = decode_image(tmp_path / "x.png")
    check_rgb_tensor(t, 12, 10)
    np.testing.assert_array_equal(t.permute(1, 2, 0).numpy(), a)


def test_read_grayscale_repeats_the_channel(tmp_path):
    g = rgb_array()[:, :, 0]
    Image.fromarray(g, mode="L").save(tmp_path / "g.png")
    t = decode_image(str(tmp_path / "g.png"))
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
    t = decode_image(tmp_path / "p.png")
    check_rgb_tensor(t, 4, 6)
    assert t[:, 1, 2].tolist() == [200, 10, 30]
    assert t[:, 0, 0].tolist() == [0, 0, 0]


def test_read_palette_with_transparency(tmp_path):
    im = Image.new("P", (4, 4))
    im.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    im.putpixel((0, 0), 1)
    im.info["transparency"] = 0
    im.save(tmp_path / "pt.png", transparency=0)
    t = decode_image(tmp_path / "pt.png")
    check_rgb_tensor(t, 4, 4)
    assert t[:, 0, 0].tolist() == [200, 100, 50]


def test_read_rgba_drops_alpha(tmp_path):
    a = np.zeros((5, 7, 4), dtype=np.uint8)
    a[..., 0], a[..., 1], a[..., 2], a[..., 3] = 40, 80, 120, 128
    Image.fromarray(a, mode="RGBA").save(tmp_path / "x.png")
    t = decode_image(tmp_path / "x.png")
    check_rgb_tensor(t, 5, 7)
    assert t[:, 3, 3].tolist() == [40, 80, 120]


def test_read_la(tmp_path):
    im = Image.new("LA", (5, 3), (90, 255))
    im.putpixel((1, 1), (200, 60))
    im.save(tmp_path / "la.png")
    with Image.open(tmp_path / "la.png") as check:
        assert check.mode == "LA"
    t = decode_image(tmp_path / "la.png")
    check_rgb_tensor(t, 3, 5)
    assert t[:, 0, 0].tolist() == [90, 90, 90]
    assert t[:, 1, 1].tolist() == [200, 200, 200]


def test_read_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (10, 6), (0, 255, 255, 0)).save(tmp_path / "c.jpg")  # pure red in CMYK
    with Image.open(tmp_path / "c.jpg") as check:
        assert check.mode == "CMYK"
    t = decode_image(tmp_path / "c.jpg")
    check_rgb_tensor(t, 6, 10)
    r, g, b = (int(v) for v in t[:, 3, 5])
    assert r > 230 and g < 25 and b < 25


def test_read_16_bit_grayscale(tmp_path):
    values = (np.arange(6 * 8, dtype=np.uint16).reshape(6, 8) * 1300).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as check:
        assert check.mode == "I;16"
    t = decode_image(tmp_path / "deep.png")
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
    t = decode_image(tmp_path / "rot.jpg")
    check_rgb_tensor(t, 10, 6)  # H and W swapped
    assert t[:, :3].float().mean() > 200  # the white band is now the top rows
    assert t[:, 5:].float().mean() < 50


def test_decode_image_without_exif_keeps_its_orientation(tmp_path):
    a = np.zeros((6, 10, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "plain.jpg")
    check_rgb_tensor(decode_image(tmp_path / "plain.jpg"), 6, 10)


@pytest.mark.parametrize(
    "content", [b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20], ids=["text", "bad-png"]
)
def test_corrupt_file_names_the_path(tmp_path, content):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(DataError, match="cannot decode image") as info:
        decode_image(path)
    assert str(path) in str(info.value)


def test_truncated_file_names_the_path(tmp_path):
    Image.fromarray(rgb_array(64, 64)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as info:
        decode_image(tmp_path / "cut.png")
    assert str(tmp_path / "cut.png") in str(info.value)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"nope\.png"):
        decode_image(tmp_path / "nope.png")


def test_pil_to_tensor_rgb_and_one_bit():
    a = rgb_array()
    np.testing.assert_array_equal(pil_to_tensor(Image.fromarray(a)).permute(1, 2, 0).numpy(), a)
    bits = Image.new("1", (4, 3), 0)
    bits.putpixel((0, 0), 1)
    t = pil_to_tensor(bits)
    check_rgb_tensor(t, 3, 4)
    assert t[:, 0, 0].tolist() == [255, 255, 255] and t[:, 1, 1].tolist() == [0, 0, 0]


# -- decoding: every image mode, orientation, limits ----------------------------------------------
def png_bytes(width: int, height: int, bit_depth: int, color_type: int, rows: bytes) -> bytes:
    """A PNG file written by hand, for layouts Pillow cannot write (16-bit RGB, absurd sizes)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def deep_grey() -> np.ndarray:
    return (np.arange(6 * 8, dtype=np.uint16).reshape(6, 8) * 1300).astype(np.uint16)


def saved(tmp_path, image: Image.Image, name: str, **options) -> str:
    image.save(tmp_path / name, **options)
    return str(tmp_path / name)


def test_every_mode_becomes_the_expected_rgb(tmp_path):
    """File mode -> expected uint8 RGB pixels; lossless formats exactly, JPEG within its error."""
    grey = rgb_array()[:, :, 0]
    high = (deep_grey() >> 8).astype(np.uint8)  # 16-bit keeps its high byte
    rgb = rgb_array()
    deep_rgb = (rgb.astype(np.uint16) * 256 + 200).astype(">u2")  # 16-bit RGB whose high bytes are ``rgb``
    rows = b"".join(b"\x00" + row.tobytes() for row in deep_rgb)
    (tmp_path / "rgb48.png").write_bytes(png_bytes(10, 12, 16, 2, rows))
    bits = np.zeros((4, 6), dtype=bool)
    bits[1, 2] = True
    grey3, high3 = np.repeat(grey[..., None], 3, 2), np.repeat(high[..., None], 3, 2)
    red = np.broadcast_to(np.array([255, 0, 0], np.uint8), (6, 10, 3))
    cases = [  # path, mode Pillow reads, expected [H, W, 3], tolerance
        (saved(tmp_path, Image.fromarray(grey), "l.png"), "L", grey3, 0),
        (saved(tmp_path, Image.fromarray(grey), "l.jpg", quality=95), "L", grey3, 12),
        (saved(tmp_path, Image.fromarray(bits), "bits.png"), "1", np.repeat(bits[..., None] * 255, 3, 2), 0),
        (saved(tmp_path, Image.fromarray(deep_grey()), "i16.png"), "I;16", high3, 0),
        (saved(tmp_path, Image.fromarray(deep_grey().astype(">u2")), "i16b.tif"), "I;16B", high3, 0),
        (saved(tmp_path, Image.fromarray(deep_grey().astype(np.int32)), "i32.tif"), "I", high3, 0),
        (str(tmp_path / "rgb48.png"), "RGB", rgb, 0),
        (saved(tmp_path, Image.fromarray(rgb).convert("CMYK"), "cmyk.tif"), "CMYK", rgb, 0),
        (saved(tmp_path, Image.new("CMYK", (10, 6), (0, 255, 255, 0)), "cmyk.jpg"), "CMYK", red, 12),
        (saved(tmp_path, Image.fromarray(np.dstack([rgb, grey])), "a.webp", lossless=True), "RGBA", rgb, 0),
        (saved(tmp_path, Image.fromarray(rgb).quantize(16), "p.gif"), "P", None, 0),
    ]
    with Image.open(tmp_path / "cmyk.jpg") as adobe:
        assert adobe.info.get("adobe") is not None  # Pillow writes Adobe's inverted CMYK
    for path, mode, expected, tolerance in cases:
        with Image.open(path) as im:
            assert im.mode == mode, path
            if expected is None:  # palette: the palette's colours
                expected = np.asarray(im.convert("RGB"))
        t = decode_image(path)
        assert t.dtype == torch.uint8 and t.shape == (3, *expected.shape[:2]), path
        diff = np.abs(t.permute(1, 2, 0).numpy().astype(int) - expected.astype(int))
        assert diff.max() <= tolerance, (path, diff.max())


def test_pa_lab_and_hsv_images_become_rgb():
    pa = Image.new("PA", (3, 2))
    pa.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pa.putpixel((1, 1), (1, 0))  # palette colour 1, fully transparent: the colour is kept
    assert pil_to_tensor(pa)[:, 1, 1].tolist() == [10, 200, 30]
    white = pil_to_tensor(Image.new("LAB", (2, 2), (255, 128, 128)))
    assert white.min() >= 250
    assert pil_to_tensor(Image.new("HSV", (2, 2), (0, 255, 255)))[:, 0, 0].tolist() == [255, 0, 0]


def test_float_images_are_read_without_crashing():
    t = pil_to_tensor(Image.fromarray(np.full((3, 4), 70.4, dtype=np.float32)))
    check_rgb_tensor(t, 3, 4)
    assert t.unique().tolist() == [70]


EXPECTED_ORIENTATION = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirrored left-right
    3: lambda a: a[::-1, ::-1],  # turned 180 degrees
    4: lambda a: a[::-1],  # mirrored top-bottom
    5: lambda a: a.transpose(1, 0, 2),  # mirrored along the main diagonal
    6: lambda a: np.rot90(a, -1),  # "turn 90 degrees clockwise to display"
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),  # mirrored along the other diagonal
    8: lambda a: np.rot90(a, 1),  # turn 90 degrees anticlockwise
}


@pytest.mark.parametrize("orientation", sorted(EXPECTED_ORIENTATION))
def test_every_exif_orientation_is_applied(tmp_path, orientation):
    from PIL import ImageOps

    a = rgb_array(4, 6, seed=orientation)
    image = Image.fromarray(a)
    exif = image.getexif()
    exif[EXIF_ORIENTATION] = orientation
    path = saved(tmp_path, image, "o.png", exif=exif)
    got = decode_image(path).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(got, EXPECTED_ORIENTATION[orientation](a))
    with Image.open(path) as im:
        np.testing.assert_array_equal(got, np.asarray(ImageOps.exif_transpose(im)))  # Pillow agrees


@pytest.mark.filterwarnings("ignore:Corrupt EXIF")
def test_a_broken_exif_block_leaves_the_pixels_readable(tmp_path):
    a = rgb_array(4, 6)
    path = saved(tmp_path, Image.fromarray(a), "e.png", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff")
    np.testing.assert_array_equal(decode_image(path).permute(1, 2, 0).numpy(), a)


def test_images_over_the_pixel_limit_are_refused_unread(tmp_path):
    path = saved(tmp_path, Image.fromarray(rgb_array(40, 50)), "big.png")
    with pytest.raises(DataError, match=r"big\.png: 50 x 40 = 2,000 pixels is more than the limit of 1,999"):
        decode_image(path, max_pixels=1999)
    check_rgb_tensor(decode_image(path, max_pixels=2000), 40, 50)


def test_a_decompression_bomb_header_is_refused_before_decoding(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bytes(30_000, 30_000, 1, 0, b"\x00"))  # 900 megapixels in 70 bytes
    assert bomb.stat().st_size < 200
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored afterwards
    with pytest.raises(DataError, match=r"bomb\.png: 900,000,000 pixels is more than the limit of 89,478,"):
        decode_image(bomb)  # Pillow refuses it first (above twice its limit), in mlic's words
    with pytest.raises(DataError, match=r"bomb\.png: 30000 x 30000 = 900,000,000 pixels is more than the"):
        decode_image(bomb, max_pixels=500_000_000)
    assert Image.MAX_IMAGE_PIXELS == 500_000_000  # raised to let mlic's own, higher limit decide


def test_pillows_lower_limit_still_counts_unless_a_higher_one_is_asked_for(tmp_path, monkeypatch):
    import warnings

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow: warn above 1,000, refuse above 2,000
    path = saved(tmp_path, Image.fromarray(rgb_array(50, 60)), "wide.png")  # 3,000 pixels
    with pytest.raises(DataError, match=r"wide\.png: 3,000 pixels is more than the limit of 2,000 pixels"):
        decode_image(path)  # the stricter limit, Pillow's, in mlic's words
    assert Image.MAX_IMAGE_PIXELS == 1000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_rgb_tensor(decode_image(path, max_pixels=5000), 50, 60)  # asked for: Pillow's is raised
        assert Image.MAX_IMAGE_PIXELS == 5000
        small = saved(tmp_path, Image.fromarray(rgb_array(30, 50)), "small.png")  # Pillow would warn
        check_rgb_tensor(decode_image(small, max_pixels=1600), 30, 50)


@pytest.mark.parametrize("fmt", ["jpg", "png"])
@pytest.mark.parametrize("keep", [0.3, 0.9])
def test_truncated_files_are_data_errors_naming_them(tmp_path, fmt, keep):
    full = saved(tmp_path, Image.fromarray(photo(96, 128)), f"full.{fmt}")
    data = Path(full).read_bytes()
    cut = tmp_path / f"cut.{fmt}"
    cut.write_bytes(data[: int(len(data) * keep)])
    for min_side in (None, 20):
        with pytest.raises(DataError, match="cannot decode image") as info:
            decode_image(cut, min_side=min_side)
        assert str(cut) in str(info.value)


# -- reduced-scale (draft) JPEG decoding -----------------------------------------------------------
def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth photo-like pixels (noise upsampled from a coarse grid), which JPEG keeps well."""
    grid = np.random.default_rng(seed).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(grid).resize((w, h), Image.Resampling.BICUBIC))


def test_draft_decoding_matches_full_decoding_after_the_resize(tmp_path):
    path = saved(tmp_path, Image.fromarray(photo(1200, 1600)), "large.jpg", quality=92)
    pre = Preprocessing(image_size=(224, 224))
    full, draft = decode_image(path), decode_image(path, min_side=decode_size(pre))
    assert full.shape == (3, 1200, 1600)
    assert draft.shape == (3, 300, 400)  # libjpeg at 1/4 scale, still above 269 on both sides
    transform = build_transform(pre)
    diff = (transform(full).float() - transform(draft).float()).abs()
    assert diff.mean() < 1.0 and diff.max() <= 6


def test_draft_decoding_never_goes_below_the_size_asked_for(tmp_path):
    for h, w, expected in [(537, 700, (537, 700)), (538, 1100, (269, 550)), (2200, 2200, (275, 275))]:
        path = saved(tmp_path, Image.fromarray(photo(h, w)), f"{h}x{w}.jpg")
        assert tuple(decode_image(path, min_side=269).shape[1:]) == expected


def test_draft_decoding_follows_exif_orientation(tmp_path):
    image = Image.fromarray(photo(600, 800))
    exif = image.getexif()
    exif[EXIF_ORIENTATION] = 6
    path = saved(tmp_path, image, "turned.jpg", exif=exif)
    assert tuple(decode_image(path, min_side=100).shape) == (3, 200, 150)  # 800 x 600 at 1/4, then turned


def test_draft_leaves_other_formats_at_full_size(tmp_path):
    path = saved(tmp_path, Image.fromarray(photo(300, 400)), "large.png")
    assert tuple(decode_image(path, min_side=50).shape) == (3, 300, 400)


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


OPTIONAL_CODECS = {"AVIF": "avif", "JPEG2000": "jpg_2000"}  # format -> Pillow feature that writes it


@functools.cache
def image_seeds() -> dict[str, bytes]:
    """Small valid files of every format and many modes, to mutate."""
    rgb = Image.fromarray(rgb_array(6, 5))
    exif = rgb.getexif()
    exif[EXIF_ORIENTATION] = 6
    palette = rgb.quantize(8)
    frames = {"save_all": True, "append_images": [rgb.rotate(90)]}
    return {
        "png": encoded(rgb, "PNG"),
        "png-exif": encoded(rgb, "PNG", exif=exif),
        "png-palette": encoded(palette, "PNG", transparency=0),
        "png-16": encoded(Image.fromarray(deep_grey()), "PNG"),
        "png-la": encoded(rgb.convert("LA"), "PNG"),
        "apng": encoded(rgb, "PNG", **frames),
        "jpeg-exif": encoded(rgb, "JPEG", exif=exif),
        "jpeg-progressive": encoded(rgb.convert("L"), "JPEG", progressive=True),
        "jpeg-cmyk": encoded(rgb.convert("CMYK"), "JPEG"),
        "gif": encoded(palette, "GIF", **frames),
        "bmp": encoded(rgb, "BMP"),
        "bmp-1bit": encoded(rgb.convert("1"), "BMP"),
        "tiff": encoded(rgb, "TIFF", exif=exif),
        "tiff-lzw": encoded(rgb, "TIFF", compression="tiff_lzw", **frames),
        "tiff-jpeg": encoded(rgb, "TIFF", compression="jpeg"),
        "tiff-16": encoded(Image.fromarray(deep_grey().astype(">u2")), "TIFF", compression="tiff_deflate"),
        "webp": encoded(rgb, "WEBP", exif=exif),
        "webp-lossless": encoded(rgb.convert("RGBA"), "WEBP", lossless=True, **frames),
        **{fmt.lower(): encoded(rgb, fmt) for fmt, codec in OPTIONAL_CODECS.items() if features.check(codec)},
        # formats that Pillow identifies by content, whatever the file's suffix
        **{fmt.lower(): encoded(rgb, fmt) for fmt in ("ICO", "TGA", "PCX", "PPM", "SGI", "DDS")},
        "spider": encoded(rgb.convert("F"), "SPIDER"),
        "xbm": encoded(rgb.convert("1"), "XBM"),
        "psd-like": b"8BPS\x00\x01" + b"\x00" * 20,
    }


MAGIC = [
    b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00", b"GIF89a", b"GIF87a",
    b"BM", b"II*\x00", b"MM\x00*", b"II+\x00",
    b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"RIFF\xff\xff\xff\xffWEBPVP8L",
    b"RIFF\x10\x00\x00\x00WEBPVP8X", b"\x00\x00\x01\x00", b"8BPS", b"P6\n", b"\x00\x00\x00\x0cjP  \r\n\x87\n",
]  # fmt: skip


SIZES = [0, 1, 2, 255, 65535, 65536, 100_000, 2**31 - 1, 2**31, 2**32 - 1]  # 2**31: negative in BMP


HEADERS = {  # seed -> where it declares its width and height: (marker, offset after it, struct layout)
    "png": (b"IHDR", 4, ">II"),
    "bmp": (b"BM", 18, "<II"),
    "gif": (b"GIF8", 6, "<HH"),
    "jpeg-exif": (b"\xff\xc0", 5, ">HH"),
    "jpeg-progressive": (b"\xff\xc2", 5, ">HH"),
    "webp": (b"VP8 ", 14, "<HH"),
}


@st.composite
def corrupt_images(draw) -> bytes:
    """Valid files mutated (truncated, bit flips, bytes replaced or inserted), absurd declared sizes,
    or random bytes after a format's magic number."""
    kind = draw(st.sampled_from(["mutated", "mutated", "mutated", "size", "magic"]))
    if kind == "magic":
        return draw(st.sampled_from(MAGIC)) + draw(st.binary(max_size=200))
    if kind == "size":
        name = draw(st.sampled_from(sorted(HEADERS)))
        data = bytearray(image_seeds()[name])
        marker, offset, layout = HEADERS[name]
        at, bits = data.find(marker) + offset, 4 * struct.calcsize(layout)
        w, h = (draw(st.sampled_from(SIZES)) % 2**bits for _ in "wh")
        data[at : at + struct.calcsize(layout)] = struct.pack(layout, w, h)
        if marker == b"IHDR":  # a valid checksum, or Pillow refuses the chunk before reading the size
            data[at + 13 : at + 17] = struct.pack(">I", zlib.crc32(data[at - 4 : at + 13]))
        return bytes(data)
    data = bytearray(image_seeds()[draw(st.sampled_from(sorted(image_seeds())))])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["truncate", "flip", "replace", "insert", "delete"]))
        i = draw(st.integers(0, len(data)))
        if op == "truncate":
            del data[i:]
        elif op == "flip" and i < len(data):
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "replace":
            data[i : i + 4] = draw(
                st.binary(min_size=1, max_size=4) | st.sampled_from([b"\xff" * 4, b"\0" * 4])
            )
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 16))]
    return bytes(data)


def decode_or_error(path: Path, **options) -> torch.Tensor | None:
    """``decode_image``'s tensor, checked; None when it raised an MlicError naming ``path``; else fail."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = decode_image(path, **options)
    except MlicError as e:
        assert str(path) in str(e), f"the error does not name {path}: {e}"
        return None
    assert t.dtype == torch.uint8 and t.ndim == 3 and t.shape[0] == 3 and min(t.shape) > 0
    assert t.shape[1] * t.shape[2] <= options.get("max_pixels", MAX_IMAGE_PIXELS)
    return t


@fuzz(1200)
@given(
    data=corrupt_images(),
    suffix=st.sampled_from([".png", ".jpg", ".gif", ".tif", ".webp", ".bmp"]),
    min_side=st.sampled_from([None, 2, 64]),
    max_pixels=st.sampled_from([MAX_IMAGE_PIXELS, 1000]),
)
def test_fuzz_corrupt_images_decode_or_name_the_file(data, suffix, min_side, max_pixels):
    """Corrupt files of every format (suffix and content need not agree), at full or draft scale."""
    note(f"{suffix}: {data!r}")  # the file's bytes: some Hypothesis installs print blank arguments
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"image{suffix}"
        path.write_bytes(data)
        decode_or_error(path, min_side=min_side, max_pixels=max_pixels)


ORIENTATIONS = st.integers(-(2**31), 2**32) | st.sampled_from(
    [0, 1, 6, 8, 9, 255, 65535, 6.0, 2.5, "6", b"6", (6, 6)]
)


@fuzz(400)
@given(
    orientation=ORIENTATIONS,
    raw=st.none() | st.binary(max_size=64),
    fmt=st.sampled_from(["JPEG", "PNG", "WEBP", "TIFF"]),
)
def test_fuzz_exif_garbage_keeps_the_pixels_readable(orientation, raw, fmt):
    """Any EXIF orientation value, or random bytes as EXIF: the pixels decode, or the error names the file."""
    note(f"{fmt}: orientation {orientation!r}, raw {raw!r}")
    image = Image.fromarray(rgb_array(4, 6))
    exif = image.getexif()
    exif[EXIF_ORIENTATION] = orientation
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"exif.{fmt.lower()}"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                image.save(path, fmt, exif=b"Exif\x00\x00" + raw if raw is not None else exif)
        except Exception:  # Pillow cannot write that value (its writers raise many types): nothing to read
            return
        t = decode_or_error(path)
        if t is not None:
            assert sorted(t.shape[1:]) == [4, 6]


# Regressions that the fuzzing found: each raised something other than an MlicError.
@pytest.mark.parametrize(("width", "height"), [(2**31, 1), (2**32 - 1, 2**32 - 1), (1, 2**31 - 1)])
def test_headers_beyond_memory_without_a_pixel_limit_are_data_errors(tmp_path, monkeypatch, width, height):
    """Without a pixel limit, Pillow raised OverflowError (a side beyond a C int) or MemoryError."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # decode_image(None) lifts it
    path = tmp_path / "huge.png"
    path.write_bytes(png_bytes(width, height, 8, 0, b"\x00"))
    with pytest.raises(DataError, match="cannot decode image") as info:
        decode_image(path, max_pixels=None)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("fmt", "marker", "offset", "value", "words"),
    [
        ("DDS", b"DDS ", 80, struct.pack("<I", 0x4000), "Unknown pixel format flags 16384"),  # its flags
        ("AVIF", b"pitm", 8, b"\x07\x07", "Missing or empty image item"),  # the primary item's id
    ],
    ids=["dds", "avif"],
)
def test_runtime_errors_of_pillow_plugins_are_data_errors(tmp_path, fmt, marker, offset, value, words):
    """Pillow's DDS reader raised NotImplementedError for a pixel format it does not know, and its AVIF
    decoder RuntimeError for a damaged file."""
    if not features.check(OPTIONAL_CODECS.get(fmt, "zlib")):
        pytest.skip(f"this Pillow has no {fmt} codec")
    data = bytearray(encoded(Image.new("RGB", (5, 6)), fmt))
    at = data.find(marker) + offset
    data[at : at + len(value)] = value
    path = tmp_path / "photo.png"  # Pillow goes by the content
    path.write_bytes(data)
    with pytest.raises(DataError, match=rf"photo\.png: cannot decode image \(.*{words}"):
        decode_image(path)
