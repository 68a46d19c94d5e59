"""``/api/stream``: live frames over a WebSocket, each sent back cut out or composited.

The protocol (documented in the README, with a Python client):

1. Connect to ``ws://HOST/api/stream``; the query string holds the options, exactly as for
   ``POST /api/remove`` (``?bg_color=green&format=webp``), plus ``api_key`` when the server has one.
2. The server sends a text message ``{"type": "ready", "model": ..., "max_fps": ...,
   "max_message_bytes": ..., "frame_pixels": ...}``. ``frame_pixels`` is the most pixels a frame
   is worth to this model with the options connected with: it runs at about that many at the
   frame's aspect ratio, and its edge stage works from the network's output alone, so a frame
   shrunk to that many pixels before it is sent gives the same matte for less work on both sides
   (the page does this, and scales the matte back up). It is null when the full frame counts (an
   edge stage that reads the frame's own pixels, or a model that stretches the frame).
3. Send each frame as a binary message: a JPEG, PNG or WebP picture. For every frame it processes,
   the server sends a text message ``{"type": "frame", "index": N, "server_ms": ...,
   "dropped": ...}`` and then the result as a binary message (in the ``format`` option: PNG by
   default, WebP or JPEG are faster to encode). A frame refused for the frame-rate cap is answered
   ``{"type": "dropped", "dropped": N, ...}`` at once.
4. A text message ``{"options": {...}}`` changes the options for the following frames.

Two settings of the stream itself are query parameters (``smooth`` may also change in an options
message):

* ``reply=image`` (the default) answers each frame with the result picture, as above;
  ``reply=alpha`` answers it with the frame's matte alone: 8-bit alpha at the frame's size, row
  by row, compressed with zlib (the ``"frame"`` message then also gives ``width``, ``height`` and
  ``"encoding": "zlib"``). The client composites the frame itself (the web page does, on a
  canvas), which saves encoding a picture with alpha on the server and decoding it in the client.
  The alpha options (``threshold``, ``remove_islands``, ``fill_holes``, ``feather``,
  ``alpha_matting``) apply; the composition options are the client's.
* ``smooth=true`` smooths the matte over time with a causal smoother (as ``cleancut live``);
  off by default: on DAVIS ``dog`` it made the matte worse than frame by frame (MAE 0.0154 vs
  0.0102).

The server keeps up rather than queueing: while a frame is being processed only the newest frame
that arrived is kept (older ones are dropped), frames beyond ``--stream-max-fps`` per second are
dropped, and so are frames that find the server full: stream frames are admitted like requests
(and shown in ``/healthz``), at most ``workers`` of them at once, so that streams never fill the
queue requests wait in. ``dropped`` counts them all.

Every refusal is a close code with its reason (shortened to the 123 bytes a close reason holds;
the handshake is accepted first, so that a browser is told why): 4400 a ``Host`` not allowed,
4401 a missing or wrong API key, 4403 a foreign ``Origin``, 1013 the server full
(``--stream-max-connections``) or starting or stopping, 1009 a message over
``--stream-max-message-mb`` (refused by uvicorn as it arrives) or a text message over 64 KiB,
1003 a bad frame (not an image, corrupt, over ``--max-video-pixels``) or a text message that is
not ``{"options": {...}}`` (nested deeper than 8 levels included), 1008 an invalid option, 1000
``--stream-idle-seconds`` without a message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import zlib
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from .. import io as cio
from ..edges import resolve_stage
from ..errors import CleancutError
from ..live.session import FrameProcessor
from ..options import options_from_mapping
from .errors import ApiError
from .options import api_text, check_names
from .security import WS_FORBIDDEN_ORIGIN, origin_allowed, refuse_websocket
from .state import ServerState
from .uploads import check_image

router = APIRouter()
log = logging.getLogger("cleancut.server")

WS_NORMAL = 1000
WS_UNSUPPORTED = 1003
WS_POLICY = 1008
WS_TOO_BIG = 1009
WS_TRY_LATER = 1013
#: text messages carry options only: small and shallow
MAX_TEXT_BYTES = 64 * 1024
MAX_TEXT_DEPTH = 8
_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')
_STREAM_PARAMS = {"api_key", "reply", "smooth"}  # settings of the stream, not RemoveOptions
REPLIES = ("image", "alpha")
_REASON_BYTES = 123  # what a WebSocket close reason holds


def close_reason(text: str) -> str:
    """``text`` as a close reason: at most 123 bytes of UTF-8, cut at a word and marked with an
    ellipsis when it is longer (never in the middle of a word or of a character)."""
    if len(text.encode()) <= _REASON_BYTES:
        return text
    room = _REASON_BYTES - len(" …".encode())
    cut = text.encode()[:room].decode(errors="ignore")
    if " " in cut:
        cut = cut[:cut.rindex(" ")]
    return cut.rstrip(" ,;:") + " …"


class _Closed(Exception):
    def __init__(self, code: int, reason: str):
        self.code, self.reason = code, close_reason(reason)


def json_depth(text: str) -> int:
    """How deeply the arrays and objects of a JSON text nest (strings skipped), found without
    parsing it: Python's parser recurses once per level."""
    depth = deepest = 0
    for match in _JSON_TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif token in "]}":
            depth -= 1
    return deepest


