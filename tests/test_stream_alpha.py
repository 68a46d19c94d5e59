"""``/api/stream``'s settings of the stream itself: ``reply=alpha`` (the matte alone, zlib-compressed
8-bit levels, composited by the client), ``smooth`` (off by default, on and off mid-stream), and
close reasons that fit the 123 bytes a WebSocket close reason holds."""

from __future__ import annotations

import io
import json
import time
import zlib

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from starlette.websockets import WebSocketDisconnect  # noqa: E402

from cleancut.server import ServerSettings, create_app  # noqa: E402
from cleancut.server.stream import close_reason  # noqa: E402
from cleancut.testing import square_image  # noqa: E402


@pytest.fixture(scope="module")
def client(tiny_model):
    with TestClient(create_app(ServerSettings.from_values(model=str(tiny_model), warm_up=False))) as c:
        yield c


def png(size=(64, 48), shift: int = 0) -> bytes:
    img = square_image(size)
    if shift:
        img = Image.fromarray(np.roll(np.asarray(img), shift, axis=1))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def closed_with(client, url: str, messages=()) -> WebSocketDisconnect:
    try:
        with client.websocket_connect(url) as ws:
            ws.receive_json()
            for m in messages:
                ws.send_text(json.dumps(m))
            ws.send_bytes(png())
            while True:
                message = ws.receive()
                if message["type"] == "websocket.close":
                    return WebSocketDisconnect(message.get("code", 1000), message.get("reason", ""))
    except WebSocketDisconnect as exc:
        return exc


def test_alpha_reply_is_the_mask_of_the_image_reply(client):
    photo = png()
    mask = np.asarray(Image.open(io.BytesIO(client.post("/api/remove", params={"mode": "mask"},
                                                        content=photo).content)))
    with client.websocket_connect("/api/stream?reply=alpha&feather=0") as ws:
        hello = ws.receive_json()
        assert hello["reply"] == "alpha" and hello["smooth"] is False
        ws.send_bytes(photo)
        meta = ws.receive_json()
        assert (meta["width"], meta["height"], meta["encoding"]) == (64, 48, "zlib")
        payload = ws.receive_bytes()
    levels = np.frombuffer(zlib.decompress(payload), np.uint8).reshape(48, 64)
    assert len(payload) < levels.size  # compressed
    assert np.abs(levels.astype(int) - mask.astype(int)).max() <= 1  # the same matte, 8-bit


def test_alpha_reply_applies_the_alpha_options_mid_stream(client):
    with client.websocket_connect("/api/stream?reply=alpha") as ws:
        ws.receive_json()
        ws.send_bytes(png())
        meta = ws.receive_json()
        soft = np.frombuffer(zlib.decompress(ws.receive_bytes()), np.uint8)
        ws.send_text(json.dumps({"options": {"threshold": 0.5, "mode": "color", "bg_color": "red"}}))
        time.sleep(0.05)
        ws.send_bytes(png())
        ws.receive_json()
        hard = np.frombuffer(zlib.decompress(ws.receive_bytes()), np.uint8)
    assert meta["index"] == 0
    assert set(np.unique(hard)) <= {0, 255} and len(np.unique(soft)) > 2


def test_smoothing_is_off_by_default_and_can_be_switched(client):
    """Smoothed, the second frame's matte lags behind the moved square; frame by frame it does not."""
    first, moved = png(), png(shift=12)

    def second_matte(url: str, messages=()) -> np.ndarray:
        with client.websocket_connect(url) as ws:
            ws.receive_json()
            for m in messages:
                ws.send_text(json.dumps(m))
            ws.send_bytes(first)
            ws.receive_json(), ws.receive_bytes()
            time.sleep(0.05)
            ws.send_bytes(moved)
            ws.receive_json()
            return np.frombuffer(zlib.decompress(ws.receive_bytes()), np.uint8).astype(int)

    with client.websocket_connect("/api/stream?reply=alpha") as ws:
        ws.receive_json()
        ws.send_bytes(moved)
        ws.receive_json()
        alone = np.frombuffer(zlib.decompress(ws.receive_bytes()), np.uint8).astype(int)
    plain = second_matte("/api/stream?reply=alpha")
    smoothed = second_matte("/api/stream?reply=alpha&smooth=true")
    switched_on = second_matte("/api/stream?reply=alpha", [{"options": {"smooth": True}}])
    switched_off = second_matte("/api/stream?reply=alpha&smooth=true", [{"options": {"smooth": "false"}}])
    assert np.abs(plain - alone).max() <= 1 and np.abs(switched_off - alone).max() <= 1
    assert np.abs(smoothed - alone).max() > 10 and np.abs(switched_on - smoothed).max() <= 1


def test_stream_settings_are_checked(client):
    err = closed_with(client, "/api/stream?smooth=maybe")
    assert err.code == 1008 and "'smooth' must be true or false" in err.reason
    err = closed_with(client, "/api/stream?reply=jpeg")
    assert err.code == 1008 and "one of image, alpha" in err.reason
    err = closed_with(client, "/api/stream", [{"options": {"reply": "alpha"}}])
    assert err.code == 1008 and "reply is chosen when connecting" in err.reason


def test_close_reasons_fit_and_end_on_a_word(client):
    err = closed_with(client, "/api/stream?smoth=false")
    assert err.code == 1008 and len(err.reason.encode()) <= 123
    assert err.reason.startswith("unknown stream option 'smoth' (did you mean 'smooth'?)")
    assert err.reason.endswith(" …")
    listed = err.reason[:-2].rsplit(": ", 1)[1].split(", ")  # every name shown is whole
    assert listed and all(name.isidentifier() for name in listed)
    long = "é" * 200
    assert close_reason(long).endswith(" …") and len(close_reason(long).encode()) <= 123
    assert close_reason("short reason") == "short reason"
