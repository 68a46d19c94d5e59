"""The FastAPI application of ``cleancut serve``.

Resources are bounded by construction:

* one :class:`~cleancut.api.Remover` (one ONNX Runtime session) for the one model the operator
  configured; requests cannot name a model or a file;
* ``workers`` threads run decoding, inference, post-processing and encoding;
* at most ``workers + max_queue`` requests are admitted at once (counted from before their body
  is read until their answer is ready); the next one gets 503 with ``Retry-After`` without its
  body being read;
* a body is read with a byte cap (413 at once on a ``Content-Length`` over the cap, or as soon as
  the cap is passed), and every image's pixel count is checked from its header before decoding.

So the memory a server can hold is bounded by ``(workers + max_queue) x`` the upload cap plus
``workers x`` the working memory of one image at the pixel cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import math
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from .. import io as cio
from ..api import Remover
from ..errors import (CleancutError, ConfigError, ImageError, ImageTooLargeError, MissingDependencyError,
                      ModelError)
from ..options import RemoveOptions, options_from_mapping
from .errors import ApiError
from .options import api_text, describe, form_schema, query_dependency, request_options
from .settings import ServerSettings
from .uploads import IMAGE_KINDS, PHOTO_FIELD, check_content_length, check_image, read_upload

log = logging.getLogger("cleancut.server")
STATIC_DIR = Path(__file__).resolve().parent / "static"
MEDIA_TYPES = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg"}
_SUFFIX = {"image/jpeg": ".jpg", "image/png": ".png", "image/gif": ".gif", "image/webp": ".webp",
           "image/bmp": ".bmp", "image/tiff": ".tif"}


class ErrorBody(BaseModel):
    """Every error: a clear message, and machine-readable detail (``detail.code``)."""

    error: str
    detail: Any = None


@dataclass
class Job:
    """One request's work, run in a worker thread."""

    data: bytes
    name: str  # how messages call the photo
    options: RemoveOptions
    files: dict[str, tuple[Path, bytes, str]]  # option name -> (temp path, bytes, how messages call it)


