"""Tests of mlic.serve.uploads: names echoed only, any upload answered, sizes and pixels refused unread."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import io
import json
import os
import struct
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from helpers import MAX_BYTES, upload
from mlic.serve import create_app


def _multipart(body: bytes, boundary: str = "b0undary") -> dict:
    return {"content": body, "headers": {"content-type": f"multipart/form-data; boundary={boundary}"}}


def test_file_names_are_only_echoed_back(client, digit_files):
    png = digit_files["paths"][0].read_bytes()
    names = ["../../etc/passwd", "C:\\Windows\\win.ini", "x" * 400]
    parts = [("files", (name, png, "image/png")) for name in names]
    paths = [r["path"] for r in client.post("/predict", files=parts).json()["predictions"]]
    assert paths == ["passwd", "win.ini", "x" * 255]
    raw = [b'filename="a\x01b\x7f\x1bc.png"', b""]  # control characters as sent; no file name at all
    body = b"".join(b'--b0undary\r\nContent-Disposition: form-data; name="files"; ' + name + b"\r\n\r\n"
                    + png + b"\r\n" for name in raw) + b"--b0undary--\r\n"  # fmt: skip
    paths = [r["path"] for r in client.post("/predict", **_multipart(body)).json()["predictions"]]
    assert paths == ["abc.png", None]


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow's, for random bytes behind a TIFF header
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    prefix=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"II*\x00",
                            b"RIFF\0\0\0\0WEBP"]),
    tail=st.binary(max_size=300),
    cut=st.floats(0, 1),
    top_k=st.one_of(st.none(), st.integers(-3, 10**20).map(str), st.text(max_size=5)),
)  # fmt: skip
def test_any_upload_is_answered_without_a_5xx(client, digit_files, prefix, tail, cut, top_k):
    """Random bytes behind each accepted format's signature, cut real PNGs, odd query values."""
    png = digit_files["paths"][1].read_bytes()
    for data in (prefix + tail, png[: int(cut * len(png))] + tail):
        params = {} if top_k is None else {"top_k": top_k}
        answer = client.post("/predict", params=params, files=[("files", ("f", data, "image/png"))])
        assert answer.status_code < 500, answer.text
        keys = {"predictions", "decision"} if answer.is_success else {"error", "detail"}
        assert set(answer.json()) == keys


# -- security: no path of the client's choosing, bounded uploads and pixels ---------------------
@contextlib.contextmanager
def file_access() -> Iterator[list[str]]:
    """While open, records every file that any thread of this process opens, creates, moves or removes.

    Spies on ``open`` (``builtins``, ``io``, ``os``, ``pathlib.Path``), the
    file-system calls of ``os``, the makers of temporary files in
    ``tempfile``, and ``PIL.Image.open`` given anything but a stream. The
    calls still happen; the list says which were made.
    """
    seen: list[str] = []

    def spy(owner, name: str):
        function = getattr(owner, name)

        @functools.wraps(function)
        def recorded(*args, **kwargs):
            target = args[0] if args else next(iter(kwargs.values()), None)
            if not (owner is Image and hasattr(target, "read")):
                seen.append(f"{owner.__name__}.{name}({target!r})")
            return function(*args, **kwargs)

        return recorded

    os_calls = ("open", "mkdir", "makedirs", "remove", "unlink", "rename", "replace", "rmdir", "symlink")
    makers = ("mkstemp", "mkdtemp", "NamedTemporaryFile", "TemporaryFile", "SpooledTemporaryFile")
    watched = [(builtins, "open"), (io, "open"), (Path, "open"), (Image, "open")]
    watched += [(os, name) for name in os_calls] + [(tempfile, name) for name in makers]
    with pytest.MonkeyPatch.context() as patch:
        for owner, name in watched:
            patch.setattr(owner, name, spy(owner, name))
        yield seen


def post_in_chunks(app, headers: dict[str, str], chunks: Iterator[bytes]) -> tuple[int, dict, int]:
    """``POST /predict`` straight to the ASGI app, which pulls the body chunk by chunk.

    Returns the status, the JSON answer and how many chunks the app read.
    """
    read, sent = 0, []

    async def receive() -> dict:
        nonlocal read
        chunk = next(chunks, None)
        if chunk is not None:
            read += 1
        return {"type": "http.request", "body": chunk or b"", "more_body": chunk is not None}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/predict", "raw_path": b"/predict", "root_path": "", "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 1), "server": ("testserver", 80),
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body), read


