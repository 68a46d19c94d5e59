"""Fuzz target ``upload``: ``POST /api/remove`` of ``cleancut serve``, driven through its ASGI app.

The app runs the tiny test model (``cleancut.testing``) with one worker, a 256 KiB upload cap
and a 512 x 512 pixel cap, started once (ASGI lifespan) in the target's own event loop; each
input is one request, with no network in between. The input is::

    FLAGS QUERY-STRING \\n CONTENT-TYPE \\n BODY...

``FLAGS`` (one byte) picks how the body travels: bits 0-1 the ``Content-Length`` header (exact,
absent, smaller or larger than the body), bit 2 a client that disconnects half-way, bits 3-5
the chunk size (16 B to 2 KiB). Multipart bodies, file names, form fields, option values and
query strings are all mutated from real requests (``seeds()``).

Properties of every response:

* never a 500, and any other 5xx is a 503 with ``Retry-After`` (or 501 for a missing package);
* an error is JSON ``{"error": text, "detail": ...}`` and shows no traceback and no server path
  (temporary folder, model file, installed package);
* a 200 is an image of the type it claims, and its ``Content-Disposition`` file name is safe
  (letters, digits, ``._-``; no quote, separator or line break);
* after the request nothing is left: no admitted or running job, no file in the temporary folder.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import tempfile
from pathlib import Path

NAME = "upload"
INSTRUMENT = ("cleancut", "starlette", "python_multipart")  # top-level packages
HOOKS = ("str",)
MAX_LEN = 300 * 1024
MAX_UPLOAD = 256 * 1024
MAX_PIXELS = 1 << 18
MEMORY_BUDGET = 64 * MAX_PIXELS + 16 * MAX_UPLOAD + 48 * 2**20

SAFE_DISPOSITION = re.compile(r'inline; filename="[A-Za-z0-9._-]{1,100}"')
IMAGE_MAGIC = {"image/png": b"\x89PNG", "image/jpeg": b"\xff\xd8\xff", "image/webp": b"RIFF"}

_server = None


class Server:
    """The app of ``cleancut serve`` on the tiny model, started in its own event loop."""

    def __init__(self) -> None:
        from cleancut.testing import write_tiny_model

        from cleancut.options import RemoveOptions
        from cleancut.server import ServerSettings, create_app

        self.folder = Path(tempfile.mkdtemp(prefix="cleancut-fuzz-upload-"))
        model = write_tiny_model(self.folder, name="tiny", input_size=(32, 32))
        settings = ServerSettings.from_values(
            model=str(model), workers=1, max_queue=2, max_upload_mb=MAX_UPLOAD / 2**20,
            options=RemoveOptions(max_pixels=MAX_PIXELS))
        self.app = create_app(settings)
        self.state = self.app.state.cleancut
        self.loop = asyncio.new_event_loop()
        self._lifespan = self.app.router.lifespan_context(self.app)
        self.loop.run_until_complete(self._lifespan.__aenter__())
        import cleancut

        self.private = [str(self.folder), tempfile.gettempdir() + "/", str(Path(cleancut.__file__).parent), sys.prefix]
        self.video_root = self.app.state.cleancut_video.root

    def request(self, query: bytes, headers: list[tuple[bytes, bytes]], chunks: list[bytes],
                disconnect_after: int | None = None) -> tuple[int, dict[str, str], bytes]:
        return self.loop.run_until_complete(self._request(query, headers, chunks, disconnect_after))

    async def _request(self, query, headers, chunks, disconnect_after):
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/api/remove", "raw_path": b"/api/remove", "root_path": "",
                 "query_string": query, "headers": headers, "client": ("127.0.0.1", 40000),
                 "server": ("127.0.0.1", 8000)}
        messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
        if disconnect_after is not None:
            messages = messages[:disconnect_after] + [{"type": "http.disconnect"}]
        answered = asyncio.Event()
        response: dict = {"status": None, "headers": {}, "body": b""}

        async def receive():
            if messages:
                return messages.pop(0)
            await answered.wait()  # a client that sent everything waits for the answer
            return {"type": "http.disconnect"}

        async def send(message):
            if message["type"] == "http.response.start":
                response["status"] = message["status"]
                response["headers"] = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in message["headers"]}
            elif message["type"] == "http.response.body":
                response["body"] += message.get("body", b"")
                if not message.get("more_body"):
                    answered.set()

        await self.app(scope, receive, send)
        return response["status"], response["headers"], response["body"]


def server() -> Server:
    global _server
    if _server is None:
        _server = Server()
    return _server


def prepare() -> None:
    """Import and start everything the target runs (inside atheris' instrumentation)."""
    import starlette.formparsers  # noqa: F401

    server()


def encode_input(query: str, content_type: str, body: bytes, flags: int = 0) -> bytes:
    return bytes([flags]) + query.encode() + b"\n" + content_type.encode("latin-1") + b"\n" + body


def seeds() -> dict[str, bytes]:
    from corpus import image_seeds  # both put tests/ on sys.path
    from cleancut.testing import content_type, form_data as multipart

    images = image_seeds()
    form = content_type()
    photo, png = images["jpeg-RGB"], images["png-RGBA"]
    cases = {
        "raw-jpeg": encode_input("", "image/jpeg", photo),
        "raw-png-mask": encode_input("mode=mask&threshold=0.5&format=webp", "application/octet-stream", png),
        "raw-chunked": encode_input("crop=true&crop_margin=2", "", png, flags=0b01 | (2 << 3)),
        "raw-disconnect": encode_input("", "image/png", png, flags=0b100),
        "raw-short-length": encode_input("", "image/png", png, flags=0b10),
        "raw-long-length": encode_input("", "image/png", png, flags=0b11),
        "form-photo": encode_input("", form, multipart([("file", "photo.jpg", photo)])),
        "form-fields": encode_input("format=jpg", form, multipart([
            ("mode", None, b"color"), ("bg_color", None, b"#00b140"), ("file", "p.png", png)])),
        "form-bg-image": encode_input("", form, multipart([
            ("mode", None, b"image"), ("file", "p.png", png), ("bg_image", "bg.jpg", photo)])),
        "form-hostile-name": encode_input("", form, multipart([("file", '../../etc/pass"wd\\x.png', png)])),
        "form-long-name": encode_input("", form, multipart([("file", "n" * 300 + ".png", png)])),
        "form-unknown-field": encode_input("", form, multipart([("colour", None, b"red"), ("file", "a.png", png)])),
        "form-operator-field": encode_input("", form, multipart([("model", None, b"/etc/passwd"), ("file", "a.png", png)])),
        "form-twice": encode_input("", form, multipart([("file", "a.png", png), ("file", "b.png", png)])),
        "form-no-file": encode_input("mode=mask", form, multipart([("mode", None, b"mask")])),
        "form-text-file": encode_input("", form, multipart([("file", None, b"photo.png")])),
        "query-bad-values": encode_input("quality=0&mode=sepia&bg_image=/etc/hosts", "image/png", png),
        "query-repeated": encode_input("mode=mask&mode=cutout", "image/png", png),
        "not-an-image": encode_input("", "image/png", b"plain text, not a picture"),
        "empty": encode_input("", "image/png", b""),
    }
    for name in ("gif-P", "bmp-RGB", "tiff-RGB", "webp-RGBA", "png-I16", "jpeg-CMYK-icc", "tiff-LAB", "psd-RGB"):
        cases[f"form-{name}"] = encode_input("", form, multipart([("file", f"{name}.bin", images[name])]))
    return cases


def _parse(data: bytes):
    flags = data[0] if data else 0
    rest = data[1:]
    query, _, rest = rest.partition(b"\n")
    content_type, _, body = rest.partition(b"\n")
    chunk = 16 << ((flags >> 3) & 0b111)
    chunks = [body[i:i + chunk] for i in range(0, len(body), chunk)] or [b""]
    headers = [(b"host", b"127.0.0.1:8000")]
    if content_type:
        headers.append((b"content-type", content_type))
    length = {0: len(body), 1: None, 2: len(body) // 2, 3: len(body) + 100}[flags & 0b11]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    disconnect_after = len(chunks) // 2 if flags & 0b100 else None
    return query, headers, chunks, disconnect_after


def check(data: bytes) -> None:
    srv = server()
    status, headers, body = srv.request(*_parse(data))
    where = f"status {status}"
    if status is None:
        raise AssertionError("the app sent no response")
    if status >= 500 and not (status == 503 and headers.get("retry-after")) and status != 501:
        raise AssertionError(f"{where}: a server error: {body[:500]!r}")
    if status >= 400:
        check_error_body(body, srv.private, where)
    elif status == 200:
        media = headers.get("content-type", "")
        if not body.startswith(IMAGE_MAGIC.get(media, b"?")):
            raise AssertionError(f"{where}: body is not the {media!r} it claims to be")
        disposition = headers.get("content-disposition", "")
        if not SAFE_DISPOSITION.fullmatch(disposition):
            raise AssertionError(f"{where}: unsafe Content-Disposition {disposition!r}")
    state = srv.state
    if state.admitted or state.running:
        raise AssertionError(f"{where}: {state.admitted} admitted / {state.running} running after the request")
    left = list(srv.video_root.iterdir())  # /api/remove writes no file at all (uploads are decoded in memory)
    if left:
        raise AssertionError(f"{where}: files left in the server's temporary folder: {left}")


def check_error_body(body: bytes, private: list[str], where: str) -> None:
    """An error body is the API's JSON and gives nothing away."""
    try:
        payload = json.loads(body)
    except ValueError:
        raise AssertionError(f"{where}: error body is not JSON: {body[:200]!r}") from None
    if not isinstance(payload, dict) or set(payload) != {"error", "detail"} or not isinstance(payload["error"], str):
        raise AssertionError(f"{where}: error body is not {{error, detail}}: {payload!r}")
    text = body.decode("utf-8", "replace")
    if "Traceback" in text or 'File "' in text:
        raise AssertionError(f"{where}: error body shows a traceback: {text[:500]}")
    for path in private:
        if path in text:
            raise AssertionError(f"{where}: error body shows the server path {path}: {text[:500]}")