def _flag(name: str, value: Any) -> bool:
    """A stream setting given as a boolean (true/false, 1/0, yes/no, on/off)."""
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise _Closed(WS_POLICY, f"stream setting '{name}' must be true or false, got {str(value)[:20]!r}")


def _reply(value: Any) -> str:
    if value not in REPLIES:
        raise _Closed(WS_POLICY, f"stream setting 'reply' must be one of {', '.join(REPLIES)}, "
                                 f"got {str(value)[:20]!r}")
    return value


def _options(state: ServerState, values: dict[str, Any], base=None):
    try:  # unknown names (suggesting an option or a setting of the stream), server settings, file paths
        check_names([k for k in values if k != "api_key"], "stream option", extra=("reply", "smooth"))
        values = {k: v for k, v in values.items() if k not in _STREAM_PARAMS}
        options = options_from_mapping(values, base=base or state.base)
        resolve_stage(options.edges, state.remover.spec)  # a learned stage the model lacks, refused here
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
    refusal = (
        (WS_FORBIDDEN_ORIGIN, "Origin not allowed: open the server's own page, or start it with --cors-origin.")
        if not origin_allowed(websocket.scope, settings.cors_origins) else
        (WS_TRY_LATER, "The server is starting or shutting down; retry in a moment.") if state.pool is None else
        (WS_TRY_LATER, f"The server has {state.streams} streams open, its most; retry later.")
        if state.streams >= settings.stream_max_connections else None)
    if refusal is not None:
        await refuse_websocket(websocket.receive, websocket.send, *refusal)
        return
    state.streams += 1
    try:
        await _serve(websocket, state)
    finally:
        state.streams -= 1


async def _serve(websocket: WebSocket, state: ServerState) -> None:
    settings = state.settings
    await websocket.accept()  # accepted first, so that a client is told why its options are refused
    query = dict(websocket.query_params)
    try:
        options = _options(state, query)
        reply = _reply(query.get("reply", "image"))
        smooth = _flag("smooth", query.get("smooth", "false"))
    except _Closed as closed:
        await websocket.close(code=closed.code, reason=closed.reason)
        return
    processor = FrameProcessor(state.remover, options, smooth=smooth)
    await websocket.send_text(json.dumps({
        "type": "ready", "model": state.remover.spec.name, "frame_pixels": frame_pixels(state.remover.spec, options),
        "max_fps": settings.stream_max_fps,
        "max_message_bytes": settings.stream_max_message_bytes, "idle_seconds": settings.stream_idle_seconds,
        "format": options.format, "reply": reply, "smooth": smooth}))
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
            with state.frame_slot() as admitted:
                if admitted:
                    payload, extra = await _process(state, processor, data, index, reply)
            if not admitted:  # the server is full: dropped, and said at once
                newest.dropped += 1
                async with newest.send_lock:
                    await websocket.send_text(json.dumps({"type": "dropped", "dropped": newest.dropped,
                                                          "reason": "the server is busy"}))
                continue
            async with newest.send_lock:
                await websocket.send_text(json.dumps({
                    "type": "frame", "index": index, "dropped": newest.dropped,
                    "server_ms": round((time.monotonic() - started) * 1000.0, 1), **extra}))
                await websocket.send_bytes(payload)
            index += 1
    except _Closed as closed:
        await _close(websocket, closed.code, closed.reason)
    except WebSocketDisconnect:
        pass
    finally:
        receiver.add_done_callback(_receiver_ended)
        receiver.cancel()