def test_an_oversized_upload_is_refused_unread_and_never_touches_disk(client):
    """Refused from its Content-Length before a byte is read; streamed, as soon as it passes the limit."""
    chunk, total = 2**16, 100 * 2**16  # 6.5 MB against a limit of 200 kB
    multipart = {"Content-Type": "multipart/form-data; boundary=b0undary"}

    def body() -> Iterator[bytes]:
        yield b"--b0undary\r\nContent-Disposition: form-data; name=files; filename=x.png\r\n\r\n"
        yield from (b"\x89PNG" + b"\0" * (chunk - 4) for _ in range(total // chunk))

    with file_access() as seen:
        declared = post_in_chunks(client.app, {**multipart, "Content-Length": str(total)}, body())
        streamed = post_in_chunks(client.app, multipart, body())
    assert seen == []
    for status, answer, _ in (declared, streamed):
        assert (status, answer["error"]) == (413, "upload_too_large")
    assert declared[2] == 0
    assert streamed[2] == 1 + MAX_BYTES // chunk + 1  # the part's headers, then the chunks up to the limit


def declared_size(fmt: str, width: int, height: int) -> bytes:
    """A file of a few hundred bytes whose header says ``width`` x ``height`` pixels: a decompression bomb."""
    if fmt == "PNG":

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
        ihdr, idat = chunk(b"IHDR", header), chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        return b"\x89PNG\r\n\x1a\n" + ihdr + idat + chunk(b"IEND", b"")
    buffer = io.BytesIO()
    options = {"TIFF": {"compression": "tiff_lzw"}, "WEBP": {"lossless": True}}.get(fmt, {})
    Image.new("L", (4, 4), 7).save(buffer, fmt, **options)
    data = bytearray(buffer.getvalue())
    if fmt == "GIF":  # the logical screen
        data[6:10] = struct.pack("<HH", width, height)
    elif fmt == "BMP":
        data[18:26] = struct.pack("<ii", width, height)
    elif fmt == "JPEG":  # the start-of-frame segment
        sof = data.index(b"\xff\xc0")
        data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    elif fmt == "TIFF":  # ImageWidth and ImageLength in the first directory, made LONGs
        ifd = struct.unpack("<I", data[4:8])[0]
        for entry in range(ifd + 2, ifd + 2 + 12 * struct.unpack("<H", data[ifd : ifd + 2])[0], 12):
            tag = struct.unpack("<H", data[entry : entry + 2])[0]
            if tag in (256, 257):
                data[entry + 2 : entry + 12] = struct.pack("<HII", 4, 1, width if tag == 256 else height)
    elif fmt == "WEBP":  # the 14-bit sizes of the lossless bitstream
        at = data.index(b"VP8L") + 9
        rest = struct.unpack("<I", data[at : at + 4])[0] & ~(2**28 - 1)
        data[at : at + 4] = struct.pack("<I", (width - 1) | (height - 1) << 14 | rest)
    return bytes(data)


LARGEST = {"PNG": 100_000, "JPEG": 65_500, "GIF": 65_535, "BMP": 100_000, "TIFF": 100_000, "WEBP": 16_384}
"""A side each format's header can declare that makes a square over Pillow's own bomb limit too."""


def spy_on_loads(patch: pytest.MonkeyPatch) -> list[str]:
    """Every ``load`` of every Pillow image class (which decodes, into a pixel buffer) says it ran."""
    Image.init()  # every plugin imported
    calls: list[str] = []

    def spy(load):
        def recorded(self, *args, **kwargs):
            calls.append(type(self).__name__)
            return load(self, *args, **kwargs)

        return recorded

    classes = [Image.Image]
    for cls in classes:
        classes += [sub for sub in cls.__subclasses__() if sub not in classes]
        if "load" in vars(cls):
            patch.setattr(cls, "load", spy(vars(cls)["load"]))
    return calls


@pytest.mark.parametrize("fmt", list(LARGEST))
@pytest.mark.parametrize("scale", ["over our limit", "over Pillow's too"])
def test_a_decompression_bomb_is_refused_from_its_header(client, fmt, scale):
    """A tiny file that declares more pixels than the limit: 413, and not a pixel decoded or allocated."""
    side = LARGEST[fmt] if scale == "over Pillow's too" else 2_000  # the client's limit: 1,000,000 pixels
    data = declared_size(fmt, side, side)
    assert len(data) < 2_000
    with pytest.MonkeyPatch.context() as patch:
        loads = spy_on_loads(patch)
        answer = client.post("/predict", files=[("files", (f"bomb.{fmt.lower()}", data, "image/png"))])
    assert answer.status_code == 413, answer.text
    assert answer.json()["error"] == "image_too_large"
    assert f"{side * side:,} pixels is more than the limit of 1,000,000" in answer.json()["detail"]
    assert loads == []


def test_with_no_pixel_limit_of_ours_pillows_still_holds(predictor, digit_files, monkeypatch):
    """``max_image_pixels=None`` (``--max-image-pixels 0``) leaves Pillow's limit, and leaves it in place.

    It used to reach ``open_image`` as None, which lifted Pillow's limit for the
    whole process at the first upload: a header could then ask for any size.
    """
    pillow = Image.MAX_IMAGE_PIXELS
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pillow)  # restored whatever happens
    bomb = declared_size("PNG", 14_000, 14_000)  # 196,000,000 pixels: over Pillow's limit, yet allocatable
    with TestClient(create_app(predictor, max_image_pixels=None)) as unlimited:
        assert unlimited.post("/predict", files=upload(digit_files["paths"][0])).status_code == 200
        assert pillow == Image.MAX_IMAGE_PIXELS
        loads = spy_on_loads(monkeypatch)
        answer = unlimited.post("/predict", files=[("files", ("bomb.png", bomb, "image/png"))])
    assert answer.status_code == 413, answer.text
    assert f"196,000,000 pixels is more than the limit of {2 * pillow:,}" in answer.json()["detail"]
    assert loads == [] and pillow == Image.MAX_IMAGE_PIXELS
