"""Security review of ``cleancut serve``, one test (or group) per point:

1. it listens on 127.0.0.1 unless told otherwise;
2. no path from a request reaches the file system (URL paths, upload file names, option values);
3. ``Content-Disposition`` file names are sanitised;
4. no CORS unless configured (``--cors-origin``);
5. errors never echo stack traces or server paths;
6. request headers are limited in size.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the server extra (fastapi) is not installed")
httpx = pytest.importorskip("httpx", reason="httpx is not installed")

from fastapi.testclient import TestClient  # noqa: E402

import cleancut  # noqa: E402
from cleancut.errors import ConfigError, ModelError  # noqa: E402
from cleancut.server import ServerSettings, create_app  # noqa: E402
from cleancut.server.routes import STATIC_DIR  # noqa: E402
from serving import free_port, served, stop, wait_healthy  # noqa: E402

SAFE_DISPOSITION = re.compile(r'inline; filename="[A-Za-z0-9._-]{1,100}"')
PACKAGE_DIR = str(Path(cleancut.__file__).resolve().parent)


def png(size=(64, 48)) -> bytes:
    from cleancut.testing import square_image

    buf = io.BytesIO()
    square_image(size).save(buf, "PNG")
    return buf.getvalue()


def make_app(tiny_model, **kwargs):
    return create_app(ServerSettings.from_values(model=str(tiny_model), warm_up=False, **kwargs))


@pytest.fixture(scope="module")
def client(tiny_model):
    with TestClient(make_app(tiny_model)) as c:
        yield c


def raw_request(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes to 127.0.0.1:port; everything the server answers until it closes.

    A server may stop reading and close before all of ``data`` is sent (that is how it
    refuses a request it will not buffer), so a reset while sending ends the sending only.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            sock.sendall(data)
        chunks = []
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    return b"".join(chunks)


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the TCP sockets listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as fh:
            next(fh)
            for line in fh:
                fields = line.split()
                address, port_hex = fields[1].rsplit(":", 1)
                if int(port_hex, 16) == port and fields[3] == "0A":  # 0A = LISTEN
                    if len(address) == 8:  # IPv4, little-endian hex
                        found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
                    else:
                        found.add(address)
    return found


@contextlib.contextmanager
def cli_server(tiny_model, *flags: str):
    """``cleancut serve`` in a subprocess on a free port; yields (port, process)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cleancut", "serve", "--model", str(tiny_model), "--port", str(port),
                             "--workers", "1", "--no-warm-up", *flags],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        wait_healthy(port, proc)
        yield port, proc
    finally:
        stop(proc)


# ---------------------------------------------------------------- 1, 4, 6 on the real command


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="reads the socket table of Linux")
def test_cli_listens_on_loopback_only_with_cors_and_a_header_cap(tiny_model):
    from cleancut.cli import build_parser

    assert build_parser().parse_args(["serve"]).host == "127.0.0.1"
    with cli_server(tiny_model, "--cors-origin", "https://photos.example") as (port, proc):
        # 1. bound to the loopback address only, not to every interface
        assert listening_addresses(port) == {"127.0.0.1"}
        base = f"http://127.0.0.1:{port}"
        # 4. the configured origin may call the API from a browser, no other one
        preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
        ok = httpx.options(f"{base}/api/remove", headers={"Origin": "https://photos.example", **preflight})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://photos.example"
        other = httpx.options(f"{base}/api/remove", headers={"Origin": "https://evil.example", **preflight})
        assert "access-control-allow-origin" not in other.headers
        # 6. a request line plus headers over 16 KiB is refused, and the server carries on
        head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        big = raw_request(port, head + b"X-Pad: " + b"a" * 20_000 + b"\r\n\r\n")
        assert big.startswith(b"HTTP/1.1 431 ") and b'"headers_too_large"' in big and b"Traceback" not in big
        many = b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 100) for i in range(200))  # 200 headers, 21 KB
        assert raw_request(port, head + many + b"\r\n").startswith(b"HTTP/1.1 431 ")
        huge = raw_request(port, head + b"X-Pad: " + b"a" * 2_000_000 + b"\r\n\r\n")  # h11 stops buffering it
        assert huge.startswith(b"HTTP/1.1 400 ") or huge == b""
        fine = raw_request(port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nX-Pad: "
                           + b"a" * 8_000 + b"\r\n\r\n")
        assert fine.startswith(b"HTTP/1.1 200 ")
        assert httpx.get(f"{base}/healthz").status_code == 200


