"""Who may call the service: the ``Host`` allow-list, the API key, the origin check of the
WebSocket, and keeping the key out of every log line.

* :class:`HostGate` (ASGI middleware): a request's ``Host`` must name this server: ``localhost``,
  ``127.0.0.1``, ``::1``, the address the connection came in on, or one of ``--allowed-hosts``. A
  web page whose domain an attacker re-points at this machine (DNS rebinding) sends its own name,
  and is refused: 400 on HTTP, close code 4400 on the WebSocket. A request without ``Host`` (not a
  browser: HTTP/1.0 scripts) is let through.
* :class:`ApiKeyGate` (ASGI middleware): with ``--api-key``, every request but the web page
  (``/`` and ``/static/...``, which hold no data and ask for the key) and the assets of the API
  documentation (``/docs-static/...``) must carry the key, in the ``X-API-Key`` header or as
  ``Authorization: Bearer KEY``. Browsers cannot set headers on a WebSocket or on a page they
  navigate to, so ``/api/stream``, ``/docs`` and the schema it loads (``/openapi.json``) also take
  it as the ``api_key`` query parameter. Keys are compared in constant time. A refused HTTP
  request gets 401 with the usual JSON error; a refused WebSocket is closed with 4401.
* :func:`origin_allowed`: a browser page on another site must not drive a user's local service
  through their browser, so a WebSocket whose ``Origin`` is neither this server's own nor one of
  ``--cors-origin`` is refused (4403). Clients that send no ``Origin`` (scripts, not browsers) are
  let through: the API key is what guards against them.
* :class:`RedactSecrets` (a logging filter): the value of every ``api_key`` query parameter, right
  or wrong, and the server's key wherever it appears, are replaced by ``***`` in every log record
  of cleancut's and uvicorn's loggers, whoever formats them.

Every WebSocket refusal is made after the handshake (:func:`refuse_websocket`: accept, then close
with the code and a reason), because a refusal at the handshake reaches a browser as a bare
failure (HTTP 403) that does not say why.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from .errors import ApiError, shown

PUBLIC_PREFIXES = ("/static/", "/docs-static/")
PUBLIC_PATHS = ("/", "/favicon.ico")
QUERY_KEY_PATHS = ("/api/stream", "/docs", "/openapi.json")
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "[::1]")
WS_HOST_NOT_ALLOWED = 4400
WS_UNAUTHORIZED = 4401
WS_FORBIDDEN_ORIGIN = 4403
#: ``api_key=VALUE`` in a query string or URL, the name possibly percent-encoded (api%5Fkey)
_KEY_IN_TEXT = re.compile(r"(?i)(api(?:_|%5f)key=)[^&\s\"'#]*")
#: loggers whose records may carry a request's URL
LOGGERS = ("cleancut", "cleancut.server", "uvicorn", "uvicorn.error", "uvicorn.access")


def redact_query(query: str) -> str:
    """A query string or URL fit for a log line: the value of every ``api_key`` replaced."""
    return _KEY_IN_TEXT.sub(r"\1***", query)


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


# ---------------------------------------------------------------- refusals


async def refuse_websocket(receive, send, code: int, reason: str) -> None:
    """Accept a WebSocket and close it at once with ``code`` and ``reason`` (a short sentence:
    a close reason holds 123 bytes), so that the client (a browser included) is told why."""
    message = await receive()
    if message["type"] != "websocket.connect":  # gone before its handshake was answered
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": code, "reason": reason})


# ---------------------------------------------------------------- Host


def _host_name(host: str) -> str:
    """The name part of a ``Host`` header: lower case, without the port, IPv6 in brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _address_name(address: str) -> str:
    try:
        return f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
    except ValueError:
        return address.lower()


