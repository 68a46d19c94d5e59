"""``cleancut serve`` under hostile clients (issue 35): one test per defect found by trying the
server as an attacker on localhost would. Most run against the real server (uvicorn with
cleancut's protocol, in a thread of the test process, its log captured), because the defects
live where the bytes arrive: in the HTTP protocol, the WebSocket framing and the log lines.

The long version of these cases, with figures (requests sent, status and close codes, 500s and
tracebacks in the log, RSS, fds and threads), is ``benchmarks/hostile_clients.py``.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import logging
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the server extra (fastapi) is not installed")
httpx = pytest.importorskip("httpx")
pytest.importorskip("websockets")
from fastapi.testclient import TestClient  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from cleancut.server import ServerSettings, create_app  # noqa: E402
from cleancut.testing import square_image  # noqa: E402
from serving import free_port, start_thread, stop, wait_healthy  # noqa: E402

KEY = "hostile-test-key-8c1f"
READ_TIMEOUT = 1.0


def png(size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    square_image(size).save(buf, "PNG")
    return buf.getvalue()


class LogCapture(logging.Handler):
    """Every record of cleancut's, uvicorn's and asyncio's loggers, formatted with its traceback."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


class Server:
    """The app served by uvicorn as ``cleancut serve`` configures it, in a thread."""

    def __init__(self, tiny_model, **settings):
        from cleancut.cli.serve import make_server

        self.app = create_app(ServerSettings.from_values(model=str(tiny_model), warm_up=False, **settings))
        self.port = free_port()
        self.server = make_server(self.app, port=self.port, log_level="info")
        self.log = LogCapture()
        self.loggers = [logging.getLogger(n) for n in ("uvicorn", "uvicorn.access", "cleancut", "asyncio")]
        self.levels = [lg.level for lg in self.loggers]
        for lg in self.loggers:
            lg.addHandler(self.log)
            lg.setLevel(logging.INFO)
        self.thread = start_thread(self.server)
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self):
        self.server.should_exit = True
        self.thread.join(30)
        for lg, level in zip(self.loggers, self.levels):
            lg.removeHandler(self.log)
            lg.setLevel(level)

    def health(self, key: str | None = None) -> dict:
        return httpx.get(f"{self.url}/healthz", headers={"X-API-Key": key} if key else {}, timeout=10).json()

    def ws(self, path="/api/stream", host=None, **kwargs):
        """A WebSocket client connected to this server (``host``: the name the URL, and so the
        ``Host`` header, gives; the socket goes to 127.0.0.1 whatever it is)."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return connect(f"ws://{host or '127.0.0.1'}:{self.port}{path}", sock=sock, proxy=None, open_timeout=10,
                       **kwargs)


@contextlib.contextmanager
def serving(tiny_model, **settings):
    server = Server(tiny_model, **settings)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def server(tiny_model):
    with serving(tiny_model, workers=1, max_queue=1, read_timeout=READ_TIMEOUT, max_video_seconds=1.0,
                 max_video_pixels=64 * 48 * 2) as s:
        yield s


def no_trouble(log: LogCapture) -> None:
    """No traceback, no 500 and no unretrieved task exception in the server's log."""
    text = log.text
    assert "Traceback" not in text and "never retrieved" not in text and "Exception in ASGI" not in text, text
    assert not re.search(r'" 500 ', text), text


