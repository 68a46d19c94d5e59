"""Request bodies: read with a byte cap, split into the photo, an optional background picture and
form fields, and checked to be images by their bytes (never by the declared content type)."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import AsyncIterator

from PIL import Image, UnidentifiedImageError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from ..errors import ConfigError
from ..io import DECODE_ERRORS, gif_canvas_size
from .errors import ApiError, shown
from .options import check_names, upload_options, value_options
from .state import Held

IMAGE_KINDS = "JPEG, PNG, WebP, GIF, BMP or TIFF"
PHOTO_FIELD = "file"


@dataclass
class Upload:
    """What a request sent: the photo, the uploads by option name, and option values."""

    data: bytes
    filename: str | None = None
    files: dict[str, tuple[bytes, str | None]] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)


class BodyTooLarge(Exception):
    def __init__(self, received: int):
        self.received = received


def mib(n: int) -> str:
    return f"{n / (1024 * 1024):.3g} MiB"


PHOTO_UPLOAD = "the photo plus any background picture"


def too_large(limit: int, received: int | None = None, declared: bool = False, what: str = PHOTO_UPLOAD) -> ApiError:
    sent = (f"declares {received} bytes ({mib(received)})" if declared else
            f"sent more than {limit} bytes" if received is not None else "is too large")
    return ApiError(
        413, f"request body {sent}; the limit is {limit} bytes ({mib(limit)}) for {what}. Send a "
             "smaller or more compressed file.",
        "upload_too_large", limit_bytes=limit, received_bytes=received)


def check_content_length(request: Request, limit: int, what: str = PHOTO_UPLOAD) -> None:
    """413 at once when the declared body is over the limit (nothing is read)."""
    text = request.headers.get("content-length")
    if text is None:
        return
    try:
        declared = int(text)
    except ValueError:
        raise ApiError(400, f"invalid Content-Length header {shown(text)}; expected a number of bytes.",
                       "bad_content_length") from None
    if declared > limit:
        raise too_large(limit, declared, declared=True, what=what)


async def capped_stream(request: Request, limit: int, held: Held | None = None) -> AsyncIterator[bytes]:
    """The body's chunks; BodyTooLarge as soon as more than ``limit`` bytes arrived. Each chunk is
    counted in ``held``, its share of a byte budget (503 when the budget is spent)."""
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise BodyTooLarge(total)
        if held is not None:
            held.add(len(chunk))
        if chunk:
            yield chunk


def client_gone() -> ApiError:
    """The answer to a client that disconnected before its whole body arrived (it will not read
    it; the access log shows it as a 400)."""
    return ApiError(400, "the client disconnected before sending the whole request body.", "client_disconnected")


async def read_upload(request: Request, limit: int, held: Held | None = None) -> Upload:
    """Read the body (at most ``limit`` bytes, 413 beyond; each chunk counted in ``held``):
    multipart with field ``file`` (plus upload options and option fields), or any other content
    type as the raw image."""
    content_type = request.headers.get("content-type", "").lower()
    try:
        if content_type.startswith("multipart/form-data"):
            return await _read_multipart(request, limit, held)
        data = bytearray()
        async for chunk in capped_stream(request, limit, held):
            data += chunk
        return Upload(bytes(data))
    except BodyTooLarge as exc:
        raise too_large(limit, exc.received) from None
    except ClientDisconnect:
        raise client_gone() from None


async def _read_multipart(request: Request, limit: int, held: Held | None) -> Upload:
    n_uploads = 1 + len(upload_options())
    parser = MultiPartParser(request.headers, capped_stream(request, limit, held), max_files=n_uploads,
                             max_fields=len(value_options()) + 4)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise ApiError(400, f"cannot parse the multipart/form-data body: {exc}", "bad_multipart") from None
    upload = Upload(b"")
    photo_seen = False
    try:
        uploads = {i.name for i in upload_options()}
        for name, value in form.multi_items():
            if name == PHOTO_FIELD or name in uploads:
                if not isinstance(value, UploadFile):
                    raise ConfigError(f"form field '{name}' must be a file upload (an image), got a "
                                      "text value.")
                if (name == PHOTO_FIELD and photo_seen) or name in upload.files:
                    raise ConfigError(f"form field '{name}' was sent more than once; send one image per "
                                      "request.")
                data = await value.read()
                if name == PHOTO_FIELD:
                    photo_seen = True
                    upload.data, upload.filename = data, value.filename
                else:
                    upload.files[name] = (data, value.filename)
                continue
            check_names([name], "form field")
            if isinstance(value, UploadFile):
                raise ConfigError(f"form field '{name}' is an option value; expected text, got a file.")
            if name in upload.values:
                raise ConfigError(f"form field '{name}' was given more than once; expected it once.")
            upload.values[name] = value
    finally:
        await form.close()
    if not photo_seen:
        raise ApiError(422, f"the multipart body has no '{PHOTO_FIELD}' field; send the photo as the "
                            f"file field '{PHOTO_FIELD}' (or as the raw request body).", "missing_image")
    return upload


def sniff_image(head: bytes) -> str | None:
    """The image MIME type by magic number, or None when the bytes are not a supported image."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:2] == b"BM" and len(head) >= 14:
        return "image/bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    return None


