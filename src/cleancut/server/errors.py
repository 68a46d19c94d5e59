"""The one error shape of the HTTP API: ``{"error": "<clear message>", "detail": ...}``."""

from __future__ import annotations

from typing import Any

from ..options import _shown

#: how much of a client's input an error message may quote (a repr, shortened past it)
ECHO_LIMIT = 60


def shown(value: Any, limit: int = ECHO_LIMIT) -> str:
    """``repr(value)`` for a message, shortened to about ``limit`` characters: error bodies and
    log lines quote at most a short prefix of what a client sent."""
    return _shown(value, limit)


class ApiError(Exception):
    """An error answered to the client with ``status`` and a JSON body.

    ``message`` is a full sentence saying what was expected, what was found and what to do;
    ``detail`` is machine-readable context (a dict with at least ``code``, or a list of
    validation errors).
    """

    def __init__(self, status: int, message: str, code: str, headers: dict[str, str] | None = None,
                 **detail: Any):
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = {"code": code, **detail}
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "detail": self.detail}