def ws_close(ws) -> tuple[int, str]:
    """Read until the server closes; its close code and reason."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=10)
    return closed.value.rcvd.code, closed.value.rcvd.reason


def open_stalled(port: int, head: bytes, body: bytes = b"abc") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(head + body)
    return sock


def read_answer(sock: socket.socket) -> bytes:
    chunks = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    sock.close()
    return b"".join(chunks)


def clip_bytes(tmp_path: Path, name: str = "clip.mp4", **kwargs) -> bytes:
    pytest.importorskip("av")
    from video_clips import make_clip

    return make_clip(tmp_path / name, **kwargs).read_bytes()


# ---------------------------------------------------------------- 1. slow uploads


def test_stalled_uploads_hold_no_slot_and_time_out(server):
    """18 connections that declare a large body, send 3 bytes and stall: a valid request is still
    served (they hold no admission slot), and each of them gets 408 within the read timeout."""
    server.log.lines.clear()
    head = (b"POST /api/remove HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
            b"Content-Length: 1000000\r\n\r\n")
    stalled = [open_stalled(server.port, head) for _ in range(18)]
    started = time.monotonic()
    time.sleep(0.2)
    health = server.health()
    assert health["admitted"] == 0 and health["receiving"] == 18, health
    r = httpx.post(f"{server.url}/api/remove", content=png(), timeout=30)
    assert r.status_code == 200, r.text
    answers = [read_answer(s) for s in stalled]
    assert time.monotonic() - started < READ_TIMEOUT + 5
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
        assert body["detail"]["code"] == "read_timeout" and "too slowly" in body["error"]
    assert server.health()["receiving"] == 0
    no_trouble(server.log)


def test_a_body_below_the_minimum_rate_is_cut(server):
    """A client that never pauses for long but trickles (10 bytes every 0.3 s) is cut once the
    first read timeout has passed."""
    sock = open_stalled(server.port, b"POST /api/remove HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n",
                        b"x" * 10)
    started = time.monotonic()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        while time.monotonic() - started < READ_TIMEOUT + 4:
            time.sleep(0.3)
            sock.sendall(b"x" * 10)
    answer = read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 408 ") and b'"read_timeout"' in answer, answer[:300]
    assert time.monotonic() - started < READ_TIMEOUT + 4


def test_a_slow_request_head_is_cut(server):
    sock = open_stalled(server.port, b"POST /api/remove HTTP/1.1\r\nHost: 127.0", b"")
    started = time.monotonic()
    sock.settimeout(READ_TIMEOUT + 5)
    answer = read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 408 ") and b'"read_timeout"' in answer, answer
    assert time.monotonic() - started < READ_TIMEOUT + 3


def test_a_stalled_clip_upload_holds_no_job_slot(server, tmp_path):
    clip = clip_bytes(tmp_path, frames=6, audio=None)
    stalled = open_stalled(server.port, b"POST /api/video HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: video/mp4\r\n"
                                        b"Content-Length: 1000000\r\n\r\n")
    time.sleep(0.2)
    r = httpx.post(f"{server.url}/api/video", content=clip, timeout=30)
    assert r.status_code == 202, r.text  # not 503 "1 video job(s) are running"
    answer = read_answer(stalled)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    jobs = server.app.state.cleancut_video
    deadline = time.monotonic() + 30
    while jobs.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p.name for p in jobs.root.iterdir()] == [r.json()["id"]]  # the stalled upload left nothing
    httpx.delete(f"{server.url}/api/video/{r.json()['id']}")


# ---------------------------------------------------------------- 2. DNS rebinding


def test_a_forged_host_is_refused_on_http_and_the_websocket(server):
    r = httpx.post(f"{server.url}/api/remove", content=png(), headers={"Host": "evil.example:8791"})
    assert r.status_code == 400 and r.json()["detail"]["code"] == "host_not_allowed", r.text
    assert httpx.get(f"{server.url}/", headers={"Host": "evil.example"}).status_code == 400
    with server.ws(host="evil.example", origin=f"http://evil.example:{server.port}") as ws:
        code, reason = ws_close(ws)
    assert code == 4400 and "Host" in reason
    for host in ("localhost", "127.0.0.1"):
        assert httpx.get(f"{server.url}/healthz", headers={"Host": f"{host}:{server.port}"}).status_code == 200
    with server.ws(host="localhost") as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "ready"


def test_allowed_hosts_adds_names(tiny_model):
    def status(app, host):
        with TestClient(app) as c:
            return c.get("/healthz", headers={"Host": host}).status_code

    make = lambda **kw: create_app(ServerSettings.from_values(model=str(tiny_model), warm_up=False, **kw))  # noqa: E731
    app = make(allowed_hosts=("photos.example", "*.lan.example"))
    assert [status(app, h) for h in ("photos.example:8000", "a.lan.example", "evil.example", "localhost:1")] == [
        200, 200, 400, 200]
    assert status(make(allowed_hosts="*"), "anything.example") == 200
    from cleancut.errors import ConfigError

    with pytest.raises(ConfigError, match="--allowed-hosts expects"):
        ServerSettings(allowed_hosts=("http://photos.example",))


# ---------------------------------------------------------------- 3. no secret in any log line


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGTERM")
def test_no_api_key_in_any_log_line(tiny_model):
    """The real command at debug level, keyed requests of every kind (right and wrong keys, in
    headers and query strings, on HTTP and the WebSocket): the key shows in no line."""
    wrong = "wrong-key-5e9d27"
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cleancut", "serve", "--model", str(tiny_model), "--port", str(port),
                             "--workers", "1", "--no-warm-up", "--api-key", KEY, "--log-level", "debug"],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        with contextlib.suppress(AssertionError):
            wait_healthy(port, proc, timeout=5)  # /healthz needs the key: this only waits for the start
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while httpx.get(f"{base}/healthz", headers={"X-API-Key": KEY}).status_code != 200:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        statuses = [
            httpx.post(f"{base}/api/remove", content=png(), headers={"X-API-Key": KEY}).status_code,
            httpx.get(f"{base}/api/models", headers={"Authorization": f"Bearer {KEY}"}).status_code,
            httpx.get(f"{base}/api/models", params={"api_key": KEY}).status_code,
            httpx.get(f"{base}/docs", params={"api_key": KEY}).status_code,
            httpx.get(f"{base}/openapi.json?api%5Fkey={KEY}").status_code,
            httpx.get(f"{base}/docs", params={"api_key": wrong}).status_code,
            httpx.get(f"{base}/nothing/{KEY}").status_code]
        closes = []
        for key in (KEY, wrong):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            with contextlib.suppress(Exception):  # how each ends is checked after the log
                with connect(f"ws://127.0.0.1:{port}/api/stream?api_key={key}&mode=mask", sock=sock, proxy=None) as ws:
                    closes.append(json.loads(ws.recv(timeout=10))["type"])
                    ws.send(png())
                    closes.append(json.loads(ws.recv(timeout=10))["type"])
            with contextlib.suppress(Exception):
                closes.append(ws.close_code)
    finally:
        out, err = stop(proc)
    log = (out or "") + (err or "")
    assert KEY not in log and wrong not in log, [line for line in log.splitlines() if KEY in line or wrong in line]
    assert "WebSocket /api/stream" in log and "api_key=***" in log, log[-3000:]  # the lines are there, redacted
    assert "Traceback" not in log
    assert statuses == [200, 200, 401, 200, 200, 401, 401], statuses
    assert closes == ["ready", "frame", 1000, 4401], closes


# ---------------------------------------------------------------- 4, 5. caps where the bytes arrive


def test_a_deeply_nested_or_large_text_message_is_a_close_code(server):
    with server.ws() as ws:
        ws.recv(timeout=10)
        ws.send("[" * 60_000)  # within the size bound for text: Python's parser would recurse 60,000 deep
        code, reason = ws_close(ws)
    assert code == 1003 and "nested" in reason
    for text in ("[" * 100_000, json.dumps({"options": {"bg_color": "x" * 70_000}})):
        with server.ws() as ws:
            ws.recv(timeout=10)
            ws.send(text)
            code, reason = ws_close(ws)
        assert code == 1009 and "text message" in reason
    with server.ws() as ws:  # nesting within the bound is an ordinary bad message
        ws.recv(timeout=10)
        ws.send(json.dumps({"options": [[[[1]]]]}))
        assert ws_close(ws)[0] == 1003
    no_trouble(server.log)


def test_the_message_cap_is_the_servers_own(tiny_model):
    """uvicorn gets the cap, so a message over it is refused as its header arrives (1009), not
    buffered up to uvicorn's default of 16 MiB first."""
    with serving(tiny_model, stream_max_message_bytes=64 * 1024) as s:
        assert s.server.config.ws_max_size == 64 * 1024
        with s.ws(max_size=None) as ws:
            ws.recv(timeout=10)
            ws.send(b"\xff" * 1_000_000)
            code, _ = ws_close(ws)
        assert code == 1009
        assert s.health()["streams"] == 0
        no_trouble(s.log)


