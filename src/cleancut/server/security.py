"""Who may call the service: the API key, and the origin check of the WebSocket.

* :class:`ApiKeyGate` (ASGI middleware): with ``--api-key``, every request but the web page
  (``/`` and ``/static/...``, which hold no data and ask for the key) must carry the key, in the
  ``X-API-Key`` header or as ``Authorization: Bearer KEY``. Browsers cannot set headers on a
  WebSocket or on a page they navigate to, so ``/api/stream`` and ``/docs`` also take it as the
  ``api_key`` query parameter (the access log never shows its value). Keys are compared in
  constant time. A refused HTTP request gets 401 with the usual JSON error; a refused WebSocket is
  closed before it is accepted (code 4401).
* :func:`origin_allowed`: a browser page on another site must not drive a user's local service
  through their browser, so a WebSocket whose ``Origin`` is neither this server's own nor one of
  ``--cors-origin`` is refused (4403). Clients that send no ``Origin`` (scripts, not browsers) are
  let through: the API key is what guards against them.
"""

from __future__ import annotations

import hmac
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .errors import ApiError

PUBLIC_PREFIXES = ("/static/",)
PUBLIC_PATHS = ("/", "/favicon.ico")
QUERY_KEY_PATHS = ("/api/stream", "/docs")
WS_UNAUTHORIZED = 4401
WS_FORBIDDEN_ORIGIN = 4403
_KEY_IN_QUERY = re.compile(r"(^|&)api_key=[^&]*")


def redact_query(query: str) -> str:
    """A query string fit for a log line: the ``api_key`` value replaced."""
    return _KEY_IN_QUERY.sub(r"\1api_key=***", query)


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def presented_key(scope: dict) -> str | None:
    """The key a request carries: ``X-API-Key``, ``Authorization: Bearer``, or (WebSocket and
    /docs) the ``api_key`` query parameter."""
    key = _header(scope, b"x-api-key")
    if key:
        return key
    auth = _header(scope, b"authorization") or ""
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    if scope.get("path") in QUERY_KEY_PATHS:
        values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("api_key")
        if values:
            return values[0]
    return None


def key_matches(presented: str | None, expected: str) -> bool:
    return presented is not None and hmac.compare_digest(presented.encode(), expected.encode())


class ApiKeyGate:
    """Refuses every request without the right key, except the web page (see module docstring)."""

    def __init__(self, app, api_key: str | None):
        self.app = app
        self.api_key = api_key

    async def __call__(self, scope, receive, send):
        if (self.api_key is None or scope["type"] not in ("http", "websocket")
                or scope.get("path") in PUBLIC_PATHS or scope.get("path", "").startswith(PUBLIC_PREFIXES)):
            await self.app(scope, receive, send)
            return
        if key_matches(presented_key(scope), self.api_key):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": WS_UNAUTHORIZED, "reason": "API key required"})
            return
        from fastapi.responses import JSONResponse

        error = ApiError(401, "this server needs an API key: send it in the X-API-Key header (or "
                              "Authorization: Bearer KEY).", "unauthorized")
        await JSONResponse(error.body(), status_code=401, headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)


def origin_allowed(scope: dict[str, Any], allowed: tuple[str, ...]) -> bool:
    """Whether a WebSocket's ``Origin`` may connect: none (not a browser), this server's own
    (same host and port), or one of ``allowed`` (``*``: any)."""
    origin = _header(scope, b"origin")
    if origin is None or "*" in allowed or origin in allowed:
        return True
    host = _header(scope, b"host")
    parts = urlsplit(origin)
    return bool(host) and parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()
