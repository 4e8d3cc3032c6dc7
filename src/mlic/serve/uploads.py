"""Uploads for ``mlic serve``: a streamed multipart body read under limits, and images decoded safely.

The body goes through python-multipart's streaming parser and is counted as it
arrives, so an oversized upload is refused as soon as it passes the limit (at
once when its ``Content-Length`` says so). Files are held in memory, never
written to disk, and a file name is only cleaned and echoed back. Only PNG,
JPEG, GIF, BMP, TIFF and WebP reach Pillow (sniffed from the first bytes), and
they are decoded by ``mlic.data.images.decode_image``, as files are, the pixel
limit checked from the header before decoding. Every refusal is an
``ApiError`` that ``mlic.serve.app`` answers as JSON.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import torch
from PIL import Image
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from mlic.data.images import ImageFormatError, ImageTooLargeError, decode_image
from mlic.errors import DataError

FIELD = "files"
UPLOAD_FORMATS = ("PNG", "JPEG", "MPO", "GIF", "BMP", "TIFF", "WEBP")
"""Pillow formats accepted from clients (MPO: a camera JPEG with extra frames); others are never parsed."""
UPLOAD_MEDIA_TYPES = ("image/png", "image/jpeg", "image/gif", "image/bmp", "image/tiff", "image/webp")
"""What the OpenAPI document says a part may hold; the format is sniffed from the bytes, not its header."""
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
    (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
)  # fmt: skip


class ApiError(Exception):
    """A request the API refuses: answered with ``status`` and ``{"error": error, "detail": detail}``."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


# -- uploads ------------------------------------------------------------------------------
@dataclass
class Upload:
    """One uploaded file: its name as sent (cleaned; only ever echoed back) and its bytes."""

    filename: str | None
    data: bytearray = field(default_factory=bytearray)


class _Form:
    """python-multipart callbacks that keep the ``files`` parts in memory and enforce ``max_files``."""

    def __init__(self, max_files: int) -> None:
        self.max_files = max_files
        self.uploads: list[Upload] = []
        self.ended = False
        self._headers: dict[bytes, bytes] = {}
        self._name = self._value = b""

    def callbacks(self) -> dict:
        names = ("part_begin", "part_data", "header_field", "header_value", "header_end", "headers_finished")
        return {f"on_{n}": getattr(self, f"on_{n}") for n in (*names, "end")}

    def on_part_begin(self) -> None:
        self._headers = {}

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._name.strip().lower()] = self._value
        self._name = self._value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition"))
        name = options.get(b"name")
        if name is None:
            raise ApiError(400, "bad_multipart", "a part has no Content-Disposition header with a name")
        if name != FIELD.encode():
            shown = name.decode("utf-8", "replace")[:100]
            detail = f"unexpected form field {shown!r}; images go in '{FIELD}'"
            raise ApiError(400, "unexpected_field", detail)
        if len(self.uploads) == self.max_files:
            raise ApiError(413, "too_many_files", f"more than {self.max_files} files in one request")
        self.uploads.append(Upload(clean_filename(options.get(b"filename"))))

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self.uploads[-1].data += data[start:end]

    def on_end(self) -> None:
        self.ended = True


def clean_filename(raw: bytes | None) -> str | None:
    """The last component of a sent file name, without control characters, at most 255 characters.

    None if nothing is left, or only ``.`` or ``..``: no name that means a directory is echoed back.
    """
    if raw is None:
        return None
    name = re.sub(r"[\x00-\x1f\x7f]", "", raw.decode("utf-8", "replace"))
    name = PurePosixPath(name.replace("\\", "/")).name[:255]
    return name if name not in ("", ".", "..") else None


async def read_uploads(request: Request, max_upload_bytes: int, max_files: int) -> list[Upload]:
    """The ``files`` parts of a multipart body, read as it streams in and refused past the limits."""
    content_type, options = parse_options_header(request.headers.get("content-type"))
    if content_type.lower() != b"multipart/form-data":
        shown = content_type.decode("latin-1")[:100] or "none"
        raise ApiError(
            415, "unsupported_media_type", f"send images as multipart/form-data in '{FIELD}', not {shown}"
        )
    boundary = options.get(b"boundary")
    if not boundary:
        raise ApiError(400, "bad_multipart", "the multipart/form-data content type has no boundary")
    too_large = ApiError(413, "upload_too_large", f"the request body is over {max_upload_bytes:,} bytes")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_upload_bytes:
        raise too_large
    form, received = _Form(max_files), 0
    try:
        parser = MultipartParser(boundary, form.callbacks())
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_upload_bytes:
                raise too_large
            parser.write(chunk)
        parser.finalize()
    except FormParserError as e:
        raise ApiError(400, "bad_multipart", f"malformed multipart body ({e})") from None
    except ClientDisconnect:
        raise ApiError(400, "bad_multipart", "the client disconnected during the upload") from None
    if not form.ended:
        raise ApiError(400, "bad_multipart", "the multipart body ends before its closing boundary")
    if not form.uploads:
        raise ApiError(400, "no_files", f"no file: send one or more images in the form field '{FIELD}'")
    for i, upload in enumerate(form.uploads):
        if not upload.data:
            raise ApiError(400, "empty_file", f"{display_name(upload, i)}: the file is empty")
    return form.uploads


# -- decoding -----------------------------------------------------------------------------
def sniff_format(data: bytes | bytearray) -> str | None:
    """The image format that ``data`` starts like (one of ``UPLOAD_FORMATS``), or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in _MAGIC if data.startswith(magic)), None)


def decode_upload(upload: Upload, shown: str, max_pixels: int | None, min_side: int | None) -> torch.Tensor:
    """An uploaded image as a uint8 RGB tensor ``[3, H, W]``, by ``decode_image`` as files are decoded.

    Only the formats of ``UPLOAD_FORMATS`` reach Pillow (sniffed from the first
    bytes, then checked against what Pillow found), so no other plugin ever
    parses client data. No limit of ours (None) leaves Pillow's: the twice
    ``PIL.Image.MAX_IMAGE_PIXELS`` that Pillow refuses (``decode_image`` given
    None would lift Pillow's limit too, for the whole process).
    """
    if sniff_format(upload.data) is None:
        raise ApiError(415, "not_an_image", f"{shown}: not a PNG, JPEG, GIF, BMP, TIFF or WebP image")
    if max_pixels is None and Image.MAX_IMAGE_PIXELS:
        max_pixels = 2 * Image.MAX_IMAGE_PIXELS
    stream = io.BytesIO(upload.data)
    try:
        return decode_image(
            stream, min_side=min_side, max_pixels=max_pixels, formats=UPLOAD_FORMATS, name=shown
        )
    except ImageTooLargeError as e:
        raise ApiError(413, "image_too_large", str(e)) from None
    except ImageFormatError as e:
        raise ApiError(415, "not_an_image", str(e)) from None
    except DataError as e:
        raise ApiError(400, "corrupt_image", str(e)) from None


def display_name(upload: Upload, i: int) -> str:
    """How errors name an upload: its file name, or its place in the request."""
    return upload.filename or f"file {i + 1}"