def test_a_raw_stream_without_a_declared_length_is_measured(server, tmp_path):
    """A raw H.264 stream declares no duration: its packets are counted (413 at upload), where
    the same frames in MP4 were refused and the raw ones processed whole."""
    raw = clip_bytes(tmp_path, "long.h264", fmt="h264", frames=40, audio=None)  # 1.6 s at 25 frames/s
    r = httpx.post(f"{server.url}/api/video", content=raw, timeout=30)
    assert r.status_code == 413 and r.json()["detail"]["code"] == "video_too_long", r.text
    assert "1.6 s" in r.json()["error"]
    mp4 = clip_bytes(tmp_path, "long.mp4", frames=40, audio=None)
    assert httpx.post(f"{server.url}/api/video", content=mp4, timeout=30).status_code == 413


def test_frames_that_grow_mid_clip_are_refused_before_decoding(server, tmp_path):
    """A raw stream that switches from 64x48 to 256x192 frames: the job stops at the first large
    frame with the server's own message (the cap and its flag), never "<PIL image>" or a path."""
    small = clip_bytes(tmp_path, "a.h264", fmt="h264", frames=8, audio=None, size=(64, 48))
    large = clip_bytes(tmp_path, "b.h264", fmt="h264", frames=8, audio=None, size=(256, 192))
    r = httpx.post(f"{server.url}/api/video", content=small + large, params={"output": "mov"}, timeout=30)
    assert r.status_code == 202, r.text
    job = wait_job(server, r.json()["id"])
    assert job["status"] == "failed", job
    assert "--max-video-pixels" in job["error"] and "PIL" not in job["error"] and "/" not in job["error"].split("(")[0]
    whole = clip_bytes(tmp_path, "c.mp4", frames=4, audio=None, size=(256, 192))
    r = httpx.post(f"{server.url}/api/video", content=whole, timeout=30)
    assert r.status_code == 413 and r.json()["detail"]["code"] == "too_many_pixels"
    assert "--max-video-pixels" in r.json()["error"] and "--max-pixels" not in r.json()["error"]
    assert "/tmp" not in r.text and "cleancut-video-" not in r.text and "upload" not in r.text