def describe_bytes(head: bytes) -> str:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"binary data starting with {head[:8].hex(' ')}"
    if all(c.isprintable() or c.isspace() for c in text):
        return f"text starting with {text[:24]!r}"
    return f"binary data starting with {head[:8].hex(' ')}"


def check_image(data: bytes, what: str, max_pixels: int) -> tuple[str, tuple[int, int]]:
    """Sniff and read the header of an uploaded image (nothing is decoded): 415 when the bytes
    are not an image, 400 when the header is corrupt, 413 above ``max_pixels``. Returns the
    MIME type and (width, height)."""
    if not data:
        raise ApiError(400, f"{what} is empty: expected an image ({IMAGE_KINDS}), found 0 bytes.",
                       "empty_image")
    mime = sniff_image(data[:16])
    if mime is None:
        raise ApiError(415, f"{what} is not a supported image: expected {IMAGE_KINDS}, found "
                            f"{describe_bytes(data[:32])}.", "unsupported_media_type")
    canvas = gif_canvas_size(io.BytesIO(data)) if mime == "image/gif" else None
    if canvas is not None:  # checked before Image.open, which allocates a GIF's first frame
        _check_pixels(what, *canvas, max_pixels)
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except Image.DecompressionBombError:  # Pillow's own, far larger, limit: say the server's
        raise ApiError(413, f"{what} has far more pixels than this server's limit of {max_pixels / 1e6:.1f} "
                            "megapixels (its header claims a decompression bomb). Downscale it first.",
                       "too_many_pixels", max_pixels=max_pixels) from None
    except UnidentifiedImageError:
        raise ApiError(400, f"{what} starts like {mime} but its header cannot be read; the file is "
                            "corrupt or truncated.", "corrupt_image") from None
    except DECODE_ERRORS as exc:
        raise ApiError(400, f"{what} starts like {mime} but its header cannot be read ({type(exc).__name__}: "
                            f"{exc}); the file is corrupt or truncated.", "corrupt_image") from None
    if width <= 0 or height <= 0:
        raise ApiError(400, f"{what} has no pixels (size {width}x{height}).", "corrupt_image")
    _check_pixels(what, width, height, max_pixels)
    return mime, (width, height)


def _check_pixels(what: str, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ApiError(
            413, f"{what} is {width}x{height} = {width * height / 1e6:.1f} megapixels, above this "
                 f"server's limit of {max_pixels / 1e6:.1f} megapixels. Downscale it first.",
            "too_many_pixels", width=width, height=height, max_pixels=max_pixels)
