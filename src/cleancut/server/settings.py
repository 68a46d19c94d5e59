"""Configuration of ``cleancut serve``: what the operator decides, never a request.

The model, ONNX Runtime providers/threads and the pixel cap are the operator-scope options of
:class:`~cleancut.options.RemoveOptions` (defined there, once); this module only adds what is
specific to serving: the worker pool, the request queue, the upload size limit, the start-up
warm-up and the origins allowed to call the API from a browser (CORS).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from ..errors import ConfigError
from ..options import RemoveOptions
from .errors import shown

MIB = 1024 * 1024
DEFAULT_WORKERS = 2
DEFAULT_MAX_QUEUE = 16
DEFAULT_MAX_UPLOAD_MB = 25.0
#: default cap on a request's line plus headers; a larger request is answered 431
MAX_HEADER_BYTES = 16 * 1024
#: live frames over the WebSocket (/api/stream)
DEFAULT_STREAM_MAX_MESSAGE_BYTES = 4 * MIB
DEFAULT_STREAM_MAX_FPS = 30.0
DEFAULT_STREAM_IDLE_SECONDS = 30.0
DEFAULT_STREAM_MAX_CONNECTIONS = 16
#: reading requests: a head must arrive within the timeout, and a body may not pause longer than
#: it, nor arrive slower on average than the minimum rate once its first timeout has passed
DEFAULT_READ_TIMEOUT = 10.0
DEFAULT_MIN_READ_RATE = 16 * 1024
#: clips over HTTP (/api/video)
DEFAULT_MAX_VIDEO_MB = 200.0
DEFAULT_MAX_VIDEO_SECONDS = 120.0
DEFAULT_MAX_VIDEO_PIXELS = 1920 * 1080
DEFAULT_MAX_VIDEO_JOBS = 1
DEFAULT_VIDEO_TTL_SECONDS = 3600.0
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?|\*")
_HOST = re.compile(r"\*|(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\]")


@dataclass(frozen=True)
class ServerSettings:
    """Everything :func:`cleancut.server.create_app` needs.

    ``options`` holds the operator-scope options (``model``, ``providers``, ``threads``,
    ``max_pixels``); request-scope values in it are ignored, requests start from the library
    defaults. ``workers`` threads run the inference; at most ``workers + max_queue`` requests
    are admitted at once (being uploaded, waiting, or running) and the next one is answered
    503. ``max_upload_bytes`` caps the whole request body (the photo plus an optional
    background picture). ``warm_up`` runs one synthetic image through the model (and through
    alpha matting when pymatting is installed) before the server reports ready, so the first
    request does not pay the first-use costs. ``cors_origins`` lists the origins a browser page
    may call the API from (``https://example.com``, or ``*`` for any); empty, no CORS headers
    are sent and browsers keep other sites' pages out. ``max_header_bytes`` caps a request's
    line plus headers (431 above it).

    ``api_key``: when set, every API endpoint (``/api/...``, ``/healthz``, ``/docs``, the
    OpenAPI schema, the WebSocket) needs it, in the ``X-API-Key`` header (or ``Authorization:
    Bearer KEY``; the WebSocket may pass ``?api_key=KEY``, since browsers cannot set its headers).
    The ``stream_*`` settings cap each WebSocket connection: message size, frames processed per
    second (frames sent faster are dropped and counted) and idle seconds before it is closed.
    ``stream_max_connections`` caps the WebSocket connections open at once (the next one is
    closed with 1013). The ``*video*`` settings bound the clip jobs of ``/api/video``: upload
    size, duration, pixels per frame (of clips and of live frames), jobs running at once (more are
    answered 503) and how long a finished job's result is kept.

    ``allowed_hosts``: the names a request's ``Host`` header may carry besides the defaults
    (``localhost``, ``127.0.0.1``, ``::1`` and the address the connection came in on); ``*.example.com``
    matches sub-domains, ``*`` any host. Any other ``Host`` is refused (400, or 4400 on the
    WebSocket), so a web page whose domain was re-pointed at this machine (DNS rebinding) cannot
    use the service. ``read_timeout`` and ``min_read_rate``: a request head must arrive within
    ``read_timeout`` seconds, and a body may neither pause longer than that nor arrive slower than
    ``min_read_rate`` bytes/s on average once its first ``read_timeout`` seconds have passed
    (408, and the connection is closed).
    """

    options: RemoveOptions = field(default_factory=RemoveOptions)
    workers: int = DEFAULT_WORKERS
    max_queue: int = DEFAULT_MAX_QUEUE
    max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * MIB)
    ui: bool = True  # serve the web page at /
    warm_up: bool = True
    cors_origins: tuple[str, ...] = ()
    max_header_bytes: int = MAX_HEADER_BYTES
    api_key: str | None = None
    stream_max_message_bytes: int = DEFAULT_STREAM_MAX_MESSAGE_BYTES
    stream_max_fps: float = DEFAULT_STREAM_MAX_FPS
    stream_idle_seconds: float = DEFAULT_STREAM_IDLE_SECONDS
    max_video_bytes: int = int(DEFAULT_MAX_VIDEO_MB * MIB)
    max_video_seconds: float = DEFAULT_MAX_VIDEO_SECONDS
    max_video_pixels: int = DEFAULT_MAX_VIDEO_PIXELS
    max_video_jobs: int = DEFAULT_MAX_VIDEO_JOBS
    video_ttl_seconds: float = DEFAULT_VIDEO_TTL_SECONDS
    stream_max_connections: int = DEFAULT_STREAM_MAX_CONNECTIONS
    allowed_hosts: tuple[str, ...] = ()
    read_timeout: float = DEFAULT_READ_TIMEOUT
    min_read_rate: int = DEFAULT_MIN_READ_RATE
    # "Save as example" stores photo + mask pairs here (cleancut.server.examples); None: off
    examples_dir: str | os.PathLike | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.options, RemoveOptions):
            raise ConfigError(f"ServerSettings.options expects RemoveOptions, got {type(self.options).__name__}.")
        object.__setattr__(self, "cors_origins", _names(self.cors_origins, _ORIGIN, "--cors-origin", (
            "an origin like https://example.com or http://localhost:3000 (scheme, host and optional port; no "
            "path), or * for any")))
        object.__setattr__(self, "allowed_hosts", _names(self.allowed_hosts, _HOST, "--allowed-hosts", (
            "a host name or address without port (photos.example, *.example.com, 192.168.1.4, [::1]), or * for "
            "any")))
        if self.api_key is not None and (not isinstance(self.api_key, str) or len(self.api_key) < 8
                                         or not self.api_key.isprintable() or " " in self.api_key):
            raise ConfigError("--api-key expects a printable key of at least 8 characters without spaces "
                              "(e.g. from: python -c 'import secrets; print(secrets.token_urlsafe(24))').")
        for name in ("stream_max_fps", "stream_idle_seconds", "max_video_seconds", "video_ttl_seconds",
                     "read_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"{name} (--{name.replace('_', '-')}) expects a number > 0, got {value!r}.")
        for name, minimum in (("workers", 1), ("max_queue", 0), ("max_upload_bytes", 1), ("max_header_bytes", 1024),
                              ("stream_max_message_bytes", 1024), ("max_video_bytes", 1), ("max_video_pixels", 1),
                              ("max_video_jobs", 1), ("stream_max_connections", 1), ("min_read_rate", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                flag = "--max-upload-mb" if name == "max_upload_bytes" else "--" + name.replace("_", "-")
                raise ConfigError(f"{name} ({flag}) expects an integer >= {minimum}, got {value!r}.")
        if self.examples_dir is not None:  # created if missing, and checked to be writable
            from ..examples import examples_folder

            object.__setattr__(self, "examples_dir", examples_folder(self.examples_dir))

    @property
    def frame_pixels(self) -> int:
        """Most pixels of a frame of a clip or of a live stream: ``max_video_pixels``, or the photo
        cap when that is lower."""
        return min(self.max_video_pixels, self.options.max_pixels)

    @classmethod
    def from_values(cls, *, model: str | None = None, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
                    options: RemoveOptions | None = None, **kwargs) -> "ServerSettings":
        """Convenience constructor: ``max_upload_mb`` in MiB, ``model`` as a shortcut."""
        if not isinstance(max_upload_mb, (int, float)) or isinstance(max_upload_mb, bool) or max_upload_mb <= 0:
            raise ConfigError(f"max_upload_mb (--max-upload-mb) expects a number > 0, got {max_upload_mb!r}.")
        opts = options or RemoveOptions()
        if model is not None:
            opts = opts.replace(model=model)
        return cls(options=opts, max_upload_bytes=max(1, int(max_upload_mb * MIB)), **kwargs)

    @property
    def capacity(self) -> int:
        """Requests admitted at once (running plus queued)."""
        return self.workers + self.max_queue

    @property
    def threads(self) -> int | None:
        """ONNX Runtime intra-op threads: as configured, else the cores split between the workers
        (so concurrent inferences do not oversubscribe the CPU), else ONNX Runtime's choice."""
        if self.options.threads is not None:
            return self.options.threads
        if self.workers > 1:
            return max(1, (os.cpu_count() or 1) // self.workers)
        return None


def _names(values, pattern: re.Pattern, flag: str, expected: str) -> tuple[str, ...]:
    """``values`` (one string or several) as a tuple, each checked against ``pattern``."""
    values = (values,) if isinstance(values, str) else tuple(values) if isinstance(values, (list, tuple)) else (values,)
    for value in values:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise ConfigError(f"{flag} expects {expected}; got {shown(value)}.")
    return values
