"""``cleancut serve``: background removal over HTTP (JSON API, OpenAPI docs, web page).

The model, ONNX Runtime settings and the pixel cap are the operator-scope options of
:class:`~cleancut.options.RemoveOptions` (their flags are generated from its metadata); the
flags below configure the server itself.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from typing import Iterator

from ..errors import ConfigError
from ._options import add_options_to_parser, options_from_namespace

EPILOG = """examples:
  cleancut serve                                   # the bundled model on http://127.0.0.1:8000
  cleancut serve --model exported/model.onnx --host 0.0.0.0 --port 8080 --workers 4
  curl -F file=@photo.jpg 'http://127.0.0.1:8000/api/remove?mode=mask' -o mask.png
  curl --data-binary @photo.jpg 'http://127.0.0.1:8000/api/remove?format=webp' -o cutout.webp

The web page is at /, the API documentation at /docs. SIGTERM or Ctrl-C stops accepting
connections, finishes the requests in flight, then exits.
"""

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def register(subparsers) -> None:
    from ..server.settings import (DEFAULT_MAX_QUEUE, DEFAULT_MAX_UPLOAD_MB, DEFAULT_MAX_VIDEO_JOBS, DEFAULT_MAX_VIDEO_MB,
                                   DEFAULT_MAX_VIDEO_PIXELS, DEFAULT_MAX_VIDEO_SECONDS, DEFAULT_MIN_READ_RATE,
                                   DEFAULT_READ_TIMEOUT, DEFAULT_STREAM_IDLE_SECONDS, DEFAULT_STREAM_MAX_CONNECTIONS,
                                   DEFAULT_STREAM_MAX_FPS, DEFAULT_STREAM_MAX_MESSAGE_BYTES, DEFAULT_WORKERS, MIB)

    parser = subparsers.add_parser(
        "serve", help="serve background removal over HTTP (API and web page)",
        description="Serve one model over HTTP: POST /api/remove, GET /api/models, GET /healthz, "
                    "the API docs at /docs and a web page at /.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_argument_group("server")
    group.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default: 127.0.0.1; 0.0.0.0 listens on every interface)")
    group.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    group.add_argument("--workers", type=int, default=DEFAULT_WORKERS, metavar="N",
                       help="threads running the inference, sharing one loaded model; without --threads "
                            f"the CPU cores are split between them (default: {DEFAULT_WORKERS})")
    group.add_argument("--max-queue", type=int, default=DEFAULT_MAX_QUEUE, metavar="N",
                       help="requests that may wait for a worker; beyond it requests are answered 503 "
                            f"with Retry-After (default: {DEFAULT_MAX_QUEUE})")
    group.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB, metavar="MB",
                       help="largest request body in MiB, the photo plus any background picture; "
                            f"larger ones are answered 413 (default: {DEFAULT_MAX_UPLOAD_MB:g})")
    group.add_argument("--shutdown-timeout", type=float, default=30.0, metavar="SECONDS",
                       help="on SIGTERM / Ctrl-C, how long to wait for requests in flight before "
                            "closing their connections (default: 30)")
    group.add_argument("--root-path", default="", metavar="PREFIX",
                       help="URL prefix when a reverse proxy serves the app under a sub-path")
    group.add_argument("--no-ui", action="store_true", help="serve the API only, no web page at /")
    group.add_argument("--examples", metavar="DIR", default=None,
                       help="let the page's 'Save as example' store each photo and its corrected mask in DIR "
                            "(im/ + gt/, the layout cleancut finetune reads; created if missing; atomic, never "
                            "overwriting) and serve the set as a zip at /api/examples/zip. Default: off")
    group.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                       help="let browser pages from this origin (e.g. https://example.com; * for any) call "
                            "the API; repeatable. Default: no CORS headers, so only the server's own page can")
    group.add_argument("--no-warm-up", dest="warm_up", action="store_false",
                       help="skip the start-up warm-up (one inference, and alpha matting when pymatting is "
                            "installed, which compiles its kernels on a machine's first start); the first "
                            "requests then pay those costs")
    group.add_argument("--api-key", default=os.environ.get("CLEANCUT_API_KEY"), metavar="KEY",
                       help="require this key on every API call (X-API-Key header; ?api_key= for the "
                            "WebSocket and /docs). Default: $CLEANCUT_API_KEY, else none")
    group.add_argument("--allowed-hosts", action="append", default=[], metavar="NAME",
                       help="also answer requests whose Host header is NAME (a host name or address; "
                            "*.example.com for its sub-domains; * for any); repeatable. Default: only "
                            "localhost, 127.0.0.1, ::1 and the address a connection came in on, so that a "
                            "web page on another domain pointed at this machine (DNS rebinding) is refused")
    group.add_argument("--read-timeout", type=float, default=DEFAULT_READ_TIMEOUT, metavar="SECONDS",
                       help="a request's line and headers must arrive within this time, and its body may not "
                            "pause longer (408, connection closed; default: %(default)g)")
    group.add_argument("--min-read-rate", type=int, default=DEFAULT_MIN_READ_RATE, metavar="BYTES",
                       help="bytes per second a request body must average once its first --read-timeout "
                            "seconds have passed (408 below it; default: %(default)d)")
    live = parser.add_argument_group("live frames (WebSocket /api/stream) and clips (/api/video)")
    live.add_argument("--stream-max-fps", type=float, default=DEFAULT_STREAM_MAX_FPS, metavar="FPS",
                      help=f"frames processed per second per connection; faster ones are dropped "
                           f"(default: {DEFAULT_STREAM_MAX_FPS:g})")
    live.add_argument("--stream-max-message-mb", type=float, default=DEFAULT_STREAM_MAX_MESSAGE_BYTES / MIB,
                      metavar="MB", help="largest frame a client may send (default: %(default)g)")
    live.add_argument("--stream-idle-seconds", type=float, default=DEFAULT_STREAM_IDLE_SECONDS, metavar="S",
                      help="close a connection silent for this long (default: %(default)g)")
    live.add_argument("--stream-max-connections", type=int, default=DEFAULT_STREAM_MAX_CONNECTIONS, metavar="N",
                      help="WebSocket connections open at once; the next is closed with 1013 (default: %(default)d)")
    live.add_argument("--max-video-mb", type=float, default=DEFAULT_MAX_VIDEO_MB, metavar="MB",
                      help="largest clip upload (default: %(default)g)")
    live.add_argument("--max-video-seconds", type=float, default=DEFAULT_MAX_VIDEO_SECONDS, metavar="S",
                      help="longest clip (default: %(default)g)")
    live.add_argument("--max-video-pixels", type=int, default=DEFAULT_MAX_VIDEO_PIXELS, metavar="N",
                      help="most pixels per frame of a clip or of a live frame (default: %(default)d, 1080p)")
    live.add_argument("--max-video-jobs", type=int, default=DEFAULT_MAX_VIDEO_JOBS, metavar="N",
                      help="clip jobs running at once; more are answered 503 (default: %(default)d)")
    group.add_argument("--log-level", choices=LOG_LEVELS, default="info",
                       help="log level; info logs one line per request (default: info)")
    add_options_to_parser(parser, scopes=("operator",))
    parser.set_defaults(func=run)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ assigns it; always follow sys.stderr instead
        pass


@contextlib.contextmanager
def _request_log(level: str) -> Iterator[None]:
    """Send cleancut's log (one line per request, start-up and warm-up notes) to stderr while
    serving, through the filter that keeps API keys out of it."""
    from ..server.security import redact_logs

    logger = logging.getLogger("cleancut")
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s cleancut: %(message)s"))
    redact_logs(None, [handler])
    previous = logger.level
    logger.setLevel(level.upper())
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def make_server(app, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info", root_path: str = "",
                shutdown_timeout: float = 30.0):
    """The uvicorn server ``cleancut serve`` runs ``app`` with. The request log is cleancut's
    own, and uvicorn's log goes through the filter that keeps API keys out of it. The HTTP
    implementation is h11 whatever else is installed, because it stops buffering a request head
    that grows past the app's header cap (httptools has no such bound; the app itself answers 431
    above the cap), with a deadline on each request head (:mod:`cleancut.server.protocol`). The
    WebSocket message cap is uvicorn's own, so that a message over it is refused as it arrives
    (1009), before it is buffered. WebSockets decline permessage-deflate: the stream's frames and
    replies are compressed already (JPEG/PNG/WebP in, zlib mattes or encoded pictures out), and
    deflating them again would cost both sides of every round trip."""
    import uvicorn

    from ..server.protocol import guarded_h11
    from ..server.security import redact_logs

    settings = app.state.cleancut.settings
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, access_log=False, lifespan="on", root_path=root_path,
        timeout_graceful_shutdown=shutdown_timeout or None, http=guarded_h11(settings.read_timeout),
        h11_max_incomplete_event_size=settings.max_header_bytes, ws_max_size=settings.stream_max_message_bytes,
        ws_per_message_deflate=False)
    # uvicorn's handlers exist once its Config has configured logging
    redact_logs(settings.api_key, [h for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
                                   for h in logging.getLogger(name).handlers])
    return uvicorn.Server(config)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bound_name(host: str) -> tuple[str, ...]:
    """The ``--host`` a client may name in its ``Host`` header (none for a wildcard address, whose
    connections name the address they came in on)."""
    if host in ("", "0.0.0.0", "::"):
        return ()
    return (f"[{host}]",) if ":" in host else (host,)


def run(args: argparse.Namespace) -> int:
    from .._deps import require
    from ..server import ServerSettings, create_app
    from ..server.settings import MIB

    require("uvicorn", "cleancut serve")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port expects a TCP port 0-65535, got {args.port}.")
    if args.shutdown_timeout < 0:
        raise ConfigError(f"--shutdown-timeout expects seconds >= 0, got {args.shutdown_timeout}.")
    settings = ServerSettings.from_values(
        options=options_from_namespace(args), workers=args.workers, max_queue=args.max_queue,
        max_upload_mb=args.max_upload_mb, ui=not args.no_ui, warm_up=args.warm_up,
        cors_origins=tuple(args.cors_origin), api_key=args.api_key or None,
        stream_max_fps=args.stream_max_fps, stream_max_message_bytes=int(args.stream_max_message_mb * MIB),
        stream_idle_seconds=args.stream_idle_seconds, max_video_bytes=int(args.max_video_mb * MIB),
        max_video_seconds=args.max_video_seconds, max_video_pixels=args.max_video_pixels,
        max_video_jobs=args.max_video_jobs, stream_max_connections=args.stream_max_connections,
        allowed_hosts=(*args.allowed_hosts, *_bound_name(args.host)), read_timeout=args.read_timeout, min_read_rate=args.min_read_rate,
        examples_dir=args.examples)
    if settings.api_key is None and not is_loopback(args.host):
        print(f"cleancut serve: warning: listening on {args.host} without --api-key: anyone who can reach "
              "this address can use the service (set --api-key or $CLEANCUT_API_KEY)", file=sys.stderr)
    app = create_app(settings)  # an unknown model fails here with the list of valid ones
    app.state.cleancut.remover.load()  # and a broken one here, as a one-line error
    server = make_server(app, host=args.host, port=args.port, log_level=args.log_level,
                         root_path=args.root_path, shutdown_timeout=args.shutdown_timeout)
    with _request_log(args.log_level):
        server.run()
    return 0 if server.started else 1