def frame_pixels(spec, options) -> int | None:
    """The most pixels a stream frame is worth to ``spec`` with ``options`` (see the ``ready``
    message): the network's pixel budget when it keeps the frame's aspect and its edge stage is
    the network's own; None when the frame's own pixels count."""
    if spec.aspect != "keep" or options.alpha_matting or resolve_stage(options.edges, spec) != "network":
        return None
    return spec.input_size[0] * spec.input_size[1]


def _receiver_ended(task: asyncio.Task) -> None:
    """Collects how a connection's receiver ended: a disconnect or its own close code is the
    connection's end, not something to log ("Task exception was never retrieved"); anything
    else is a bug, logged with its traceback."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None and not isinstance(exc, (_Closed, WebSocketDisconnect)):
        log.error("the stream's receiver failed", exc_info=exc)


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
            if size > MAX_TEXT_BYTES:
                raise _Closed(WS_TOO_BIG, f"text message of {size} bytes is over the limit of {MAX_TEXT_BYTES} "
                                          "bytes for options")
            if json_depth(text) > MAX_TEXT_DEPTH:
                raise _Closed(WS_UNSUPPORTED, f'text messages must be {{"options": {{...}}}}, not nested '
                                              f"deeper than {MAX_TEXT_DEPTH} levels")
            try:
                values = json.loads(text)["options"]
                if not isinstance(values, dict):
                    raise TypeError
            except (ValueError, KeyError, TypeError):
                raise _Closed(WS_UNSUPPORTED, 'text messages must be {"options": {...}}') from None
            if "reply" in values:
                raise _Closed(WS_POLICY, "reply is chosen when connecting (?reply=alpha); reconnect to change it")
            if "smooth" in values:
                _set_smoothing(processor, _flag("smooth", values["smooth"]))
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


def _set_smoothing(processor: FrameProcessor, smooth: bool) -> None:
    """Turn the connection's smoother on (a fresh one) or off, from the next frame on."""
    if smooth and processor.smoother is None:
        processor.smoother = FrameProcessor(processor.remover, processor.options, smooth=True).smoother
    elif not smooth:
        processor.smoother = None


def alpha_reply(processor: FrameProcessor, image) -> tuple[bytes, dict[str, Any]]:
    """The ``reply=alpha`` answer to one frame: its matte (smoothed when asked, then the alpha
    options of :func:`cleancut.refine.refine`) as 8-bit levels at the frame's size, zlib-compressed."""
    import numpy as np

    from ..refine import refine

    rgb, alpha = processor.matte(image)
    alpha = refine(alpha, rgb, processor.options)
    levels = np.clip(alpha * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return zlib.compress(levels.tobytes(), 1), {"width": rgb.width, "height": rgb.height, "encoding": "zlib"}


async def _process(state: ServerState, processor: FrameProcessor, data: bytes, index: int,
                   reply: str = "image") -> tuple[bytes, dict[str, Any]]:
    name = f"stream frame {index}"
    max_pixels = state.settings.frame_pixels  # a live frame is a video frame: the clips' cap
    try:
        check_image(data, name, max_pixels)
    except ApiError as exc:  # not an image the server takes, or over the pixel cap
        raise _Closed(WS_UNSUPPORTED, exc.message) from None

    def work() -> tuple[bytes, dict[str, Any]]:
        image = cio.flatten(cio.load_image(data, max_pixels=max_pixels, name=name))
        if reply == "alpha":
            return alpha_reply(processor, image)
        frame = processor(image, index)
        return cio.encode_image(frame.result, processor.options.format, processor.options.quality), {}

    try:
        return await asyncio.get_running_loop().run_in_executor(state.pool, work)
    except CleancutError as exc:
        raise _Closed(WS_UNSUPPORTED, str(exc)) from None