def wait_job(server, job_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = httpx.get(f"{server.url}/api/video/{job_id}").json()
        if body.get("status") in ("done", "failed", "cancelled"):
            return body
        time.sleep(0.05)
    raise AssertionError(body)


# ---------------------------------------------------------------- 7, 9. clips: truncation, disconnects


def test_a_truncated_clip_keeps_its_frames(tiny_model, tmp_path):
    pytest.importorskip("av")
    from video_clips import make_clip, probe

    full = make_clip(tmp_path / "full.mp4", frames=40, container_options={"movflags": "faststart"})
    cut = full.read_bytes()[: full.stat().st_size * 6 // 10]
    with serving(tiny_model) as s:
        r = httpx.post(f"{s.url}/api/video", content=cut, timeout=30)
        assert r.status_code == 202, r.text
        job = wait_job(s, r.json()["id"])
        assert job["status"] == "done", job
        assert "truncated" in job["warning"] and "of 40 frames" in job["warning"]
        assert "/" not in job["warning"].replace("n/a", ""), job["warning"]  # no server path
        result = httpx.get(f"{s.url}/api/video/{job['id']}/result", timeout=30)
        assert result.status_code == 200
        (tmp_path / "out.webm").write_bytes(result.content)
        assert 0 < probe(tmp_path / "out.webm").frames == job["frames"] < 40
        no_trouble(s.log)


def test_an_aborted_clip_upload_logs_no_traceback(server, tmp_path):
    clip = clip_bytes(tmp_path, frames=6, audio=None)
    server.log.lines.clear()
    with socket.create_connection(("127.0.0.1", server.port)) as conn:
        conn.sendall(b"POST /api/video HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: video/mp4\r\n"
                     + f"Content-Length: {len(clip)}\r\n\r\n".encode() + clip[: len(clip) // 2])
        time.sleep(0.3)
    jobs = server.app.state.cleancut_video
    deadline = time.monotonic() + 10
    while not any('"POST /api/video"' in line for line in server.log.lines) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any('"POST /api/video" 400' in line for line in server.log.lines), server.log.text
    assert not [p for p in jobs.root.rglob("upload")]
    no_trouble(server.log)


# ---------------------------------------------------------------- 10, 11. WebSocket closes and refusals


def test_a_bad_frame_closes_without_a_traceback(server):
    server.log.lines.clear()
    for _ in range(3):
        with server.ws() as ws:
            ws.recv(timeout=10)
            ws.send(b"%PDF-1.4 not a frame")
            code, reason = ws_close(ws)
        assert code == 1003 and "stream frame 0" in reason
    time.sleep(0.2)
    gc.collect()  # a task whose exception nobody retrieved is reported when it is collected
    time.sleep(0.2)
    no_trouble(server.log)


def test_websocket_refusals_are_distinct_close_codes(tiny_model):
    """A missing key and a foreign origin were both an HTTP 403 at the handshake; now the
    handshake is accepted and each is closed with its own code and a short reason."""
    with serving(tiny_model, api_key=KEY, stream_max_connections=1) as s:
        with s.ws() as ws:
            assert ws_close(ws)[0] == 4401
        with s.ws(f"/api/stream?api_key={KEY}", origin="https://evil.example") as ws:
            code, reason = ws_close(ws)
            assert code == 4403 and "Origin" in reason
        with s.ws(f"/api/stream?api_key={KEY}") as first:
            assert json.loads(first.recv(timeout=10))["type"] == "ready"
            assert s.health(KEY)["streams"] == 1
            with s.ws(f"/api/stream?api_key={KEY}") as second:  # over --stream-max-connections
                code, reason = ws_close(second)
            assert code == 1013 and "streams open" in reason
        assert len(reason.encode()) <= 123 and reason.endswith(".")
        no_trouble(s.log)


# ---------------------------------------------------------------- 12. /docs with a key


def test_docs_with_a_key_load_in_a_browser(tiny_model):
    pytest.importorskip("fastapi_offline")
    with TestClient(create_app(ServerSettings.from_values(model=str(tiny_model), warm_up=False, api_key=KEY))) as c:
        page = c.get("/docs", params={"api_key": KEY})
        assert page.status_code == 200
        schema_url = re.search(r"url: '([^']+)'", page.text).group(1)
        assert c.get(schema_url).status_code == 200  # what the page loads next
        schema = c.get(schema_url).json()
        assert schema["components"]["securitySchemes"]["ApiKey"] == {"type": "apiKey", "in": "header",
                                                                      "name": "X-API-Key"}
        for asset in re.findall(r'(?:src|href)="(/docs-static/[^"]+)"', page.text):
            assert c.get(asset).status_code == 200, asset
        assert c.get("/docs").status_code == 401 and c.get("/openapi.json").status_code == 401


# ---------------------------------------------------------------- 13. stream work is capped and counted


def test_stream_frames_are_admitted_counted_and_capped(tiny_model):
    with TestClient(create_app(ServerSettings.from_values(model=str(tiny_model), warm_up=False, workers=1,
                                                          max_queue=1, max_video_pixels=64 * 48))) as c:
        state = c.app.state.cleancut
        with c.websocket_connect("/api/stream?mode=mask") as ws:
            ws.receive_json()
            assert c.get("/healthz").json()["streams"] == 1
            state.admitted = state.settings.capacity  # a full server: the frame is dropped, not queued
            try:
                ws.send_bytes(png())
                assert ws.receive_json() == {"type": "dropped", "dropped": 1, "reason": "the server is busy"}
            finally:
                state.admitted = 0
            time.sleep(0.05)
            ws.send_bytes(png())
            assert ws.receive_json()["type"] == "frame"
            ws.receive_bytes()
            time.sleep(0.05)
            ws.send_bytes(png((640, 480)))  # over the live-frame cap (the clips' --max-video-pixels)
            message = ws.receive()
        assert message["type"] == "websocket.close" and message["code"] == 1003
        assert "limit of 0.0 megapixels" in message["reason"] or "megapixels" in message["reason"]
        health = c.get("/healthz").json()
        assert health["streams"] == 0 and health["admitted"] == 0 and health["stream_frames"] == 0


# ---------------------------------------------------------------- 14. the minor ones


def test_bomb_reason_cites_the_servers_cap(tiny_model):
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0))
            + chunk(b"IEND", b""))  # 10 gigapixels claimed in 45 bytes
    with TestClient(create_app(ServerSettings.from_values(model=str(tiny_model), warm_up=False))) as c:
        r = c.post("/api/remove", content=bomb)
    assert r.status_code == 413 and "100.0 megapixels" in r.json()["error"], r.text
    assert "178956970" not in r.text


def test_malformed_content_length_and_long_ids_get_short_json(server):
    from test_security import raw_request

    answer = raw_request(server.port, b"POST /api/remove HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert set(body) == {"error", "detail"} and body["detail"]["code"] == "bad_request"
    server.log.lines.clear()
    long_id = "a" * 5000
    r = httpx.get(f"{server.url}/api/video/{long_id}")
    assert r.status_code == 404 and len(r.text) < 400 and long_id not in r.text
    r = httpx.get(f"{server.url}/{long_id}")
    assert r.status_code == 404 and len(r.text) < 400
    time.sleep(0.1)
    assert server.log.lines and all(len(line) < 600 for line in server.log.lines), max(map(len, server.log.lines))