def test_no_cors_headers_unless_configured(client, tiny_model):
    origin = {"Origin": "https://photos.example"}
    preflight = client.options("/api/remove", headers={**origin, "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 405 and "access-control-allow-origin" not in preflight.headers
    r = client.post("/api/remove", content=png(), headers=origin)
    assert r.status_code == 200
    assert not [h for h in r.headers if h.startswith("access-control-")]
    with TestClient(make_app(tiny_model, cors_origins=("https://photos.example",))) as c:
        r = c.post("/api/remove", content=png(), headers=origin)
        assert r.headers["access-control-allow-origin"] == "https://photos.example"
        exposed = r.headers["access-control-expose-headers"].lower()
        assert "content-disposition" in exposed and "x-cleancut-mode" in exposed
        assert "access-control-allow-credentials" not in r.headers
        r = c.post("/api/remove", content=png(), headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize("origin", ["https://photos.example/", "https://photos.example/path", "photos.example",
                                    "ftp://photos.example", "https://a b", "", "null"])
def test_cors_origins_are_validated(origin):
    with pytest.raises(ConfigError, match="--cors-origin expects an origin"):
        ServerSettings(cors_origins=(origin,))


def test_cors_origins_accept_hosts_ports_and_any():
    settings = ServerSettings(cors_origins=["http://localhost:3000", "https://a.example", "*"])
    assert settings.cors_origins == ("http://localhost:3000", "https://a.example", "*")
    assert ServerSettings(cors_origins="https://a.example").cors_origins == ("https://a.example",)


# ---------------------------------------------------------------- 2. no request path reaches the file system


TRAVERSALS = ["/static/../../../../../etc/passwd", "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
              "/static/..%2f..%2f..%2f..%2fetc%2fpasswd", "/static/%2e%2e/app.py", "/static/../server/app.py",
              "/docs-static/../../../../etc/passwd", "/static//etc/passwd", "/static/%00", "/static/..\\app.py",
              "/../../etc/passwd", "/api/../../etc/passwd"]


def test_url_paths_never_leave_the_static_folders(tiny_model):
    """Raw request targets (nothing normalises them on the way) against the real server."""
    with served(make_app(tiny_model)) as (_, port):
        secret = Path(PACKAGE_DIR, "server", "app.py").read_bytes()[:200]
        for target in TRAVERSALS:
            answer = raw_request(port, f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            status = int(answer.split(b" ", 2)[1])
            assert status in (400, 404), (target, answer[:300])
            assert b"root:" not in answer and secret not in answer, target
        assert raw_request(port, b"GET /static/app.js HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").startswith(
            b"HTTP/1.1 200 ")


class FileAccess:
    """Records every file the process opens (audit events ``open``, ``os.listdir``,
    ``os.scandir``, ``os.remove`` ...) while ``active``; audit hooks cannot be removed, so one is
    installed per test session."""

    events = ("open", "os.listdir", "os.scandir", "os.remove", "os.rename", "os.mkdir", "shutil.rmtree")
    _installed = None

    def __init__(self):
        self.active = False
        self.seen: list[tuple[str, str, object]] = []
        self.lock = threading.Lock()

    @classmethod
    def get(cls) -> "FileAccess":
        if cls._installed is None:
            cls._installed = cls()
            sys.addaudithook(cls._installed._hook)
        return cls._installed

    def _hook(self, event, args):
        if self.active and event in self.events and args and isinstance(args[0], (str, bytes, os.PathLike)):
            path = os.fsdecode(args[0])
            mode = args[1] if event == "open" and len(args) > 1 else None
            with self.lock:
                self.seen.append((event, path, mode))

    @contextlib.contextmanager
    def recording(self):
        self.seen.clear()
        self.active = True
        try:
            yield self.seen
        finally:
            self.active = False


def test_no_request_value_reaches_the_file_system(client, tiny_model):
    """File names, option values, query strings and headers carrying a marker never become a
    path the server opens, lists or removes; the server writes no file at all (an uploaded
    background picture is decoded in memory)."""
    marker = "MARKERx9"
    green = io.BytesIO()
    Image.new("RGB", (8, 8), (0, 200, 0)).save(green, "PNG")
    photo = png()
    access = FileAccess.get()
    state = client.app.state.cleancut
    with access.recording() as seen:
        responses = [
            client.post("/api/remove", files={"file": (f"../../{marker}/../etc/passwd", photo, "image/png")}),
            client.post("/api/remove", files={"file": (f"/tmp/{marker}.png", photo, "image/png"),
                                              "bg_image": (f"../{marker}-bg.png", green.getvalue(), "image/png")}),
            client.post("/api/remove", params={"bg_image": f"/tmp/{marker}.png"}, content=photo),
            client.post("/api/remove", params={"model": f"/tmp/{marker}.onnx"}, content=photo),
            client.post("/api/remove", data={"bg_image": f"/etc/{marker}"}, files={"file": ("a.png", photo, "image/png")}),
            client.post("/api/remove", content=photo, headers={"X-File": f"/etc/{marker}", "Content-Type": f"image/{marker}"}),
            client.get(f"/static/{marker}.js"), client.get(f"/static/%2e%2e/{marker}"), client.get(f"/{marker}"),
        ]
    statuses = [r.status_code for r in responses]
    assert statuses == [200, 200, 422, 422, 422, 200, 404, 404, 404], statuses
    assert not [s for s in seen if marker in s[1]], seen
    writes = [(event, path) for event, path, mode in seen
              if event != "open" or (isinstance(mode, str) and any(c in mode for c in "wax+"))]
    assert writes == []
    assert not hasattr(state, "tmpdir")


def test_an_eps_upload_is_not_decoded(client):
    """Only the six formats the server sniffs are decoded: PostScript (which Pillow would hand
    to Ghostscript, through a temporary file) is refused by its bytes."""
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    r = client.post("/api/remove", files={"file": ("photo.jpg", eps, "image/jpeg")})
    assert r.status_code == 415 and r.json()["detail"]["code"] == "unsupported_media_type"


# ---------------------------------------------------------------- 3. Content-Disposition


HOSTILE_NAMES = ['../../etc/passwd', '..\\..\\windows\\system32\\a.png', 'a"; filename="evil.exe', "quote'n\"back\\slash.png",
                 "semi;colon=x.png", "tab\there.png", "percent%0d%0aSet-Cookie:%20x=1.png", "日本語の写真.png",
                 "x" * 1000 + ".png", ".htaccess", "...", "-", "con.png", "a/b/c/.png", "\u202egnp.exe"]


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=range(len(HOSTILE_NAMES)))
def test_content_disposition_names_are_sanitised(client, name):
    r = client.post("/api/remove", files={"file": (name, png(), "image/png")}, params={"mode": "mask"})
    assert r.status_code == 200, r.text
    disposition = r.headers["content-disposition"]
    assert SAFE_DISPOSITION.fullmatch(disposition), disposition
    assert disposition.endswith('.mask.png"')


def test_an_over_long_part_header_is_a_clean_400(client):
    r = client.post("/api/remove", files={"file": ("x" * 20_000 + ".png", png(), "image/png")})
    assert r.status_code == 400 and r.json()["detail"]["code"] == "bad_multipart"


@pytest.mark.parametrize("name, stem", [("a\r\nSet-Cookie: x=1.png", "a_Set-Cookie_x_1"), ("nul\0byte.png", "nul_byte"),
                                        ("", "image"), (None, "image"), ("../..", "image"), ("ok-name_1.2.png", "ok-name_1.2")])
def test_safe_stem_of_names_a_multipart_body_cannot_carry(name, stem):
    from cleancut.server.routes import safe_stem as _safe_stem

    assert _safe_stem(name) == stem


# ---------------------------------------------------------------- 5. errors


def _break_remover(monkeypatch, state, exc):
    def broken(*args, **kwargs):
        raise exc

    monkeypatch.setattr(state.remover, "remove", broken)


@pytest.fixture(scope="module")
def lenient_client(tiny_model):
    """A client that gets the 500 answer instead of the server's exception re-raised."""
    with TestClient(make_app(tiny_model), raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize("kind", ["unexpected", "model"])
def test_server_errors_show_no_traceback_and_no_server_path(lenient_client, tiny_model, monkeypatch, caplog, kind):
    client = lenient_client
    state = client.app.state.cleancut
    where = f"{tempfile.gettempdir()}/cleancut-serve-x/x.py, {tiny_model}, {PACKAGE_DIR}/api.py"
    exc = RuntimeError(f"boom in {where}") if kind == "unexpected" else ModelError(f"model 'tiny': cannot run {where}")
    _break_remover(monkeypatch, state, exc)
    with caplog.at_level("ERROR"):
        r = client.post("/api/remove", content=png())
    assert r.status_code == 500
    body = r.json()
    assert set(body) == {"error", "detail"} and "server log" in body["error"]
    for secret in ("cleancut-serve-", str(tiny_model), PACKAGE_DIR, "Traceback", 'File "', "boom", "cannot run"):
        assert secret not in r.text, secret
    if kind == "model":  # the operator still gets the details
        assert any(str(tiny_model) in rec.getMessage() for rec in caplog.records)
    assert client.post("/api/remove", content=png()).status_code == 500  # and the server carries on
    monkeypatch.undo()
    assert client.post("/api/remove", content=png()).status_code == 200


def test_client_errors_show_no_server_path(client):
    bad_bg = png()[:60]
    photo = png()
    responses = [
        client.post("/api/remove", files={"file": ("a.png", photo, "image/png"), "bg_image": ("bg.png", bad_bg, "image/png")}),
        client.post("/api/remove", content=photo[: len(photo) // 2]),
        client.post("/api/remove", content=b"GIF89a" + b"\xff" * 40),
        client.post("/api/remove", params={"quality": "1e999"}, content=photo),
        client.post("/api/remove", content=photo, headers={"content-type": "multipart/form-data; boundary=x"}),
        client.get("/nothing/here"), client.put("/api/remove"),
    ]
    for r in responses:
        assert 400 <= r.status_code < 500, r.text
        assert set(r.json()) == {"error", "detail"}
        for secret in (tempfile.gettempdir() + "/", PACKAGE_DIR, "Traceback", 'File "', sys.prefix):
            assert secret not in r.text, (secret, r.text)


def test_malformed_http_gets_no_traceback(tiny_model):
    with served(make_app(tiny_model), log_level="critical") as (_, port):
        for garbage in (b"NOT HTTP AT ALL\r\n\r\n", b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", b"POST /api/remove HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        b"Content-Length: -5\r\n\r\n", b"GET /\x00 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                        b"POST /api/remove HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"):
            answer = raw_request(port, garbage)
            assert answer.startswith(b"HTTP/1.1 4"), (garbage, answer[:200])
            assert b"Traceback" not in answer and PACKAGE_DIR.encode() not in answer


def test_static_folder_is_the_package_one():
    assert Path(STATIC_DIR).resolve().is_relative_to(Path(PACKAGE_DIR))
