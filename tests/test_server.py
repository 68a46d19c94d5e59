"""``cleancut serve``: every endpoint, every error code, multipart and raw bodies, formats and
modes, options generated from the metadata, the bounded queue (503), concurrency, request logs,
graceful shutdown and the command line."""

from __future__ import annotations

import io
import logging
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

fastapi = pytest.importorskip("fastapi", reason="the server extra (fastapi) is not installed")
pytest.importorskip("httpx", reason="httpx is not installed")

from fastapi.testclient import TestClient  # noqa: E402

from cleancut import Remover  # noqa: E402
from cleancut.options import RemoveOptions, option_info  # noqa: E402
from cleancut.server import ServerSettings, create_app  # noqa: E402
from cleancut.server.options import api_help  # noqa: E402
from serving import free_port, start_thread, wait_healthy  # noqa: E402

SIZE = (64, 48)
REQUEST_OPTIONS = [i for i in option_info() if i.scope == "request"]
VALUE_OPTIONS = [i for i in REQUEST_OPTIONS if i.kind != "path"]
OPERATOR_OPTIONS = [i for i in option_info() if i.scope == "operator"]


def encode(img: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def noise_png(size=(160, 120), seed=0) -> bytes:
    """An incompressible PNG (random pixels), to test byte limits and truncation."""
    rng = np.random.default_rng(seed)
    return encode(Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` (no pixel data): a decompression-bomb probe."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
            + struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF) + b"\x00\x00\x00\x00IEND\xaeB`\x82")


def assert_error(response, status: int, code: str, contains: str = "") -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "detail"}
    assert isinstance(body["error"], str) and len(body["error"]) > 20
    assert body["detail"]["code"] == code, body
    assert contains.lower() in body["error"].lower(), body["error"]
    return body


def subject_ok(img: Image.Image) -> None:
    a = np.asarray(img)
    assert img.mode == "RGBA" and a.shape == (48, 64, 4)
    assert a[24, 32, 3] == 255 and a[2, 2, 3] == 0 and a[45, 60, 3] == 0


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> bytes:
    from cleancut.testing import square_image

    return encode(square_image(SIZE))


def make_app(tiny_model, **kwargs):
    return create_app(ServerSettings.from_values(model=str(tiny_model), **kwargs))


@pytest.fixture(scope="module")
def client(tiny_model):
    with TestClient(make_app(tiny_model, workers=2)) as c:
        yield c


def post_file(client, data: bytes, name: str = "photo.png", params=None, fields=None, files=None, **kw):
    all_files = {"file": (name, data, "image/png"), **(files or {})}
    return client.post("/api/remove", params=params, data=fields, files=all_files, **kw)


# ---------------------------------------------------------------- endpoints


def test_healthz(client):
    r = client.get("/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["model"] == "tiny" and body["workers"] == 2
    assert body["max_queue"] == 16 and body["admitted"] == 0


def test_models_names_the_served_model_without_its_path(client):
    r = client.get("/api/models")
    assert r.status_code == 200
    body = r.json()
    assert body["default"] == "tiny"
    assert [m["name"] for m in body["models"]] == ["tiny"]
    assert body["models"][0]["input_size"] == [32, 32]
    assert "file" not in body["models"][0] and "folder" not in body["models"][0]


def test_options_endpoint_is_the_metadata(client):
    body = client.get("/api/options").json()
    assert [o["name"] for o in body["options"]] == [i.name for i in REQUEST_OPTIONS]
    by_name = {o["name"]: o for o in body["options"]}
    assert by_name["bg_image"]["upload"] is True and by_name["mode"]["upload"] is False
    assert by_name["format"]["choices"] == ["png", "webp", "jpeg"]
    assert body["limits"]["max_upload_bytes"] == 25 * 1024 * 1024


def test_web_page_and_static_files(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'id="files"' in r.text and "/static/app.js" in r.text
    for path, kind in (("/static/app.js", "javascript"), ("/static/style.css", "text/css")):
        r = client.get(path)
        assert r.status_code == 200 and kind in r.headers["content-type"] and len(r.content) > 1000


def test_no_ui(tiny_model):
    with TestClient(make_app(tiny_model, ui=False)) as c:
        assert_error(c.get("/"), 404, "http_404", "no such endpoint")
        assert c.get("/healthz").status_code == 200


def test_docs_work_offline(client):
    page = client.get("/docs")
    assert page.status_code == 200
    # Swagger UI's assets come from the app itself, not from a CDN
    assert "/docs-static/swagger-ui-bundle.js" in page.text and "cdn." not in page.text
    js = client.get("/docs-static/swagger-ui-bundle.js")
    assert js.status_code == 200 and len(js.content) > 100_000
    assert client.get("/docs-static/swagger-ui.css").status_code == 200


def test_docs_list_every_request_option_from_the_metadata(client):
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/api/remove"]["post"]
    params = {p["name"]: p for p in op["parameters"]}
    assert list(params) == [i.name for i in VALUE_OPTIONS]  # every value option, in order, nothing else
    for info in VALUE_OPTIONS:
        p = params[info.name]
        assert p["in"] == "query" and p["required"] is False
        assert p["description"] == api_help(info)
        assert p["schema"]["type"] == {"bool": "boolean", "int": "integer", "float": "number"}.get(info.kind, "string")
        if info.choices:
            assert p["schema"]["enum"] == list(info.choices)
        if info.minimum is not None:
            assert p["schema"]["minimum"] == info.minimum
        if info.default is not None:
            assert p["schema"]["default"] == info.external(info.default)
        else:
            assert "default" not in p["schema"]
    form = op["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["file"]
    assert form["properties"]["file"]["format"] == "binary"
    assert form["properties"]["bg_image"]["format"] == "binary"
    assert set(form["properties"]) == {"file"} | {i.name for i in REQUEST_OPTIONS}
    assert "application/octet-stream" in op["requestBody"]["content"]
    for info in OPERATOR_OPTIONS:  # never a request parameter
        assert info.name not in params and info.name not in form["properties"]
    for status in ("400", "413", "415", "422", "503"):
        assert status in op["responses"]
    assert set(op["responses"]["200"]["content"]) == {"image/png", "image/webp", "image/jpeg"}


# ---------------------------------------------------------------- bodies, formats and modes


def test_multipart_cutout(client, photo):
    r = post_file(client, photo, name="my photo.png")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert r.headers["content-disposition"] == 'inline; filename="my_photo.cutout.png"'
    assert r.headers["x-cleancut-model"] == "tiny" and r.headers["x-cleancut-mode"] == "cutout"
    assert float(r.headers["x-processing-ms"]) >= 0
    subject_ok(Image.open(io.BytesIO(r.content)))


@pytest.mark.parametrize("content_type", ["image/png", "application/octet-stream", "text/plain", None])
def test_raw_body_is_sniffed_not_trusted(client, photo, content_type):
    headers = {"content-type": content_type} if content_type else {}
    r = client.post("/api/remove", content=photo, headers=headers)
    assert r.status_code == 200, r.text
    assert r.content == post_file(client, photo).content
    assert r.headers["content-disposition"] == 'inline; filename="image.cutout.png"'


@pytest.mark.parametrize("fmt, media, pil", [("png", "image/png", "PNG"), ("webp", "image/webp", "WEBP"),
                                             ("jpeg", "image/jpeg", "JPEG"), ("jpg", "image/jpeg", "JPEG")])
def test_output_formats(client, photo, fmt, media, pil):
    r = post_file(client, photo, params={"format": fmt})
    assert r.status_code == 200 and r.headers["content-type"] == media
    img = Image.open(io.BytesIO(r.content))
    assert img.format == pil and img.size == SIZE
    if pil == "JPEG":  # no alpha: transparent parts become white
        assert img.mode == "RGB" and min(img.getpixel((2, 2))) > 240
    else:
        assert img.mode == "RGBA" and img.getpixel((2, 2))[3] == 0


@pytest.mark.parametrize("fmt", ["png", "webp", "jpeg"])
def test_mask_mode(client, photo, fmt):
    r = post_file(client, photo, params={"mode": "mask", "format": fmt})
    assert r.status_code == 200 and r.headers["x-cleancut-mode"] == "mask"
    assert r.headers["content-disposition"].startswith('inline; filename="photo.mask.')
    mask = Image.open(io.BytesIO(r.content))
    assert mask.mode == ("RGB" if fmt == "webp" else "L") and mask.size == SIZE  # WebP has no gray mode
    mask = mask.convert("L")
    assert mask.getpixel((32, 24)) > 240 and mask.getpixel((2, 2)) < 15


def test_colour_blur_and_crop(client, photo):
    r = post_file(client, photo, params={"mode": "color", "bg_color": "red"})
    img = Image.open(io.BytesIO(r.content))
    assert img.mode == "RGB" and img.getpixel((2, 2)) == (255, 0, 0) and img.getpixel((32, 24)) == (255, 255, 255)
    r = post_file(client, photo, fields={"mode": "blur", "blur_radius": "3"})
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).mode == "RGB"
    r = post_file(client, photo, params={"crop": "true"})
    width, height = Image.open(io.BytesIO(r.content)).size
    assert 32 <= width <= 36 and 24 <= height <= 28  # the centre half of 64x48 and its soft edge


def test_background_picture_upload(client, photo):
    green = encode(Image.new("RGB", (10, 10), (0, 200, 0)))
    r = post_file(client, photo, fields={"mode": "image"}, files={"bg_image": ("bg.png", green, "image/png")})
    assert r.status_code == 200, r.text
    img = Image.open(io.BytesIO(r.content))
    assert img.getpixel((2, 2)) == (0, 200, 0) and img.getpixel((32, 24)) == (255, 255, 255)
    # mode auto picks the picture when one is uploaded
    r = post_file(client, photo, files={"bg_image": ("bg.png", green, "image/png")})
    assert r.headers["x-cleancut-mode"] == "image"
    assert not hasattr(client.app.state.cleancut, "tmpdir")  # decoded in memory: no temporary copy


def test_form_fields_and_query_parameters_are_the_same_options(client, photo):
    a = post_file(client, photo, params={"mode": "mask", "threshold": "0.5"})
    b = post_file(client, photo, fields={"mode": "mask", "threshold": "0.5"})
    c = post_file(client, photo, params={"mode": "mask"}, fields={"threshold": "0.5"})
    assert a.status_code == b.status_code == c.status_code == 200
    assert a.content == b.content == c.content


@pytest.mark.parametrize("options", [{}, {"mode": "mask"}, {"mode": "color", "bg_color": "#102030"},
                                     {"mode": "blur", "blur_radius": 4.0}, {"feather": 2.0, "crop": True},
                                     {"format": "webp", "quality": 50}, {"threshold": 0.5, "crop_margin": 3, "crop": True}])
def test_results_equal_the_python_api(client, tiny_model, photo, options):
    expected = Remover(tiny_model).remove(photo, RemoveOptions(**options))
    params = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in options.items()}
    r = post_file(client, photo, params=params)
    assert r.status_code == 200, r.text
    assert r.content == expected


# ---------------------------------------------------------------- errors


def test_413_declared_body_over_the_byte_limit(tiny_model):
    data = noise_png()
    assert len(data) > 40_000
    with TestClient(make_app(tiny_model, max_upload_mb=0.03)) as c:  # 31457 bytes
        body = assert_error(post_file(c, data), 413, "upload_too_large", "limit is 31457 bytes")
        assert body["detail"]["limit_bytes"] == 31457 and body["detail"]["received_bytes"] > 40_000
        assert "declares" in body["error"]  # refused on Content-Length, before reading the body
        assert_error(c.post("/api/remove", content=data), 413, "upload_too_large", "declares")
        assert post_file(c, noise_png((60, 40))).status_code == 200  # under the limit


def test_413_streamed_body_over_the_byte_limit(tiny_model):
    """No Content-Length (chunked): the cap is enforced while reading."""
    data = noise_png()

    def chunks():
        for i in range(0, len(data), 4096):
            yield data[i:i + 4096]

    boundary = "cleancut-test-boundary"
    multipart = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"mode\"\r\n\r\nmask\r\n"
                 f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"n.png\"\r\n"
                 "Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()

    def multipart_chunks(body):
        for i in range(0, len(body), 4096):
            yield body[i:i + 4096]

    with TestClient(make_app(tiny_model, max_upload_mb=0.03)) as c:
        r = c.post("/api/remove", content=chunks(), headers={"content-type": "image/png"})
        assert "content-length" not in r.request.headers
        assert_error(r, 413, "upload_too_large", "sent more than 31457 bytes")
        r = c.post("/api/remove", content=multipart_chunks(multipart),
                   headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        assert_error(r, 413, "upload_too_large", "sent more than 31457 bytes")
        small = multipart.replace(data, noise_png((60, 40)))
        r = c.post("/api/remove", content=multipart_chunks(small),
                   headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        assert r.status_code == 200 and r.headers["x-cleancut-mode"] == "mask"  # the same body, under the cap


def test_413_too_many_pixels(tiny_model, photo):
    with TestClient(make_app(tiny_model, options=RemoveOptions(max_pixels=3000))) as c:
        body = assert_error(post_file(c, photo), 413, "too_many_pixels", "64x48")
        assert body["detail"]["max_pixels"] == 3000
        small = encode(Image.new("RGB", (50, 50)))
        assert post_file(c, small).status_code == 200
        big_bg = encode(Image.new("RGB", (100, 100)))
        assert_error(post_file(c, small, files={"bg_image": ("bg.png", big_bg, "image/png")}), 413,
                     "too_many_pixels", "bg_image")


def test_413_decompression_bomb_header(client):
    bomb = png_header_only(100_000, 100_000)  # 10 gigapixels claimed by a 60-byte file
    assert len(bomb) < 100
    assert_error(post_file(client, bomb), 413, "too_many_pixels")


def test_413_gif_frame_bigger_than_the_cap(tiny_model):
    """Checked before Image.open, which would allocate the frame (fuzz/regressions/upload)."""
    from pathlib import Path

    gif = (Path(__file__).resolve().parents[1] / "fuzz/regressions/decode/gif-first-frame-extent-allocated-by-open").read_bytes()
    with TestClient(make_app(tiny_model, options=RemoveOptions(max_pixels=10**6))) as c:
        body = assert_error(post_file(c, gif, name="tiny.gif"), 413, "too_many_pixels", "2060x33536")
        assert body["detail"]["width"] == 2060


@pytest.mark.parametrize("data, found", [(b"hello, this is not an image", "text starting with 'hello"),
                                         (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", "binary data"),
                                         (b"\x00\x01\x02\x03" * 20, "binary data starting with 00 01 02 03")])
def test_415_not_an_image(client, data, found):
    # the declared type says PNG: the bytes decide
    assert_error(post_file(client, data), 415, "unsupported_media_type", found)
    assert_error(client.post("/api/remove", content=data, headers={"content-type": "image/jpeg"}), 415,
                 "unsupported_media_type", "expected JPEG, PNG")


def test_415_background_not_an_image(client, photo):
    r = post_file(client, photo, files={"bg_image": ("bg.txt", b"plain text, no picture", "image/png")})
    assert_error(r, 415, "unsupported_media_type", "uploaded bg_image 'bg.txt'")


def test_400_corrupt_images(client):
    data = noise_png()
    assert_error(post_file(client, data[: len(data) // 2], name="half.png"), 400, "corrupt_image", "half.png")
    jpeg = encode(Image.fromarray(np.random.default_rng(1).integers(0, 256, (96, 128, 3), dtype=np.uint8)), "JPEG")
    assert_error(client.post("/api/remove", content=jpeg[:600]), 400, "corrupt_image")
    garbage_header = b"\x89PNG\r\n\x1a\n" + b"\xff" * 64
    assert_error(post_file(client, garbage_header), 400, "corrupt_image", "header")
    assert_error(client.post("/api/remove", content=b""), 400, "empty_image", "0 bytes")


def test_400_corrupt_background(client, photo):
    bg = noise_png(seed=3)
    r = post_file(client, photo, fields={"mode": "image"}, files={"bg_image": ("bg.png", bg[: len(bg) // 2], "image/png")})
    body = assert_error(r, 400, "corrupt_image", "bg.png")
    assert "cleancut-serve-" not in body["error"]  # the temporary path is not shown


@pytest.mark.parametrize("params, contains", [
    ({"quality": "0"}, "expected an integer between 1 and 100"),
    ({"mode": "sepia"}, "expected one of auto, cutout, mask"),
    ({"threshold": "high"}, "'threshold'"),
    ({"crop": "maybe"}, "true or false"),
    ({"bg_color": "not-a-colour"}, "colour name"),
    ({"mode": "mask", "bg_color": "red"}, "bg_color is only used by mode 'color'"),
    ({"mdoe": "mask"}, "did you mean 'mode'"),
    ({"model": "/etc/passwd"}, "server setting"),
    ({"threads": "64"}, "server setting"),
    ({"max_pixels": "999999999999"}, "server setting"),
    ({"providers": "CPUExecutionProvider"}, "server setting"),
    ({"bg_image": "/etc/hosts"}, "must be uploaded as the multipart file field 'bg_image'"),
    ({"mode": "image"}, "needs a background picture; pass the multipart file field 'bg_image'"),
])
def test_422_bad_options(client, photo, params, contains):
    assert_error(post_file(client, photo, params=params), 422, "invalid_option", contains)


def test_422_bad_form_fields(client, photo):
    assert_error(post_file(client, photo, fields={"quality": "1000"}), 422, "invalid_option", "between 1 and 100")
    assert_error(post_file(client, photo, fields={"model": "x"}), 422, "invalid_option", "server setting")
    assert_error(post_file(client, photo, fields={"colour": "red"}), 422, "invalid_option", "unknown form field 'colour'")
    assert_error(post_file(client, photo, params={"mode": "mask"}, fields={"mode": "cutout"}), 422,
                 "invalid_option", "both as a query parameter and as a form field")
    assert_error(client.post("/api/remove", files={"photo": ("a.png", photo, "image/png")}), 422,
                 "invalid_option", "unknown form field 'photo'")
    assert_error(client.post("/api/remove", data={"mode": "mask"}, files={"x": ("", b"", "text/plain")}), 422,
                 "invalid_option")
    green = ("bg.png", encode(Image.new("RGB", (8, 8), (0, 200, 0))), "image/png")
    assert_error(client.post("/api/remove", data={"mode": "image"}, files={"bg_image": green}), 422,
                 "missing_image", "no 'file' field")
    assert_error(client.post("/api/remove", data={"file": "photo.png"}, files={"bg_image": green}), 422,
                 "invalid_option", "must be a file upload")
    assert_error(client.post("/api/remove", files=[("file", ("a.png", photo, "image/png")),
                                                   ("file", ("b.png", photo, "image/png"))]),
                 422, "invalid_option", "more than once")


def test_404_and_405_are_json(client):
    assert_error(client.get("/api/nothing"), 404, "http_404", "no such endpoint")
    assert_error(client.get("/api/remove"), 405, "http_405", "not allowed")


# ---------------------------------------------------------------- bounded queue and concurrency


class Gate:
    """Wraps the app's Remover.remove so that jobs wait until released."""

    def __init__(self, state):
        self.state = state
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)
        original = state.remover.remove

        def blocked(*args, **kwargs):
            self.entered.release()
            assert self.release.wait(30), "the test never released the gate"
            return original(*args, **kwargs)

        state.remover.remove = blocked

    def wait_until(self, predicate, what: str) -> None:
        deadline = time.monotonic() + 10
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting until {what}"
            time.sleep(0.01)


def test_503_when_the_queue_is_full(tiny_model, photo):
    app = make_app(tiny_model, workers=1, max_queue=1)
    state = app.state.cleancut
    with TestClient(app) as c, ThreadPoolExecutor(2) as pool:
        gate = Gate(state)
        first = pool.submit(post_file, c, photo)
        assert gate.entered.acquire(timeout=10)  # the one worker is busy
        second = pool.submit(post_file, c, photo)
        gate.wait_until(lambda: state.admitted == 2, "the second request is queued")
        assert c.get("/healthz").json()["queued"] == 1
        r = post_file(c, photo)
        body = assert_error(r, 503, "queue_full", "busy")
        assert int(r.headers["retry-after"]) >= 1
        assert body["detail"]["workers"] == 1 and body["detail"]["max_queue"] == 1
        assert c.get("/healthz").status_code == 200  # health checks are not queued
        gate.release.set()
        assert first.result(timeout=30).status_code == 200
        assert second.result(timeout=30).status_code == 200
        assert post_file(c, photo).status_code == 200  # the slots are free again
        assert state.admitted == 0


def test_503_is_answered_without_reading_the_body(tiny_model, photo):
    app = make_app(tiny_model, workers=1, max_queue=0)
    state = app.state.cleancut
    with TestClient(app) as c, ThreadPoolExecutor(1) as pool:
        gate = Gate(state)
        first = pool.submit(post_file, c, photo)
        assert gate.entered.acquire(timeout=10)
        read = []

        def body():
            read.append(1)
            yield photo

        assert_error(c.post("/api/remove", content=body(), headers={"content-type": "image/png"}), 503, "queue_full")
        assert read == []  # the body was never asked for
        gate.release.set()
        assert first.result(timeout=30).status_code == 200


def test_concurrent_requests_match_sequential_ones(tiny_model):
    from cleancut.testing import square_image

    images = [encode(square_image((40 + 8 * i, 30 + 5 * i), box=(i, 2 * i, 20 + 2 * i, 18 + i)))
              for i in range(8)]
    options = [{"mode": "cutout"}, {"mode": "mask", "format": "webp"}, {"mode": "color", "bg_color": "blue"},
               {"feather": "1.5"}]
    with TestClient(make_app(tiny_model, workers=3, max_queue=32)) as c:
        jobs = [(img, opts) for img in images for opts in options]
        sequential = [post_file(c, img, params=opts).content for img, opts in jobs]
        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(lambda job: post_file(c, job[0], params=job[1]), jobs))
        assert all(r.status_code == 200 for r in responses)
        assert [r.content for r in responses] == sequential
        assert len(set(sequential)) == len(jobs)  # every job really differs
        assert c.app.state.cleancut.completed == 2 * len(jobs)


# ---------------------------------------------------------------- operations


def test_one_log_line_per_request(client, photo, caplog):
    with caplog.at_level(logging.INFO, logger="cleancut.server"):
        post_file(client, photo, params={"mode": "mask"})
        client.get("/healthz")
        post_file(client, b"not an image")
    lines = [r.getMessage() for r in caplog.records if r.name == "cleancut.server"]
    assert len(lines) == 3, lines
    assert '"POST /api/remove?mode=mask" 200 ' in lines[0] and lines[0].split()[-2].endswith("ms")
    assert '"GET /healthz" 200 ' in lines[1]
    assert '"POST /api/remove" 415 ' in lines[2]


def test_graceful_shutdown_finishes_in_flight_requests(tiny_model, photo):
    import httpx
    import uvicorn

    app = make_app(tiny_model, workers=1)
    state = app.state.cleancut
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False, lifespan="on"))
    thread = start_thread(server)
    base = f"http://127.0.0.1:{port}"
    gate = Gate(state)
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(httpx.post, f"{base}/api/remove", content=photo, timeout=30)
        assert gate.entered.acquire(timeout=10)
        server.should_exit = True  # what SIGTERM does
        time.sleep(0.3)
        assert thread.is_alive()  # still waiting for the request in flight
        gate.release.set()
        r = in_flight.result(timeout=30)
    assert r.status_code == 200
    subject_ok(Image.open(io.BytesIO(r.content)))
    thread.join(20)
    assert not thread.is_alive()
    assert state.pool is None  # pool drained


def test_stopping_drains_the_worker_pool(tiny_model):
    """Lifespan shutdown (ServerState.stop) waits for every job already submitted, even when the
    server gave up on their connections (--shutdown-timeout)."""
    state = make_app(tiny_model, workers=1).state.cleancut
    state.start()
    release, finished = threading.Event(), []
    jobs = [state.pool.submit(lambda i=i: (release.wait(10), finished.append(i))) for i in range(3)]
    stopper = threading.Thread(target=state.stop)
    stopper.start()
    time.sleep(0.3)
    assert stopper.is_alive() and finished == []  # still waiting for the jobs
    release.set()
    stopper.join(10)
    assert not stopper.is_alive() and finished == [0, 1, 2] and all(j.done() for j in jobs)
    assert state.pool is None


def test_importing_the_server_creates_nothing():
    code = ("import sys, cleancut.server, cleancut.cli.serve; "
            "assert 'fastapi' not in sys.modules and 'onnxruntime' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_settings_are_validated():
    from cleancut.errors import ConfigError

    with pytest.raises(ConfigError, match="--workers"):
        ServerSettings(workers=0)
    with pytest.raises(ConfigError, match="--max-queue"):
        ServerSettings(max_queue=-1)
    with pytest.raises(ConfigError, match="--max-upload-mb"):
        ServerSettings.from_values(max_upload_mb=0)
    assert ServerSettings(workers=2, options=RemoveOptions(threads=3)).threads == 3


def test_cli_reports_bad_settings_and_unknown_models(tiny_model, capsys, tmp_path, monkeypatch):
    from cleancut import models
    from cleancut.cli import main

    monkeypatch.setattr(models, "BUNDLED_DIR", tmp_path)  # no bundled model at all
    assert main(["serve", "--model", str(tiny_model), "--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err
    assert main(["serve", "--model", str(tiny_model), "--max-queue", "-3"]) == 2
    assert main(["serve"]) == 1
    assert "unknown model 'cleancut-default'" in capsys.readouterr().err
    assert main(["serve", "--model", str(tmp_path / "missing.onnx")]) == 1


def test_cli_serve_end_to_end_with_sigterm(tiny_model, photo):
    import httpx

    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cleancut", "serve", "--model", str(tiny_model), "--port", str(port),
         "--workers", "1", "--max-queue", "2", "--max-upload-mb", "1"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(port, proc)
        r = httpx.post(f"{base}/api/remove", files={"file": ("p.png", photo, "image/png")}, timeout=30)
        assert r.status_code == 200
        subject_ok(Image.open(io.BytesIO(r.content)))
        big = httpx.post(f"{base}/api/remove", content=b"\x89PNG" + b"\0" * (1024 * 1024 + 10), timeout=30)
        assert big.status_code == 413
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode in (0, -signal.SIGTERM), err  # uvicorn re-raises SIGTERM once it is done
    assert "Application shutdown complete" in err
    assert "model 'tiny' loaded" in err
    assert '"POST /api/remove" 200 ' in err and '"POST /api/remove" 413 ' in err
    assert "worker pool drained; 1 requests processed" in err


@pytest.mark.parametrize("workers", [1, 3])
def test_every_worker_thread_is_started_with_the_server(tiny_model, workers):
    import threading

    def pool_threads():
        return [t for t in threading.enumerate() if t.name.startswith("cleancut-worker")]

    before = len(pool_threads())
    with TestClient(make_app(tiny_model, workers=workers)) as c:
        # before any request: the thread count is already the steady one (no thread appears later)
        assert len(pool_threads()) - before == workers
        assert c.get("/healthz").status_code == 200
    assert len(pool_threads()) == before  # and all of them end with the server
