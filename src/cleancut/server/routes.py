"""The HTTP routes of ``cleancut serve``, on one :class:`fastapi.APIRouter`.

Every route reaches the app's shared :class:`~cleancut.server.state.ServerState` through the
:func:`get_state` dependency (the app stores it in ``app.state.cleancut``), so the routes are
plain module-level functions, not closures of the app factory. :func:`task_from_upload` is the one
place an upload becomes the work of a request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel

from .. import io as cio
from ..errors import CleancutError, ConfigError
from ..options import options_from_mapping
from .errors import ApiError, shown
from .options import describe, form_schema, query_dependency, request_options
from .state import RemoveTask, ServerState, api_error
from .uploads import IMAGE_KINDS, PHOTO_FIELD, Upload, check_content_length, check_image, read_upload

STATIC_DIR = Path(__file__).resolve().parent / "static"
MEDIA_TYPES = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg"}


class ErrorBody(BaseModel):
    """Every error: a clear message, and machine-readable detail (``detail.code``)."""

    error: str
    detail: Any = None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "corrupt or truncated image, or malformed body"},
    413: {"model": ErrorBody, "description": "body over the upload cap, or image over the pixel cap"},
    415: {"model": ErrorBody, "description": f"not an image ({IMAGE_KINDS}), judged by its bytes"},
    422: {"model": ErrorBody, "description": "invalid or unknown option"},
    503: {"model": ErrorBody, "description": "queue full (see Retry-After) or server not ready"},
}

router = APIRouter()
ui_router = APIRouter(include_in_schema=False)  # the web page, when the operator wants it


def get_state(request: Request) -> ServerState:
    """The app's shared state (a FastAPI dependency)."""
    return request.app.state.cleancut


_PUBLIC_EXTRA = ("parameters",)  # of a spec's free-form keys, those a client may see


def public_spec(spec) -> dict[str, Any]:
    """The model's description for clients: its fields, its parameter count and the edge stages it
    can run (``edge_stages``: the concrete values of the ``edges`` option it takes), never where its
    files are nor its ``training`` record (folders and runs of the machine it was trained on)."""
    public = {f.name for f in dataclasses.fields(spec)} - {"file", "folder", "extra", "edge_refiner"}
    described = {k: v for k, v in spec.to_json().items() if k in public or k in _PUBLIC_EXTRA}
    described["edge_stages"] = ["network", "guided"] + (["learned"] if spec.edge_refiner is not None else [])
    return described


def safe_stem(filename: str | None) -> str:
    stem = Path(filename).stem if filename else "image"
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "image"
    return stem[:80]


@router.get("/healthz", summary="Liveness and load", responses={503: {"model": ErrorBody}})
async def healthz(request: Request, state: ServerState = Depends(get_state)):  # noqa: B008
    settings = state.settings
    jobs = getattr(request.app.state, "cleancut_video", None)  # the clip jobs, once the app has started
    body = {"status": "ok" if state.pool is not None else "starting", "model": state.remover.spec.name,
            "workers": settings.workers, "max_queue": settings.max_queue, "admitted": state.admitted,
            "running": state.running, "queued": state.queued, "completed": state.completed,
            "receiving": state.uploads.bodies, "streams": state.streams, "stream_frames": state.stream_frames,
            "max_streams": settings.stream_max_connections, "video_jobs": jobs.running() if jobs else 0}
    return JSONResponse(body, status_code=200 if state.pool is not None else 503)


@router.get("/api/models", summary="The model this server runs")
async def models(state: ServerState = Depends(get_state)):  # noqa: B008
    return {"default": state.remover.spec.name, "models": [public_spec(state.remover.spec)]}


@router.get("/api/options", summary="The options a request can set (from RemoveOptions' metadata)")
async def options(state: ServerState = Depends(get_state)):  # noqa: B008
    return {"options": [describe(i) for i in request_options()],
            "limits": {"max_upload_bytes": state.settings.max_upload_bytes, "max_pixels": state.base.max_pixels}}


async def task_from_upload(state: ServerState, upload: Upload, query: dict[str, Any]) -> RemoveTask:
    """The work of one request: the photo checked by its bytes, the options from the query and
    the form (each given once), and each uploaded picture (a background) checked and decoded in
    memory into its option: no file is written for it."""
    name = f"uploaded image {shown(upload.filename)}" if upload.filename else "the request body"
    check_image(upload.data, name, state.base.max_pixels)
    values: dict[str, Any] = dict(query)
    for key, value in upload.values.items():
        if key in values:
            raise ConfigError(f"option '{key}' was given both as a query parameter and as a form "
                              "field; give it once.")
        values[key] = value
    for key, (data, filename) in upload.files.items():
        what = f"uploaded {key} {shown(filename)}" if filename else f"uploaded {key}"
        check_image(data, what, state.base.max_pixels)
        try:
            values[key] = await asyncio.to_thread(cio.load_image, data, state.base.max_pixels, what)
        except CleancutError as exc:
            raise api_error(exc, what) from None
    return RemoveTask(upload.data, name, options_from_mapping(values, base=state.base))


@router.post(
    "/api/remove", summary="Remove the background of an image", response_class=Response,
    responses={200: {"description": "the result image (or the mask with mode=mask)",
                     "content": {m: {"schema": {"type": "string", "format": "binary"}} for m in MEDIA_TYPES.values()}},
               **ERROR_RESPONSES},
    openapi_extra={"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": form_schema(
            f"the photo ({IMAGE_KINDS}); with any other upload, at most the server's upload cap "
            "(GET /api/options: limits.max_upload_bytes)")},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        "image/*": {"schema": {"type": "string", "format": "binary"}},
    }}},
)
async def remove(request: Request, query: dict = Depends(query_dependency()),  # noqa: B008
                 state: ServerState = Depends(get_state)) -> Response:  # noqa: B008
    limit = state.settings.max_upload_bytes
    check_content_length(request, limit)
    state.check_room()  # a full server answers at once, without reading the body
    # the body is read outside the admission, counted in the budget of photo bodies only: a client
    # that sends slowly (within the read timeouts) keeps no other request out
    with state.uploads.hold() as held:
        upload = await read_upload(request, limit, held)
        with state.admission():
            task = await task_from_upload(state, upload, query)
            pool = state.pool
            try:
                if pool is None:
                    raise RuntimeError("no worker pool")
                future = asyncio.get_running_loop().run_in_executor(pool, state.run, task)
            except RuntimeError:  # the server began shutting down while the body was read
                raise ApiError(503, "the server is shutting down; retry in a moment.", "not_ready",
                               headers={"Retry-After": "1"}) from None
            payload, seconds = await future
    mode = task.options.resolved_mode
    filename = f"{safe_stem(upload.filename)}.{mode}{cio.FORMAT_SUFFIX[task.options.format]}"
    headers = {"Content-Disposition": f'inline; filename="{filename}"', "Cache-Control": "no-store",
               "X-Cleancut-Model": state.remover.spec.name, "X-Cleancut-Mode": mode,
               "X-Processing-Ms": f"{seconds * 1000.0:.1f}"}
    return Response(payload, media_type=MEDIA_TYPES[task.options.format], headers=headers)


@ui_router.get("/")
async def index():
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@ui_router.get("/favicon.ico")
async def favicon():  # browsers ask for it whatever the page declares
    return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")


__all__ = ["router", "ui_router", "get_state", "task_from_upload", "ErrorBody", "PHOTO_FIELD", "STATIC_DIR"]
