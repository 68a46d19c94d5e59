"""The HTTP protocol ``cleancut serve`` runs: uvicorn's h11 implementation with a deadline on the
request head and its own refusals in the API's JSON error shape.

uvicorn times out an idle keep-alive connection, but not a request head that arrives slowly: a
client that sends a request line and then a header every few seconds would hold its connection
(and a file descriptor) for as long as it likes. Here the head must be complete within
``read_timeout`` seconds of its first byte (or of the connection, for the first request): past it
the client gets 408 and the connection is closed (silently when it sent nothing). The body's
timeouts are the app's (:class:`cleancut.server.app.ReadDeadline`), so that they hold under any
ASGI server.
"""

from __future__ import annotations

import asyncio
import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


def _answer(status: int, reason: bytes, message: str, code: str) -> bytes:
    """A whole HTTP/1.1 response with the API's JSON error body, closing the connection."""
    body = json.dumps({"error": message, "detail": {"code": code}}).encode()
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % (status, reason, len(body)) + body)


def guarded_h11(read_timeout: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol class, with a ``read_timeout`` deadline on each request head and
    JSON bodies for the 400s it answers to malformed requests."""

    class GuardedH11Protocol(H11Protocol):
        head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self._arm()  # a head has begun (or is still coming): it has read_timeout in all
            else:
                self._disarm()

        def _arm(self) -> None:
            if self.head_timer is None:
                self.head_timer = self.loop.call_later(read_timeout, self._head_too_slow)

        def _disarm(self) -> None:
            if self.head_timer is not None:
                self.head_timer.cancel()
                self.head_timer = None

        def _head_too_slow(self) -> None:
            self.head_timer = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return
            if self.conn.trailing_data[0]:  # part of a head arrived: say why the connection ends
                self.logger.info("request head not complete after %g s; closing the connection", read_timeout)
                self.transport.write(_answer(
                    408, b"Request Timeout", f"the request line and headers did not arrive within "
                    f"{read_timeout:g} s; send them at once.", "read_timeout"))
            self.transport.close()

        def send_400_response(self, msg: str) -> None:
            self.transport.write(_answer(
                400, b"Bad Request", "the request is not valid HTTP/1.1 (a malformed request line, header, "
                "Content-Length or chunk); see /docs for the API.", "bad_request"))
            self.transport.close()

    return GuardedH11Protocol