class ServerState:
    """The shared Remover, the worker pool and the admission counters of one app."""

    def __init__(self, settings: ServerSettings, remover: Remover):
        self.settings = settings
        self.remover = remover
        # requests start from the library defaults plus the operator's pixel cap; model,
        # providers and threads are the Remover's own
        self.base = RemoveOptions(max_pixels=settings.options.max_pixels)
        self.pool: Any = None
        self.tmpdir: Path | None = None
        self.admitted = 0  # touched on the event loop only
        self._lock = threading.Lock()  # for the counters the workers update
        self.running = 0
        self.completed = 0
        self.avg_seconds = 1.0  # moving average of a job's time, for Retry-After

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.remover.load()  # a broken model fails here, before the first request
        if self.settings.warm_up:  # first-use costs paid now, before the server reports ready
            from ..refine import matting_available

            matting = matting_available()
            log.info("warming up: one inference%s ...", " and alpha matting (the first start on a machine "
                     "compiles its kernels, about a minute)" if matting else "")
            seconds = self.remover.warm_up(alpha_matting=matting)
            log.info("warm-up done in %.1f s (%s)", sum(seconds.values()),
                     ", ".join(f"{step} {s:.2f} s" for step, s in seconds.items()))
        self.tmpdir = Path(tempfile.mkdtemp(prefix="cleancut-serve-"))
        self.pool = ThreadPoolExecutor(max_workers=self.settings.workers, thread_name_prefix="cleancut-worker")
        # start every worker thread now: left alone, the pool creates them one by one as jobs first
        # overlap, so the server's thread count would still be rising long after the start
        started = threading.Barrier(self.settings.workers)
        for future in [self.pool.submit(started.wait, 30) for _ in range(self.settings.workers)]:
            future.result()

    def stop(self) -> None:
        """Refuse new work, finish every job already submitted, remove the temporary folder."""
        pool, self.pool = self.pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir)
            self.tmpdir = None

    # ------------------------------------------------------------ admission

    @property
    def queued(self) -> int:
        return max(0, self.admitted - self.running)

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the queue ahead divided by the workers."""
        ahead = max(1, self.admitted - self.settings.workers + 1)
        return max(1, math.ceil(self.avg_seconds * ahead / self.settings.workers))

    @contextlib.contextmanager
    def admission(self) -> Iterator[None]:
        settings = self.settings
        if self.pool is None:
            raise ApiError(503, "the server is starting or shutting down; retry in a moment.",
                           "not_ready", headers={"Retry-After": "1"})
        if self.admitted >= settings.capacity:
            wait = self.retry_after()
            raise ApiError(
                503, f"the server is busy: {self.admitted} requests are being processed or waiting "
                     f"({settings.workers} workers + a queue of {settings.max_queue}); retry in "
                     f"{wait} s.", "queue_full", headers={"Retry-After": str(wait)},
                workers=settings.workers, max_queue=settings.max_queue, retry_after=wait)
        self.admitted += 1
        try:
            yield
        finally:
            self.admitted -= 1

    # ------------------------------------------------------------ work (worker threads)

    def run(self, job: Job) -> tuple[bytes, float]:
        with self._lock:
            self.running += 1
        started = time.perf_counter()
        try:
            return self._process(job), time.perf_counter() - started
        finally:
            seconds = time.perf_counter() - started
            with self._lock:
                self.running -= 1
                self.completed += 1
                self.avg_seconds = 0.8 * self.avg_seconds + 0.2 * seconds

    def _process(self, job: Job) -> bytes:
        written: list[Path] = []
        try:
            for path, data, _ in job.files.values():
                path.write_bytes(data)
                written.append(path)
            source = io.BytesIO(job.data)
            source.name = job.name  # how cleancut's messages name the source
            image = self.remover.remove(source, job.options)
            return cio.encode_image(image, job.options.format, job.options.quality)
        except CleancutError as exc:
            raise _api_error(exc, job) from exc
        finally:
            for path in written:
                path.unlink(missing_ok=True)


def _api_error(exc: CleancutError, job: Job) -> ApiError:
    message = str(exc)
    for path, _, what in job.files.values():
        message = message.replace(f"background image {path}", what).replace(str(path), what)
    if isinstance(exc, ImageTooLargeError):
        return ApiError(413, message, "too_many_pixels")
    if isinstance(exc, MissingDependencyError):
        return ApiError(501, f"this server cannot do that: {message}", "missing_dependency", module=exc.module)
    if isinstance(exc, ImageError):
        return ApiError(400, message, "corrupt_image")
    if isinstance(exc, ConfigError):
        return ApiError(422, api_text(message), "invalid_option")
    # server-side failures: the details (which may name server files) go to the log only
    if isinstance(exc, ModelError):
        log.error("model failure on %s: %s", job.name, message)
        return ApiError(500, "the model failed on this image; the server log has the details.", "model_error")
    log.error("unexpected cleancut error on %s: %s", job.name, message)
    return ApiError(500, "internal server error; the server log has the details.", "internal_error")


# ---------------------------------------------------------------- middleware


class AccessLog:
    """One log line per HTTP request: client, method, path, status, latency and bytes sent."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status, sent = 500, 0

        async def send_and_note(message):
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            client = scope.get("client")
            path = scope.get("path", "")
            if scope.get("query_string"):
                path += "?" + scope["query_string"].decode("latin-1")
            log.info('%s "%s %s" %d %.1fms %dB', f"{client[0]}:{client[1]}" if client else "-",
                     scope.get("method", ""), path, status, (time.perf_counter() - started) * 1000.0, sent)


