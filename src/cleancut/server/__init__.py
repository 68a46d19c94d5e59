"""``cleancut serve``: background removal over HTTP, plus a web page.

    from cleancut.server import ServerSettings, create_app
    app = create_app(ServerSettings.from_values(model="path/to/model.onnx", workers=2))
    # uvicorn.run(app)  -- or: cleancut serve --model path/to/model.onnx

Importing this package creates nothing (no app, no model, no threads); FastAPI is imported by
:func:`create_app`, with an install hint when the ``server`` extra is missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .settings import ServerSettings

if TYPE_CHECKING:  # pragma: no cover
    from fastapi import FastAPI

__all__ = ["ServerSettings", "create_app"]


def create_app(settings: ServerSettings | None = None) -> "FastAPI":
    """The FastAPI app for ``settings`` (default: ``cleancut-default``, 2 workers, queue 16,
    25 MiB uploads). The model is resolved here (an unknown one raises ModelError); its ONNX
    session and the worker pool are created when the app starts (ASGI
    lifespan) and released when it stops, after in-flight requests are finished."""
    import importlib.util

    from .._deps import require
    from ..errors import MissingDependencyError

    require("fastapi", "cleancut serve")
    if importlib.util.find_spec("python_multipart") is None and importlib.util.find_spec("multipart") is None:
        raise MissingDependencyError("python-multipart", "server", "cleancut serve (uploads)")
    from .app import build_app

    return build_app(settings)
