"""Example sets over HTTP: the web page's "Save as example" (``cleancut serve --examples DIR``).

Off by default. With ``--examples DIR`` the server stores each photo and its corrected mask in
DIR in the layout ``cleancut finetune`` reads (``im/<stem>.jpg`` + ``gt/<stem>.png``), atomically
and never overwriting (:func:`cleancut.examples.add_example`), and serves the set as a zip.

* ``GET /api/examples``: ``{"enabled": bool, "count": int, "zip": url or null,
  "max_upload_bytes": int}``; the page asks this once to choose between saving on the server and
  keeping the set in the browser (and building the zip itself, in the same format);
* ``POST /api/examples``: multipart/form-data with the photo as file field ``file`` (as it was
  uploaded to ``/api/remove``), the corrected mask as file field ``mask`` (a PNG at the photo's
  size: its alpha channel if it has one, else its gray levels; 255 = foreground) and an optional
  text field ``name`` (the photo's file name, which starts the stored name). 201 with ``{"stem",
  "photo", "mask", "count"}``; 404 ``examples_off`` when the server was started without
  ``--examples``; 413, 415, 400 as ``/api/remove`` for bodies and images; 422 ``mask_size`` when
  the mask's size is not the photo's, ``missing_image`` when a field is missing; 507
  ``examples_storage`` when the folder cannot be written;
* ``GET /api/examples/zip``: the set as ``examples.zip`` (``im/`` and ``gt/`` at its root).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse
from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from .. import io as cio
from ..errors import CleancutError, DatasetError
from ..examples import add_example, count_examples, write_zip
from .errors import ApiError, shown
from .routes import ERROR_RESPONSES, get_state
from .state import ServerState, api_error
from .uploads import PHOTO_FIELD, BodyTooLarge, capped_stream, check_content_length, check_image, client_gone, too_large

MASK_FIELD = "mask"
NAME_FIELD = "name"
EXAMPLE_UPLOAD = "a photo plus its mask"

router = APIRouter()


def _folder(state: ServerState) -> Path:
    folder = getattr(state.settings, "examples_dir", None)
    if folder is None:
        raise ApiError(404, "saving examples is off on this server: start it with cleancut serve --examples DIR to "
                            "store them there; otherwise keep the set in the page and download it as a zip.",
                       "examples_off")
    return Path(folder)


@router.get("/api/examples", summary="Whether this server stores examples (cleancut serve --examples DIR)")
async def examples_info(state: ServerState = Depends(get_state)):  # noqa: B008
    folder = getattr(state.settings, "examples_dir", None)
    count = await asyncio.to_thread(count_examples, folder) if folder is not None else 0
    return {"enabled": folder is not None, "count": count, "zip": "/api/examples/zip" if folder is not None else None,
            "max_upload_bytes": state.settings.max_upload_bytes}


async def _read_pair(request: Request, limit: int, held) -> tuple[bytes, bytes, str | None]:
    parser = MultiPartParser(request.headers, capped_stream(request, limit, held), max_files=2, max_fields=1)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise ApiError(400, f"cannot parse the multipart/form-data body: {exc}", "bad_multipart") from None
    files: dict[str, tuple[bytes, str | None]] = {}
    name = None
    try:
        for key, value in form.multi_items():
            if key in (PHOTO_FIELD, MASK_FIELD) and isinstance(value, UploadFile) and key not in files:
                files[key] = (await value.read(), value.filename)
            elif key == NAME_FIELD and isinstance(value, str) and name is None:
                name = value
            else:
                raise ApiError(422, f"unexpected form field {shown(key)}: send the photo as file '{PHOTO_FIELD}', the "
                                    f"mask as file '{MASK_FIELD}' and optionally the text '{NAME_FIELD}', once each.",
                               "unexpected_field")
    finally:
        await form.close()
    missing = [k for k in (PHOTO_FIELD, MASK_FIELD) if k not in files]
    if missing:
        raise ApiError(422, f"the body has no {' and no '.join(repr(m) for m in missing)} file field: send the photo as "
                            f"'{PHOTO_FIELD}' and its corrected mask (PNG, the photo's size) as '{MASK_FIELD}'.",
                       "missing_image")
    return files[PHOTO_FIELD][0], files[MASK_FIELD][0], name or files[PHOTO_FIELD][1]


def _store(folder: Path, photo: bytes, mask: bytes, name: str | None, max_pixels: int) -> tuple[str, int]:
    try:
        photo_image = cio.load_image(photo, max_pixels, "the photo")
        mask_image = cio.load_image(mask, max_pixels, "the mask")
    except CleancutError as exc:
        raise api_error(exc, "the upload") from None
    try:
        stem = add_example(folder, photo_image, mask_image, name)
    except DatasetError as exc:
        raise ApiError(422, str(exc), "mask_size") from None
    except OSError as exc:
        raise ApiError(507, f"the example could not be stored on the server ({exc.strerror or type(exc).__name__}); "
                            "nothing was written.", "examples_storage") from None
    return stem, count_examples(folder)


@router.post("/api/examples", summary="Store a photo and its corrected mask in the server's example set",
             status_code=201, responses={404: ERROR_RESPONSES[422] | {"description": "examples are off"},
                                         **ERROR_RESPONSES})
async def save_example(request: Request, state: ServerState = Depends(get_state)):  # noqa: B008
    folder = _folder(state)
    limit = state.settings.max_upload_bytes
    check_content_length(request, limit, EXAMPLE_UPLOAD)
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise ApiError(415, f"expected a multipart/form-data body with the files '{PHOTO_FIELD}' and '{MASK_FIELD}'.",
                       "unsupported_media_type")
    with state.uploads.hold() as held:
        try:
            photo, mask, name = await _read_pair(request, limit, held)
        except BodyTooLarge as exc:
            raise too_large(limit, exc.received, what=EXAMPLE_UPLOAD) from None
        except ClientDisconnect:
            raise client_gone() from None
        max_pixels = state.base.max_pixels
        check_image(photo, "the photo", max_pixels)
        check_image(mask, "the mask", max_pixels)
        stem, count = await asyncio.to_thread(_store, folder, photo, mask, name, max_pixels)
    return JSONResponse({"stem": stem, "photo": f"im/{stem}.jpg", "mask": f"gt/{stem}.png", "count": count},
                        status_code=201)


@router.get("/api/examples/zip", summary="The server's example set as a zip (im/ + gt/)", response_class=FileResponse)
async def examples_zip(state: ServerState = Depends(get_state)):  # noqa: B008
    folder = _folder(state)
    fd, name = tempfile.mkstemp(prefix="cleancut-examples-", suffix=".zip")
    os.close(fd)
    path = Path(name)
    try:
        await asyncio.to_thread(write_zip, folder, path)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return FileResponse(path, media_type="application/zip", filename="examples.zip",
                        headers={"Cache-Control": "no-store"}, background=BackgroundTask(path.unlink, missing_ok=True))