class HeaderLimit:
    """Answers 431 to a request whose line plus headers exceed ``max_bytes``, whatever HTTP
    server runs the app (uvicorn's h11 also bounds what it buffers before parsing)."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            size = (len(scope.get("method", "")) + len(scope.get("raw_path") or scope.get("path", "").encode())
                    + len(scope.get("query_string", b"")) + sum(len(k) + len(v) + 4 for k, v in scope["headers"]))
            if size > self.max_bytes:
                error = ApiError(431, f"the request line and headers are {size} bytes, above this server's limit "
                                      f"of {self.max_bytes} bytes; send fewer or shorter headers.",
                                 "headers_too_large", limit_bytes=self.max_bytes)
                await _error_response(error.status, error.body())(scope, receive, send)
                return
        await self.app(scope, receive, send)


# ---------------------------------------------------------------- the app


def _error_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return _error_response(exc.status, exc.body(), exc.headers)

    @app.exception_handler(ConfigError)
    async def config_error(request: Request, exc: ConfigError):
        return _error_response(422, {"error": api_text(str(exc)), "detail": {"code": "invalid_option"}})

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        summary = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in errors)
        return _error_response(422, {"error": f"invalid request: {summary}", "detail": errors})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        message = {404: f"no such endpoint: {request.method} {request.url.path}; see /docs",
                   405: f"method {request.method} is not allowed on {request.url.path}; see /docs"}
        body = {"error": message.get(exc.status_code, str(exc.detail)), "detail": {"code": f"http_{exc.status_code}"}}
        return _error_response(exc.status_code, body, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        # Starlette re-raises the exception after this response, so the server logs its traceback.
        return _error_response(500, {"error": f"internal server error ({type(exc).__name__}); the "
                                              "server log has the details.", "detail": {"code": "internal_error"}})


def _lifespan(state: ServerState):
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await asyncio.to_thread(state.start)
        spec = state.remover.spec
        log.info("model '%s' loaded (%s, input %dx%d); %d workers, queue %d, upload cap %d bytes, "
                 "pixel cap %d", spec.name, spec.architecture, spec.input_size[1], spec.input_size[0],
                 state.settings.workers, state.settings.max_queue, state.settings.max_upload_bytes,
                 state.base.max_pixels)
        try:
            yield
        finally:
            log.info("shutting down: finishing %d admitted request(s)", state.admitted)
            await asyncio.to_thread(state.stop)
            log.info("worker pool drained; %d requests processed", state.completed)
    return lifespan


def _public_spec(spec) -> dict[str, Any]:
    info = spec.to_json()
    info.pop("file", None)  # a server never tells where its files are
    return info


def _safe_stem(filename: str | None) -> str:
    stem = Path(filename).stem if filename else "image"
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "image"
    return stem[:80]


def _install_docs(app: FastAPI) -> None:
    """Swagger UI at /docs, served from the swagger-ui-bundle package so that it works offline
    (FastAPI's default loads it from a CDN). Without that package, the CDN version is used."""
    from fastapi.openapi.docs import get_swagger_ui_html

    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        swagger_ui_path = None
    assets = {}
    if swagger_ui_path is not None:
        app.mount("/docs-static", StaticFiles(directory=str(swagger_ui_path)), name="docs-static")
        assets = {"swagger_js_url": "/docs-static/swagger-ui-bundle.js",
                  "swagger_css_url": "/docs-static/swagger-ui.css",
                  "swagger_favicon_url": "/docs-static/favicon-32x32.png"}

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="cleancut API", **assets)


