"""The WebSocket ``/api/stream`` (live frames in, cut-outs out) and the security of the new
endpoints: origin check, message size, frame rate and idle caps, and ``--api-key``."""

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
from cleancut.testing import square_image  # noqa: E402

from cleancut.cli import main as cli_main  # noqa: E402
from cleancut.server import ServerSettings, create_app  # noqa: E402

KEY = "s3cret-key-for-tests"


def make_client(tiny_model, **kwargs) -> TestClient:
    return TestClient(create_app(ServerSettings.from_values(model=str(tiny_model), warm_up=False, **kwargs)))


def png(size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    square_image(size).save(buf, "PNG")
    return buf.getvalue()


def closed(ws) -> WebSocketDisconnect:
    """Read until the server closes the connection; its close code and reason."""
    while True:
        message = ws.receive()
        if message["type"] == "websocket.close":
            return WebSocketDisconnect(message.get("code", 1000), message.get("reason", ""))


def close_of(client, url: str, **kwargs) -> WebSocketDisconnect:
    """How the server ends a connection to ``url``: refused at the handshake, or closed after it."""
    try:
        with client.websocket_connect(url, **kwargs) as ws:
            return closed(ws)
    except WebSocketDisconnect as exc:
        return exc


@pytest.fixture(scope="module")
def client(tiny_model):
    with make_client(tiny_model) as c:
        yield c


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 127, b > 127
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_frames_come_back_and_match_the_photo_path(client):
    photo = png()
    with client.websocket_connect("/api/stream?mode=mask") as ws:
        hello = ws.receive_json()
        assert hello["type"] == "ready" and hello["model"] == "tiny" and hello["format"] == "png"
        masks = []
        for i in range(3):
            ws.send_bytes(photo)
            meta = ws.receive_json()
            assert meta["type"] == "frame" and meta["index"] == i and meta["server_ms"] >= 0
            masks.append(np.asarray(Image.open(io.BytesIO(ws.receive_bytes()))))
            time.sleep(0.04)  # under the default cap of 30 frames/s
    reference = np.asarray(Image.open(io.BytesIO(client.post("/api/remove", params={"mode": "mask"},
                                                             content=photo).content)))
    assert masks[0].shape == reference.shape == (48, 64)
    assert _iou(masks[0], reference) >= 0.98  # the first frame has no past to smooth with
    assert all(_iou(m, reference) >= 0.98 for m in masks)  # a still scene stays put


def test_options_can_change_mid_stream_and_bad_ones_close_the_connection(client):
    with client.websocket_connect("/api/stream?bg_color=red") as ws:
        ws.receive_json()
        ws.send_text(json.dumps({"options": {"bg_color": "blue"}}))
        ws.send_bytes(png())
        ws.receive_json()
        out = Image.open(io.BytesIO(ws.receive_bytes())).convert("RGB")
        r, g, b = out.getpixel((1, 1))
        assert b > 200 and r < 50
    err = close_of(client, "/api/stream?model=/etc/passwd")
    assert err.code == 1008 and "server setting" in err.reason
    err = close_of(client, "/api/stream?colour=red")
    assert err.code == 1008 and "did you mean 'bg_color'" in err.reason


def test_a_frame_that_is_not_an_image_closes_the_connection(client):
    with client.websocket_connect("/api/stream") as ws:
        ws.receive_json()
        ws.send_bytes(b"%PDF-1.4 not a frame")
        err = closed(ws)
    assert err.code == 1003 and "stream frame 0" in err.reason


# -- security ----------------------------------------------------------------------------------------


def test_origin_is_checked(tiny_model):
    with make_client(tiny_model, cors_origins=("https://app.example",)) as c:
        assert close_of(c, "/api/stream", headers={"origin": "https://evil.example"}).code == 4403
        for origin in ("http://testserver", "https://app.example"):  # its own page, an allowed site
            with c.websocket_connect("/api/stream", headers={"origin": origin}) as ws:
                assert ws.receive_json()["type"] == "ready"


def test_message_size_is_capped(tiny_model):
    with make_client(tiny_model, stream_max_message_bytes=4096) as c:
        with c.websocket_connect("/api/stream") as ws:
            ws.receive_json()
            ws.send_bytes(b"\xff" * 5000)
            err = closed(ws)
    assert err.code == 1009 and "over the limit of 4096 bytes" in err.reason


def test_frame_rate_is_capped_per_connection(tiny_model):
    with make_client(tiny_model, stream_max_fps=2.0) as c:
        with c.websocket_connect("/api/stream") as ws:
            ws.receive_json()
            ws.send_bytes(png())
            ws.send_bytes(png())  # half a second too early
            got = [ws.receive_json()]
            got.append(ws.receive_bytes() if got[0]["type"] == "frame" else ws.receive_json())
            got.append(ws.receive_json() if isinstance(got[1], bytes) else ws.receive_bytes())
    kinds = [g["type"] if isinstance(g, dict) else "image" for g in got]
    assert sorted(kinds) == ["dropped", "frame", "image"]
    assert next(g for g in got if isinstance(g, dict) and g["type"] == "dropped")["dropped"] == 1


def test_idle_connections_are_closed(tiny_model):
    with make_client(tiny_model, stream_idle_seconds=0.3) as c:
        with c.websocket_connect("/api/stream") as ws:
            ws.receive_json()
            started = time.monotonic()
            err = closed(ws)
    assert err.code == 1000 and "idle" in err.reason and time.monotonic() - started < 5


def test_api_key_protects_every_endpoint_but_the_page(tiny_model):
    with make_client(tiny_model, api_key=KEY) as c:
        for path in ("/healthz", "/api/models", "/api/options", "/openapi.json", "/docs"):
            r = c.get(path)
            assert r.status_code == 401 and r.json()["detail"]["code"] == "unauthorized", path
        assert c.post("/api/remove", content=png()).status_code == 401
        assert c.post("/api/remove", content=png(), headers={"X-API-Key": "wrong-key-123"}).status_code == 401
        assert c.post("/api/remove", content=png(), headers={"X-API-Key": KEY}).status_code == 200
        assert c.get("/api/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert c.get("/api/models", params={"api_key": KEY}).status_code == 401  # only the socket and /docs
        assert c.get("/docs", params={"api_key": KEY}).status_code == 200
        assert c.get("/").status_code == 200  # the page holds no data; it asks for the key
        assert close_of(c, "/api/stream").code == 4401
        with c.websocket_connect(f"/api/stream?api_key={KEY}") as ws:
            assert ws.receive_json()["type"] == "ready"


def test_api_key_must_be_a_real_key():
    from cleancut.errors import ConfigError

    with pytest.raises(ConfigError, match="at least 8 characters"):
        ServerSettings(api_key="short")


def test_binding_beyond_loopback_without_a_key_warns(tiny_model, monkeypatch, capsys):
    from cleancut.cli import serve

    class Server:
        started = True

        def run(self):
            return None

    monkeypatch.setattr(serve, "make_server", lambda app, **kw: Server())
    monkeypatch.delenv("CLEANCUT_API_KEY", raising=False)
    common = ["serve", "--model", str(tiny_model), "--no-warm-up"]
    assert cli_main([*common, "--host", "0.0.0.0"]) == 0
    assert "without --api-key" in capsys.readouterr().err
    for args in (["--host", "127.0.0.1"], ["--host", "0.0.0.0", "--api-key", KEY], ["--host", "::1"]):
        assert cli_main([*common, *args]) == 0
        assert "without --api-key" not in capsys.readouterr().err, args
    assert serve.is_loopback("localhost") and not serve.is_loopback("192.168.1.4")


def test_cleancut_serve_declines_permessage_deflate(tiny_model):
    """What travels on the stream is compressed already (JPEG, PNG or WebP frames; zlib mattes or
    encoded pictures back), so ``cleancut serve`` declines the permessage-deflate extension that
    browsers offer, which would deflate every frame again on the way out and inflate it on the way
    in, on both sides of each round trip."""
    import base64
    import os
    import socket

    from serving import served

    app = create_app(ServerSettings.from_values(model=str(tiny_model), warm_up=False))
    with served(app) as (_, port):
        key = base64.b64encode(os.urandom(16)).decode()
        request = ("GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                   "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n")  # as Chromium asks
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(request.encode())
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(4096)
                assert chunk, head
                head += chunk
    head = head.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    assert head.startswith("HTTP/1.1 101 "), head
    assert "sec-websocket-extensions" not in head.lower(), head


def test_ready_says_how_many_pixels_a_frame_is_worth(tmp_path):
    """``frame_pixels``: the network's pixel budget for a model that keeps the frame's aspect and
    whose edge stage reads only the network's output; null when the frame's own pixels count.
    A frame shrunk to that budget gives the matte of the full frame (at its size)."""
    from cleancut.testing import write_tiny_model

    keep = write_tiny_model(tmp_path / "keep", name="tiny-keep", input_size=(40, 40), aspect="keep", size_multiple=8)
    stretch = write_tiny_model(tmp_path / "stretch", name="tiny-stretch", input_size=(40, 40))
    with make_client(keep) as c:
        for query, expected in (("", 1600), ("?edges=network", 1600), ("?edges=guided", None),
                                ("?edges=learned", None), ("?alpha_matting=true", None)):
            with c.websocket_connect(f"/api/stream{query}") as ws:
                assert ws.receive_json()["frame_pixels"] == expected, query
        photo = square_image((160, 120))
        full, small = io.BytesIO(), io.BytesIO()
        photo.save(full, "PNG")
        photo.resize((46, 34), Image.BILINEAR).save(small, "PNG")  # 1,564 px: within the budget
        full, small = full.getvalue(), small.getvalue()
        masks = []
        with c.websocket_connect("/api/stream?reply=alpha") as ws:
            ws.receive_json()
            for frame in (full, small):
                ws.send_bytes(frame)
                meta = ws.receive_json()
                alpha = np.frombuffer(zlib.decompress(ws.receive_bytes()), np.uint8).reshape(meta["height"], meta["width"])
                masks.append(alpha)
                time.sleep(0.04)
    big = np.asarray(Image.fromarray(masks[1]).resize((160, 120), Image.BILINEAR))
    assert masks[0].shape == (120, 160) and masks[1].shape == (34, 46)
    assert _iou(masks[0], big) >= 0.95
    with make_client(stretch) as c, c.websocket_connect("/api/stream") as ws:
        assert ws.receive_json()["frame_pixels"] is None
    plain = write_tiny_model(tmp_path / "plain", name="tiny-plain", edge_refiner=False)
    with make_client(plain) as c:  # a learned stage the model does not have: refused with its reason
        refused = close_of(c, "/api/stream?edges=learned")
        assert refused.code == 1008 and "no learned edge stage" in refused.reason
        with c.websocket_connect("/api/stream") as ws:
            ws.receive_json()
            ws.send_text(json.dumps({"options": {"edges": "learned"}}))
            after = closed(ws)
        assert after.code == 1008 and "no learned edge stage" in after.reason
