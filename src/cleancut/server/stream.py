"""``/api/stream``: live frames over a WebSocket, each sent back cut out or composited.

The protocol (documented in the README, with a Python client):

1. Connect to ``ws://HOST/api/stream``; the query string holds the options, exactly as for
   ``POST /api/remove`` (``?bg_color=green&format=webp``), plus ``api_key`` when the server has one.
2. The server sends a text message ``{"type": "ready", "model": ..., "max_fps": ...,
   "max_message_bytes": ...}``.
3. Send each frame as a binary message: a JPEG, PNG or WebP picture. For every frame it processes,
   the server sends a text message ``{"type": "frame", "index": N, "server_ms": ...,
   "dropped": ...}`` and then the result as a binary message (in the ``format`` option: PNG by
   default, WebP or JPEG are faster to encode). A frame refused for the frame-rate cap is answered
   ``{"type": "dropped", "dropped": N, ...}`` at once.
4. A text message ``{"options": {...}}`` changes the options for the following frames.

The server keeps up rather than queueing: while a frame is being processed only the newest frame
that arrived is kept (older ones are dropped), and frames beyond ``--stream-max-fps`` per second
are dropped; ``dropped`` counts both. A message over ``--stream-max-message-mb`` closes the
connection (1009), as does ``--stream-idle-seconds`` without a message (1000), a bad frame or an
invalid option (1003 / 1008, with the reason). Each connection has its own causal smoother, so
the matte is smoothed over time as in ``cleancut live``.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from .. import io as cio
from ..errors import CleancutError
from ..live.session import FrameProcessor
from ..options import options_from_mapping
from .errors import ApiError
from .options import api_text, check_names
from .security import WS_FORBIDDEN_ORIGIN, origin_allowed
from .state import ServerState
from .uploads import check_image

router = APIRouter()

WS_NORMAL = 1000
WS_UNSUPPORTED = 1003
WS_POLICY = 1008
WS_TOO_BIG = 1009
_STREAM_PARAMS = {"api_key"}


class _Closed(Exception):
    def __init__(self, code: int, reason: str):
        self.code, self.reason = code, reason[:120]  # a close reason holds at most 123 bytes


def _options(state: ServerState, values: dict[str, Any], base=None):
    values = {k: v for k, v in values.items() if k not in _STREAM_PARAMS}
    try:
        check_names(values, "stream option")  # unknown names, server settings, file paths
        options = options_from_mapping(values, base=base or state.base)
    except CleancutError as exc:
        raise _Closed(WS_POLICY, api_text(str(exc))) from None
    if options.crop:
        raise _Closed(WS_POLICY, "crop changes the frame size; it is not available on a stream")
    return options


class _Newest:
    """The newest frame waiting to be processed (older ones are dropped), and the connection's
    send lock (the loop and the receiver both send)."""

    def __init__(self):
        self.data: bytes | None = None
        self.event = asyncio.Event()
        self.dropped = 0
        self.last_accepted = 0.0
        self.send_lock = asyncio.Lock()


@router.websocket("/api/stream")
async def stream(websocket: WebSocket):
    state: ServerState = websocket.app.state.cleancut
    settings = state.settings
    if not origin_allowed(websocket.scope, settings.cors_origins):
        await websocket.close(code=WS_FORBIDDEN_ORIGIN, reason="origin not allowed")
        return
    if state.pool is None:
        await websocket.close(code=1013, reason="the server is starting or shutting down")
        return
    await websocket.accept()  # accepted first, so that a client is told why its options are refused
    try:
        options = _options(state, dict(websocket.query_params))
    except _Closed as closed:
        await websocket.close(code=closed.code, reason=closed.reason)
        return
    processor = FrameProcessor(state.remover, options)
    await websocket.send_text(json.dumps({
        "type": "ready", "model": state.remover.spec.name, "max_fps": settings.stream_max_fps,
        "max_message_bytes": settings.stream_max_message_bytes, "idle_seconds": settings.stream_idle_seconds,
        "format": options.format}))
    newest = _Newest()
    receiver = asyncio.create_task(_receive(websocket, state, processor, newest))
    try:
        index = 0
        while True:
            waiter = asyncio.create_task(newest.event.wait())
            done, _ = await asyncio.wait({waiter, receiver}, return_when=asyncio.FIRST_COMPLETED)
            if receiver in done and not newest.event.is_set():
                waiter.cancel()
                receiver.result()  # re-raises _Closed or a disconnect
                return
            newest.event.clear()
            data, newest.data = newest.data, None
            if data is None:
                continue
            started = time.monotonic()
            payload = await _process(state, processor, data, index)
            async with newest.send_lock:
                await websocket.send_text(json.dumps({
                    "type": "frame", "index": index, "dropped": newest.dropped,
                    "server_ms": round((time.monotonic() - started) * 1000.0, 1)}))
                await websocket.send_bytes(payload)
            index += 1
    except _Closed as closed:
        await _close(websocket, closed.code, closed.reason)
    except WebSocketDisconnect:
        pass
    finally:
        receiver.cancel()


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    try:
        await websocket.close(code=code, reason=reason)
    except RuntimeError:  # already closed by the client
        return


async def _receive(websocket: WebSocket, state: ServerState, processor: FrameProcessor, newest: _Newest) -> None:
    settings = state.settings
    interval = 1.0 / settings.stream_max_fps
    while True:
        try:
            message = await asyncio.wait_for(websocket.receive(), timeout=settings.stream_idle_seconds)
        except asyncio.TimeoutError:
            raise _Closed(WS_NORMAL, f"idle for {settings.stream_idle_seconds:g} s") from None
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", WS_NORMAL))
        data, text = message.get("bytes"), message.get("text")
        size = len(data) if data is not None else len((text or "").encode())
        if size > settings.stream_max_message_bytes:
            raise _Closed(WS_TOO_BIG, f"message of {size} bytes is over the limit of "
                                      f"{settings.stream_max_message_bytes} bytes")
        if text is not None:
            try:
                values = json.loads(text)["options"]
                if not isinstance(values, dict):
                    raise TypeError
            except (ValueError, KeyError, TypeError):
                raise _Closed(WS_UNSUPPORTED, 'text messages must be {"options": {...}}') from None
            processor.options = _options(state, values, base=processor.options)
            continue
        now = time.monotonic()
        if now - newest.last_accepted < interval * 0.999:
            newest.dropped += 1  # over the frame-rate cap: said at once, so a client waiting for a reply goes on
            async with newest.send_lock:
                await websocket.send_text(json.dumps({"type": "dropped", "dropped": newest.dropped,
                                                      "reason": "over the frame-rate cap"}))
            continue
        newest.last_accepted = now
        if newest.data is not None:
            newest.dropped += 1  # replaced before it could be processed
        newest.data = data
        newest.event.set()


async def _process(state: ServerState, processor: FrameProcessor, data: bytes, index: int) -> bytes:
    name = f"stream frame {index}"
    try:
        check_image(data, name, state.base.max_pixels)
    except ApiError as exc:  # not an image the server takes, or over the pixel cap
        raise _Closed(WS_UNSUPPORTED, exc.message) from None

    def work() -> bytes:
        image = cio.load_image(data, max_pixels=state.base.max_pixels, name=name)
        frame = processor(cio.flatten(image), index)
        return cio.encode_image(frame.result, processor.options.format, processor.options.quality)

    try:
        return await asyncio.get_running_loop().run_in_executor(state.pool, work)
    except CleancutError as exc:
        raise _Closed(WS_UNSUPPORTED, str(exc)) from None