def build_app(settings: ServerSettings | None = None) -> FastAPI:
    settings = settings or ServerSettings()
    opts = settings.options
    # resolves the model now: an unknown name or path fails here, naming the valid ones
    remover = Remover(opts.model, opts.providers, settings.threads)
    state = ServerState(settings, remover)

    app = FastAPI(
        title="cleancut", version=__version__, lifespan=_lifespan(state), docs_url=None,
        description="Background removal over HTTP. `POST /api/remove` takes an image (multipart field "
                    f"`{PHOTO_FIELD}`, or the raw request body) and returns the result image. Every "
                    "option is a query parameter or a form field. Errors are JSON "
                    "`{\"error\": message, \"detail\": {...}}`.")
    app.state.cleancut = state
    if settings.cors_origins:  # no CORS headers at all unless the operator lists origins
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
            allow_headers=["Content-Type"], allow_credentials=False,
            expose_headers=["Content-Disposition", "Retry-After", "X-Cleancut-Model", "X-Cleancut-Mode",
                            "X-Processing-Ms"])
    app.add_middleware(HeaderLimit, max_bytes=settings.max_header_bytes)
    app.add_middleware(AccessLog)  # outermost: logs every answer, 431s included
    _install_error_handlers(app)
    error_responses = {
        400: {"model": ErrorBody, "description": "corrupt or truncated image, or malformed body"},
        413: {"model": ErrorBody, "description": "body over the upload cap, or image over the pixel cap"},
        415: {"model": ErrorBody, "description": f"not an image ({IMAGE_KINDS}), judged by its bytes"},
        422: {"model": ErrorBody, "description": "invalid or unknown option"},
        503: {"model": ErrorBody, "description": "queue full (see Retry-After) or server not ready"},
    }

    @app.get("/healthz", summary="Liveness and load", responses={503: {"model": ErrorBody}})
    async def healthz():
        body = {"status": "ok" if state.pool is not None else "starting", "model": remover.spec.name,
                "workers": settings.workers, "max_queue": settings.max_queue, "admitted": state.admitted,
                "running": state.running, "queued": state.queued, "completed": state.completed}
        return JSONResponse(body, status_code=200 if state.pool is not None else 503)

    @app.get("/api/models", summary="The model this server runs")
    async def models():
        return {"default": remover.spec.name, "models": [_public_spec(remover.spec)]}

    @app.get("/api/options", summary="The options a request can set (from RemoveOptions' metadata)")
    async def options():
        return {"options": [describe(i) for i in request_options()],
                "limits": {"max_upload_bytes": settings.max_upload_bytes, "max_pixels": state.base.max_pixels}}

    query_options = query_dependency()

    @app.post(
        "/api/remove", summary="Remove the background of an image", response_class=Response,
        responses={200: {"description": "the result image (or the mask with mode=mask)",
                         "content": {m: {"schema": {"type": "string", "format": "binary"}} for m in MEDIA_TYPES.values()}},
                   **error_responses},
        openapi_extra={"requestBody": {"required": True, "content": {
            "multipart/form-data": {"schema": form_schema(
                f"the photo ({IMAGE_KINDS}); at most {settings.max_upload_bytes} bytes with any other upload")},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        }}},
    )
    async def remove(request: Request, query: dict = Depends(query_options)) -> Response:  # noqa: B008
        # (a default rather than Annotated: the dependency is local, and annotations are strings here)
        limit = settings.max_upload_bytes
        check_content_length(request, limit)
        with state.admission():
            upload = await read_upload(request, limit)
            name = f"uploaded image {upload.filename!r}" if upload.filename else "the request body"
            check_image(upload.data, name, state.base.max_pixels)
            values: dict[str, Any] = dict(query)
            for key, value in upload.values.items():
                if key in values:
                    raise ConfigError(f"option '{key}' was given both as a query parameter and as a form "
                                      "field; give it once.")
                values[key] = value
            files: dict[str, tuple[Path, bytes, str]] = {}
            for key, (data, filename) in upload.files.items():
                what = f"uploaded {key} {filename!r}" if filename else f"uploaded {key}"
                mime, _ = check_image(data, what, state.base.max_pixels)
                path = state.tmpdir / f"{key}-{uuid.uuid4().hex}{_SUFFIX[mime]}"  # type: ignore[operator]
                files[key] = (path, data, what)
                values[key] = str(path)
            job = Job(upload.data, name, options_from_mapping(values, base=state.base), files)
            pool = state.pool
            try:
                if pool is None:
                    raise RuntimeError("no worker pool")
                future = asyncio.get_running_loop().run_in_executor(pool, state.run, job)
            except RuntimeError:  # the server began shutting down while the body was read
                raise ApiError(503, "the server is shutting down; retry in a moment.", "not_ready",
                               headers={"Retry-After": "1"}) from None
            payload, seconds = await future
        mode = job.options.resolved_mode
        filename = f"{_safe_stem(upload.filename)}.{mode}{cio.FORMAT_SUFFIX[job.options.format]}"
        headers = {"Content-Disposition": f'inline; filename="{filename}"', "Cache-Control": "no-store",
                   "X-Cleancut-Model": remover.spec.name, "X-Cleancut-Mode": mode,
                   "X-Processing-Ms": f"{seconds * 1000.0:.1f}"}
        return Response(payload, media_type=MEDIA_TYPES[job.options.format], headers=headers)

    _install_docs(app)

    if settings.ui:
        @app.get("/", include_in_schema=False)
        async def index():
            return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    return app
