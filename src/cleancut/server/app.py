"""The FastAPI application of ``cleancut serve``.

Resources are bounded by construction:

* one :class:`~cleancut.api.Remover` (one ONNX Runtime session) for the one model the operator
  configured; requests cannot name a model or a file;
* ``workers`` threads run decoding, inference, post-processing and encoding;
* at most ``workers + max_queue`` requests are admitted at once (counted from when their body
  has arrived until their answer is ready); when that many are, the next request gets 503 with
  ``Retry-After`` without its body being read;
* a body is read with a byte cap (413 at once on a ``Content-Length`` over the cap, or as soon as
  the cap is passed), within the read timeouts (:class:`ReadDeadline`: 408 for a client that
  pauses or trickles), and counted as it arrives in a budget of ``(workers + max_queue) x`` the
  upload cap for all bodies being received or waiting (503 past it), so a client that stalls
  holds only the bytes it sent, not a place in the queue; every image's pixel count is checked
  from its header before decoding.

So the memory a server can hold is bounded by ``(workers + max_queue) x`` the upload cap plus
``workers x`` the working memory of one image at the pixel cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..api import Remover
from ..errors import ConfigError
from .errors import ApiError, shown
from .options import api_text
from .routes import STATIC_DIR, router, ui_router
from .examples import router as examples_router
from .security import ApiKeyGate, HostGate, query_key, redact_logs, redact_query
from .stream import router as stream_router
from .video_jobs import VideoJobs
from .video_jobs import router as video_router
from .settings import ServerSettings
from .state import ServerState
from .uploads import PHOTO_FIELD

log = logging.getLogger("cleancut.server")


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
                path += "?" + redact_query(scope["query_string"].decode("latin-1"))
            if len(path) > MAX_LOGGED_PATH:  # a client's input: a short prefix is enough
                path = f"{path[:MAX_LOGGED_PATH]}... ({len(path)} characters)"
            log.info('%s "%s %s" %d %.1fms %dB', f"{client[0]}:{client[1]}" if client else "-",
                     scope.get("method", ""), path, status, (time.perf_counter() - started) * 1000.0, sent)


MAX_LOGGED_PATH = 200


class ReadDeadline:
    """Read timeouts of a request body, wrapped around ``receive`` (an HTTP server times out idle
    connections and, with ``cleancut serve``, slow request heads, but not a body that stalls).

    The next piece of a body must arrive within ``timeout`` seconds, and the body at
    ``min_rate`` bytes/s on average once its first ``timeout`` seconds have passed: a client
    that pauses or trickles gets 408 (``read_timeout``) and its connection is closed, so it holds
    nothing for longer than that (the 408 closes the connection, as does any answer sent before
    the body was read: 401, 413, 503 ..., rather than let the client go on sending into it)."""

    def __init__(self, app, timeout: float, min_rate: int):
        self.app = app
        self.timeout = timeout
        self.min_rate = min_rate

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", ()))
        more = headers.get(b"content-length", b"0").strip() not in (b"0", b"") or b"transfer-encoding" in headers
        started = time.monotonic()
        received = 0

        async def timed_receive():
            nonlocal more, received
            if not more:
                return await receive()
            now = time.monotonic()
            deadline = min(now + self.timeout, started + self.timeout + received / self.min_rate)
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - now))
            except asyncio.TimeoutError:
                raise self.too_slow(received, time.monotonic() - started) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                more = message.get("more_body", False)
            else:
                more = False
            return message

        async def send_and_close(message):
            if message["type"] == "http.response.start" and more:
                message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, timed_receive, send_and_close)

    def too_slow(self, received: int, seconds: float) -> ApiError:
        return ApiError(
            408, f"the request body arrived too slowly: {received} bytes in {seconds:.1f} s. This server "
                 f"waits at most {self.timeout:g} s for each piece of a body, and needs {self.min_rate} "
                 f"bytes/s on average after the first {self.timeout:g} s.", "read_timeout",
            received_bytes=received, timeout_seconds=self.timeout,
            min_rate=self.min_rate)


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
        path = shown(request.url.path)
        message = {404: f"no such endpoint: {shown(request.method, 20)} {path}; see /docs",
                   405: f"method {shown(request.method, 20)} is not allowed on {path}; see /docs"}
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
        app.state.cleancut_video = VideoJobs(state)  # the clip jobs' threads and temporary folders
        try:
            yield
        finally:
            log.info("shutting down: finishing %d admitted request(s)", state.admitted)
            await asyncio.to_thread(app.state.cleancut_video.stop)
            await asyncio.to_thread(state.stop)
            log.info("worker pool drained; %d requests processed", state.completed)
    return lifespan


def _install_docs(app: FastAPI, api_key: str | None) -> None:
    """Swagger UI at /docs, served from the files of the fastapi-offline package so that it works
    offline (FastAPI's default loads it from a CDN): Swagger UI 5, which reads the OpenAPI 3.1
    that FastAPI publishes (swagger-ui-bundle's 4.15 could not). Without that package, the CDN
    version is used.

    With an API key, ``/docs?api_key=KEY`` loads the schema with the same key (its assets are
    public: they hold no data), and the schema declares the ``X-API-Key`` header, so Swagger UI's
    Authorize button sends it with "Try it out"."""
    from urllib.parse import quote

    from fastapi.openapi.docs import get_swagger_ui_html

    try:
        import fastapi_offline
    except ImportError:
        fastapi_offline = None
    assets = {}
    if fastapi_offline is not None:
        swagger_ui_path = Path(fastapi_offline.__file__).resolve().parent / "static"
        app.mount("/docs-static", StaticFiles(directory=str(swagger_ui_path)), name="docs-static")
        assets = {"swagger_js_url": "/docs-static/swagger-ui-bundle.js",
                  "swagger_css_url": "/docs-static/swagger-ui.css",
                  "swagger_favicon_url": "/docs-static/favicon.png"}

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request):
        schema = app.openapi_url
        key = query_key(request.scope)
        if key is not None:  # it passed the gate: the page's own request for the schema carries it too
            schema += "?api_key=" + quote(key, safe="")
        return get_swagger_ui_html(openapi_url=schema, title="cleancut API", **assets)

    if api_key:
        build = app.openapi

        def openapi() -> dict[str, Any]:
            if app.openapi_schema is None:
                schema = build()
                schema.setdefault("components", {})["securitySchemes"] = {
                    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
                schema["security"] = [{"ApiKey": []}]
            return app.openapi_schema

        app.openapi = openapi  # type: ignore[method-assign]


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
                    "option is a query parameter or a form field. `POST /api/video` starts a job on a clip "
                    "(follow it at `/api/video/{id}`, download `/api/video/{id}/result`); the WebSocket "
                    "`/api/stream` takes live frames. Errors are JSON "
                    "`{\"error\": message, \"detail\": {...}}`.")
    app.state.cleancut = state  # what the routes' get_state dependency returns
    if settings.cors_origins:  # no CORS headers at all unless the operator lists origins
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
            allow_headers=["Content-Type"], allow_credentials=False,
            expose_headers=["Content-Disposition", "Retry-After", "X-Cleancut-Model", "X-Cleancut-Mode",
                            "X-Processing-Ms"])
    app.add_middleware(ApiKeyGate, api_key=settings.api_key)
    app.add_middleware(HostGate, allowed=settings.allowed_hosts)
    app.add_middleware(HeaderLimit, max_bytes=settings.max_header_bytes)
    app.add_middleware(ReadDeadline, timeout=settings.read_timeout, min_rate=settings.min_read_rate)
    app.add_middleware(AccessLog)  # outermost: logs every answer, 431s and 401s included
    redact_logs(settings.api_key)  # no key in any log line, whoever writes it
    _install_error_handlers(app)
    app.include_router(router)
    app.include_router(stream_router)
    app.include_router(video_router)
    app.include_router(examples_router)  # "Save as example"; answers 404 unless settings.examples_dir
    _install_docs(app, settings.api_key)
    if settings.ui:
        app.include_router(ui_router)
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