def host_allowed(scope: dict[str, Any], allowed: tuple[str, ...]) -> bool:
    """Whether the request's ``Host`` names this server (see the module docstring)."""
    host = _header(scope, b"host")
    if host is None or "*" in allowed:
        return True
    name = _host_name(host)
    server = scope.get("server")
    names = {*DEFAULT_HOSTS, *(a.lower() for a in allowed if not a.startswith("*."))}
    if server and server[0]:
        names.add(_address_name(server[0]))
    return name in names or any(name.endswith(a[1:].lower()) for a in allowed if a.startswith("*."))


class HostGate:
    """Refuses a request whose ``Host`` does not name this server (see the module docstring)."""

    def __init__(self, app, allowed: tuple[str, ...]):
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket") or host_allowed(scope, self.allowed):
            await self.app(scope, receive, send)
            return
        host = shown(_header(scope, b"host") or "", 60)
        if scope["type"] == "websocket":
            await refuse_websocket(receive, send, WS_HOST_NOT_ALLOWED, "Host not allowed; start the server "
                                   "with --allowed-hosts to accept this name.")
            return
        from fastapi.responses import JSONResponse

        error = ApiError(400, f"this server does not answer to the Host {host}; it answers to localhost, its "
                              "own address and the names given with --allowed-hosts.", "host_not_allowed")
        await JSONResponse(error.body(), status_code=400)(scope, receive, send)


# ---------------------------------------------------------------- API key


def presented_key(scope: dict) -> str | None:
    """The key a request carries: ``X-API-Key``, ``Authorization: Bearer``, or (WebSocket,
    /docs and its schema) the ``api_key`` query parameter."""
    key = _header(scope, b"x-api-key")
    if key:
        return key
    auth = _header(scope, b"authorization") or ""
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    if scope.get("path") in QUERY_KEY_PATHS:
        return query_key(scope)
    return None


def query_key(scope: dict) -> str | None:
    """The ``api_key`` query parameter of a request, if any."""
    for name, value in parse_qsl(scope.get("query_string", b"").decode("latin-1")):
        if name == "api_key":
            return value
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
            await refuse_websocket(receive, send, WS_UNAUTHORIZED, "API key required: pass ?api_key=KEY.")
            return
        from fastapi.responses import JSONResponse

        error = ApiError(401, "this server needs an API key: send it in the X-API-Key header (or "
                              "Authorization: Bearer KEY).", "unauthorized")
        await JSONResponse(error.body(), status_code=401, headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)


# ---------------------------------------------------------------- Origin


def origin_allowed(scope: dict[str, Any], allowed: tuple[str, ...]) -> bool:
    """Whether a WebSocket's ``Origin`` may connect: none (not a browser), this server's own
    (same host and port), or one of ``allowed`` (``*``: any)."""
    origin = _header(scope, b"origin")
    if origin is None or "*" in allowed or origin in allowed:
        return True
    host = _header(scope, b"host")
    parts = urlsplit(origin)
    return bool(host) and parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()


# ---------------------------------------------------------------- logs


class RedactSecrets(logging.Filter):
    """Replaces secrets in every record it sees (see the module docstring); records are changed
    in place, so every handler after it gets the redacted text."""

    def __init__(self) -> None:
        super().__init__("cleancut-redact")
        self.secrets: set[str] = set()

    def add(self, secret: str) -> None:
        self.secrets.add(secret)

    def redact(self, text: str) -> str:
        text = redact_query(text)
        for secret in self.secrets:
            for form in {secret, unquote(secret)}:
                text = text.replace(form, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


_REDACTOR = RedactSecrets()


def redact_logs(api_key: str | None, handlers: list[logging.Handler] = ()) -> RedactSecrets:
    """Install the redacting filter on the loggers that can carry a URL (cleancut's and
    uvicorn's) and on ``handlers``, once each; remember ``api_key``."""
    if api_key:
        _REDACTOR.add(api_key)
    for target in [*(logging.getLogger(name) for name in LOGGERS), *handlers]:
        if _REDACTOR not in target.filters:
            target.addFilter(_REDACTOR)
    return _REDACTOR
