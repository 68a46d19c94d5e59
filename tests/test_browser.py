"""The web page in a real browser: Debian's chromium driven by Playwright, against the real server
(uvicorn on a free 127.0.0.1 port, the tiny test model).

Skipped only when chromium (/usr/bin/chromium: ``apt-get install -y chromium``) or the Python
package playwright (``pip install playwright``; no browser download is needed) is missing, and
then only outside ``make test``: it installs chromium and sets ``CLEANCUT_REQUIRE_BROWSER=1``,
under which a missing browser fails these tests instead. The documentation's screenshots are
taken by ``tools/screenshot_web.py``.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from cleancut.testing import write_y4m

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 30_000

pytestmark = pytest.mark.browser


def _missing() -> str | None:
    if not CHROMIUM.exists():
        return f"Debian chromium is not installed at {CHROMIUM} (apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the Python package playwright is not installed (pip install playwright)"
    return None


@pytest.fixture(scope="module")
def playwright_driver():
    """One Playwright driver for the module (the sync API allows one at a time)."""
    reason = _missing()
    if reason and os.environ.get("CLEANCUT_REQUIRE_BROWSER") == "1":
        pytest.fail(f"the browser tests must run here (CLEANCUT_REQUIRE_BROWSER=1), but {reason}")
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright_driver):
    b = playwright_driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(scope="module")
def server_url(tiny_model):
    with serving(model=str(tiny_model), workers=2) as url:
        yield url


@contextlib.contextmanager
def serving(**settings):
    """A real server (uvicorn in a thread) with these ServerSettings values; yields its URL."""
    pytest.importorskip("fastapi", reason="the server extra (fastapi) is not installed")
    from serving import served

    from cleancut.server import ServerSettings, create_app

    with served(create_app(ServerSettings.from_values(**settings))) as (_, port):
        yield f"http://127.0.0.1:{port}"


def synthetic_photo(path: Path, size=(320, 240), kind: int = 0) -> Path:
    """A bright subject on a dark, slightly textured background (what the tiny model separates)."""
    w, h = size
    rng = np.random.default_rng(kind)
    y = np.linspace(0, 1, h)[:, None, None]
    bg = np.array([18, 26, 48]) + y * np.array([30, 22, 40]) + rng.normal(0, 4, (h, w, 3))
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    if kind == 0:
        draw.ellipse((w * 0.3, h * 0.2, w * 0.7, h * 0.8), fill=(255, 214, 120))
        draw.ellipse((w * 0.42, h * 0.35, w * 0.5, h * 0.45), fill=(255, 246, 220))
    else:
        cx, cy, r = w / 2, h / 2, min(w, h) * 0.38
        star = [(cx + (r if i % 2 == 0 else r * 0.45) * np.cos(np.pi / 2 + i * np.pi / 5),
                 cy - (r if i % 2 == 0 else r * 0.45) * np.sin(np.pi / 2 + i * np.pi / 5)) for i in range(10)]
        draw.polygon(star, fill=(150, 235, 255))
    img.save(path, quality=95)
    return path


def fetch_bytes(page, selector: str) -> bytes:
    """What an <img>, <video> or <a> points at, fetched inside the page (works for blob: URLs)."""
    b64 = page.evaluate(
        """async (selector) => {
            const el = document.querySelector(selector);
            const bytes = new Uint8Array(await (await fetch(el.src || el.href)).arrayBuffer());
            let text = "";
            for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
            return btoa(text);
        }""", selector)
    return base64.b64decode(b64)


def fetch_image(page, selector: str) -> Image.Image:
    """The image an <img> shows or an <a> downloads."""
    return Image.open(io.BytesIO(fetch_bytes(page, selector)))


def wait_done(page, count: int) -> None:
    page.wait_for_function(
        "(n) => document.querySelectorAll('.card[data-status=done]').length === n && "
        "!document.querySelector('.card[data-status=waiting], .card[data-status=working], .card[data-stale]')",
        arg=count, timeout=TIMEOUT_MS)


def test_web_page_cuts_out_photos(browser, server_url, tmp_path):
    photo = synthetic_photo(tmp_path / "bright subject.jpg")
    second = synthetic_photo(tmp_path / "star.png", kind=1)
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(server_url + "/")
        page.wait_for_function("document.querySelector('#model-name').textContent === 'tiny'", timeout=TIMEOUT_MS)
        assert page.is_disabled("#download-all")

        # pick a photo with the file chooser
        page.set_input_files("#files", str(photo))
        wait_done(page, 1)
        card = ".card:nth-child(1)"
        assert page.text_content(f"{card} .name") == "bright subject.jpg"
        assert page.evaluate(f"document.querySelector('{card} .before').naturalWidth") == 320
        cutout = fetch_image(page, f"{card} .after")
        assert cutout.format == "PNG" and cutout.mode == "RGBA" and cutout.size == (320, 240)
        alpha = np.asarray(cutout.getchannel("A"))
        assert alpha[5, 5] <= 3 and alpha[-5, -5] <= 3  # background corners are transparent
        assert alpha[120, 160] >= 252  # the subject is opaque
        assert page.get_attribute(f"{card} .download", "download") == "bright_subject.cutout.png"

        # drop a second photo onto the drop zone
        data = base64.b64encode(second.read_bytes()).decode()
        transfer = page.evaluate_handle(
            """(b64) => {
                const bin = atob(b64), bytes = new Uint8Array(bin.length);
                for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
                const dt = new DataTransfer();
                dt.items.add(new File([bytes], "star.png", { type: "image/png" }));
                return dt;
            }""", data)
        page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
        wait_done(page, 2)
        star = np.asarray(fetch_image(page, ".card:nth-child(2) .after").getchannel("A"))
        assert star[3, 3] <= 3 and star[120, 160] >= 252

        # changing an option re-runs every photo: the mask
        page.check("input[name=mode][value=mask]")
        page.wait_for_function("document.querySelector('.card[data-status=working], .card[data-status=waiting]') || "
                               "document.querySelector('.card .download').download.includes('.mask.')",
                               timeout=TIMEOUT_MS)
        wait_done(page, 2)
        mask = fetch_image(page, f"{card} .after")
        assert mask.mode == "L" and mask.getpixel((5, 5)) <= 3 and mask.getpixel((160, 120)) >= 252

        # back to cut-outs for the screenshot, then download everything as one zip
        page.check("input[name=mode][value=cutout]")
        page.wait_for_function("document.querySelector('.card .download').download.includes('.cutout.')",
                               timeout=TIMEOUT_MS)
        wait_done(page, 2)
        with page.expect_download(timeout=TIMEOUT_MS) as download:
            page.click("#download-all")
        archive = tmp_path / "all.zip"
        download.value.save_as(archive)
        with zipfile.ZipFile(archive) as zf:
            assert zf.testzip() is None
            assert sorted(zf.namelist()) == ["bright_subject.cutout.png", "star.cutout.png"]
            zipped = Image.open(io.BytesIO(zf.read("bright_subject.cutout.png")))
            assert np.asarray(zipped.getchannel("A"))[120, 160] >= 252

        assert errors == []
    finally:
        page.close()


def test_web_page_shows_server_errors(browser, server_url, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("this is not a picture")
    page = browser.new_page()
    try:
        page.goto(server_url + "/")
        page.set_input_files("#files", str(text))
        page.wait_for_selector(".card[data-status=error]", timeout=TIMEOUT_MS)
        message = page.text_content(".card .error")
        assert "not a supported image" in message and "notes.png" in message
        assert page.is_visible(".card .retry")
    finally:
        page.close()


def test_web_page_backgrounds_and_format(browser, server_url, tmp_path):
    photo = synthetic_photo(tmp_path / "p.png")
    backdrop = tmp_path / "red.png"
    Image.new("RGB", (40, 30), (220, 20, 20)).save(backdrop)
    page = browser.new_page()
    try:
        page.goto(server_url + "/")
        page.check("input[name=mode][value=color]")
        page.click(".swatch[data-color='#00b140']")
        page.select_option("#format", "jpeg")
        page.set_input_files("#files", str(photo))
        wait_done(page, 1)
        assert page.get_attribute(".card .download", "download") == "p.color.jpg"
        card = fetch_image(page, ".card .after")
        assert card.format == "JPEG"
        assert all(abs(a - b) <= 12 for a, b in zip(card.getpixel((5, 5)), (0, 177, 64)))

        page.select_option("#format", "png")
        page.check("input[name=mode][value=image]")
        page.wait_for_selector(".card[data-status=error]", timeout=TIMEOUT_MS)  # no picture chosen yet
        assert "background picture" in page.text_content(".card .error")
        page.set_input_files("#bg_image", str(backdrop))
        page.wait_for_function("document.querySelector('.card .download').download === 'p.image.png'",
                               timeout=TIMEOUT_MS)
        wait_done(page, 1)
        over = fetch_image(page, ".card .after").convert("RGB")
        assert over.getpixel((5, 5)) == (220, 20, 20) and min(over.getpixel((160, 120))) > 100
    finally:
        page.close()


# -- camera mode: getUserMedia -> WebSocket /api/stream -> canvas ---------------------------------------


@pytest.fixture(scope="module")
def camera_browser(playwright_driver, tmp_path_factory):
    folder = tmp_path_factory.mktemp("camera")
    photo = np.asarray(Image.open(synthetic_photo(folder / "frame.png", size=(320, 240))).convert("RGB"))
    clip = write_y4m(folder / "clip.y4m", [photo] * 30)
    args = CHROMIUM_ARGS + ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                            f"--use-file-for-fake-video-capture={clip}"]
    b = playwright_driver.chromium.launch(executable_path=str(CHROMIUM), args=args, headless=True)
    try:
        yield b, photo
    finally:
        b.close()


def served_mask(url: str, photo: np.ndarray) -> np.ndarray:
    """What ``POST /api/remove?mode=mask`` at ``url`` answers for ``photo`` (RGB array)."""
    import httpx

    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "PNG")
    answer = httpx.post(url + "/api/remove", params={"mode": "mask"}, content=buf.getvalue(), timeout=30)
    return np.asarray(Image.open(io.BytesIO(answer.content)))


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 127, b > 127
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_camera_frames_come_back_cut_out(camera_browser, server_url, tmp_path):
    """The fake camera's frames travel to the server and back; a returned mask matches what
    POST /api/remove gives for the same frame; frames/s and round trips are measured."""

    browser, photo = camera_browser
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(server_url + "/")
        page.check("input[name=mode][value=mask]")
        page.click("#camera-toggle")
        page.wait_for_function("window.cleancutCamera.stats().frames >= 15", timeout=TIMEOUT_MS)
        stats = page.evaluate("window.cleancutCamera.stats()")
        returned = page.evaluate("document.querySelector('#camera-out').toDataURL('image/png')")
        mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(returned.split(",", 1)[1]))).convert("L"))

        # record a second of the result
        page.click("#camera-record")
        page.wait_for_timeout(1200)
        page.click("#camera-record")
        page.wait_for_selector("#camera-download:not([hidden])", timeout=TIMEOUT_MS)
        assert int(page.get_attribute("#camera-download", "data-bytes")) > 1000
        page.click("#camera-toggle")
        assert errors == []
    finally:
        page.close()
    reference = served_mask(server_url, photo)
    assert mask.shape == reference.shape == (240, 320)
    iou = mask_iou(mask, reference)
    print(f"\ncamera over WebSocket: {stats['frames']} frames, {stats['fps']:.1f} frames/s, round trip "
          f"p50 {stats['rtt_p50_ms']:.0f} ms / p95 {stats['rtt_p95_ms']:.0f} ms, {stats['dropped']} dropped; "
          f"mask IoU vs /api/remove {iou:.4f}")
    # the camera frame went through YUV 4:2:0 and JPEG on its way: the edges move by a pixel at most
    assert iou >= 0.98
    assert stats["fps"] > 1 and stats["rtt_p50_ms"] > 0


def test_camera_keeps_one_frame_in_flight(camera_browser, tiny_model):
    """The page sends a frame only once the one before it is answered (its matte, or a "dropped"
    message), so that no frame waits on the server behind another: counted on the WebSocket itself,
    whose messages pass through Playwright both ways (a frame the page sends can only follow the
    replies forwarded to it before). The server's frame-rate cap is lifted, so that only the page's
    own rule spaces its frames."""
    import re

    browser, _ = camera_browser
    events: list[tuple[str, str | bytes]] = []

    def relay(page_ws) -> None:
        server_ws = page_ws.connect_to_server()

        def up(message):
            events.append(("sent", message))
            server_ws.send(message)

        def down(message):
            events.append(("received", message))
            page_ws.send(message)

        page_ws.on_message(up)
        server_ws.on_message(down)

    with serving(model=str(tiny_model), workers=2, stream_max_fps=1000) as url:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.route_web_socket(re.compile(r"/api/stream"), relay)
        try:
            page.goto(url + "/")
            page.click("#camera-toggle")
            page.wait_for_function("window.cleancutCamera.stats().frames >= 40", timeout=TIMEOUT_MS)
            stats = page.evaluate("window.cleancutCamera.stats()")
            page.click("#camera-toggle")
            assert errors == [] and page.text_content("#camera-error") == ""
        finally:
            page.close()
    in_flight = most = sent = answered = 0
    for direction, payload in events:
        if direction == "sent" and isinstance(payload, bytes):
            sent += 1
            in_flight += 1
            most = max(most, in_flight)
        elif direction == "received" and (isinstance(payload, bytes) or json.loads(payload)["type"] == "dropped"):
            answered += 1
            in_flight -= 1
    assert sent >= 40 and answered >= 40
    assert most == 1, f"{most} frames in flight at once ({sent} sent)"
    print(f"\none frame in flight: {sent} frames sent, {answered} answered; {stats['fps']:.1f} frames/s, "
          f"round trip p50 {stats['rtt_p50_ms']:.0f} ms, age p50 {stats['age_p50_ms']:.0f} ms, "
          f"next frame not ready {stats['late']} times")
    assert stats["age_p50_ms"] >= stats["rtt_p50_ms"] > 0  # the age counts the capture and encoding too


def test_camera_sends_frames_at_the_models_size_and_draws_at_the_cameras(camera_browser, tmp_path):
    """With a model that keeps the frame's aspect at a few thousand pixels (``frame_pixels`` in the
    ready message), the page sends each 320x240 frame shrunk to that budget, and scales the matte
    back up: the result on the canvas is at the camera's size, and its mask matches what POST
    /api/remove gives for the full frame."""
    import re


    from cleancut.testing import write_tiny_model

    model = write_tiny_model(tmp_path / "keep", name="tiny-keep", input_size=(64, 64), aspect="keep", size_multiple=8)
    browser, photo = camera_browser
    sizes: list[tuple[int, int]] = []

    def relay(page_ws) -> None:
        server_ws = page_ws.connect_to_server()

        def up(message):
            if isinstance(message, bytes):
                sizes.append(Image.open(io.BytesIO(message)).size)
            server_ws.send(message)

        page_ws.on_message(up)
        server_ws.on_message(page_ws.send)

    with serving(model=str(model), workers=1) as url:
        page = open_page(browser, url + "/", viewport={"width": 1280, "height": 900})
        page.route_web_socket(re.compile(r"/api/stream"), relay)
        try:
            page.check("input[name=mode][value=mask]")
            page.click("#camera-toggle")
            page.wait_for_function("window.cleancutCamera.stats().frames >= 10", timeout=TIMEOUT_MS)
            returned = page.evaluate("document.querySelector('#camera-out').toDataURL('image/png')")
            page.click("#camera-toggle")
            assert page.errors == [] and page.text_content("#camera-error") == ""
        finally:
            page.close()
        reference = served_mask(url, photo)
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(returned.split(",", 1)[1]))).convert("L"))
    assert sizes and set(sizes) == {(74, 55)}, sizes  # 320x240 at sqrt(4096 / 76800)
    assert mask.shape == reference.shape == (240, 320)
    assert mask_iou(mask, reference) >= 0.95


# -- defects a new user hit, and the page's tools ----------------------------------------------------


def open_page(browser, url: str, **kwargs):
    """A page at ``url`` that records uncaught errors and every answer of 400 or more."""
    page = browser.new_page(**kwargs)
    page.errors, page.failed = [], []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.on("response", lambda r: r.status >= 400 and page.failed.append(f"{r.status} {r.url}"))
    page.goto(url)
    return page


def test_api_docs_render_openapi_31_offline_with_every_operation(browser, server_url):
    import httpx

    schema = httpx.get(server_url + "/openapi.json", timeout=30).json()
    assert schema["openapi"].startswith("3.1")
    operations = sum(len([m for m in ops if m in ("get", "post", "put", "delete", "patch")])
                     for ops in schema["paths"].values())
    page = browser.new_page()
    outside: list[str] = []

    def only_this_server(route):  # offline: nothing but the server itself may be asked
        if route.request.url.startswith(server_url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_server)
    try:
        page.goto(server_url + "/docs")
        page.wait_for_function("(n) => document.querySelectorAll('.opblock').length === n", arg=operations,
                               timeout=TIMEOUT_MS)
        text = page.inner_text("body")
        assert "Unable to render" not in text and "does not specify a valid version" not in text
        assert "/api/remove" in text and "/api/video/{job_id}" in text
        assert outside == []
    finally:
        page.close()


def test_page_and_its_icon_load_without_a_missing_file(browser, server_url):
    import httpx

    page = open_page(browser, server_url + "/")
    try:
        page.wait_for_function("document.querySelector('#model-name').textContent === 'tiny'", timeout=TIMEOUT_MS)
        icon = page.evaluate("document.querySelector('link[rel=icon]').href")
        assert page.failed == [] and page.errors == []
    finally:
        page.close()
    assert httpx.get(icon, timeout=30).status_code == 200
    favicon = httpx.get(server_url + "/favicon.ico", timeout=30)  # what browsers ask for anyway
    assert favicon.status_code == 200 and favicon.headers["content-type"].startswith("image/")


def test_results_being_redone_cannot_be_downloaded_and_are_marked(browser, server_url, tmp_path):
    page = open_page(browser, server_url + "/")
    try:
        page.set_input_files("#files", [str(synthetic_photo(tmp_path / "a.jpg")),
                                        str(synthetic_photo(tmp_path / "b.png", kind=1))])
        wait_done(page, 2)
        assert page.is_enabled("#download-all") and page.is_visible(".card .download")
        assert page.evaluate("document.querySelectorAll('.card[data-stale]').length") == 0
        page.check("input[name=mode][value=blur]")
        # at once, before the re-run starts: the old results are marked and cannot be downloaded
        assert page.evaluate("document.querySelectorAll('.card[data-stale]').length") == 2
        assert page.is_visible(".card[data-stale] .badge.stale")
        assert page.is_disabled("#download-all")
        assert not page.is_visible(".card .download")
        wait_done(page, 2)
        assert page.evaluate("document.querySelectorAll('.card[data-stale]').length") == 0
        assert page.get_attribute(".card .download", "download") == "a.blur.png"
        with page.expect_download(timeout=TIMEOUT_MS) as download:
            page.click("#download-all")
        archive = tmp_path / "all.zip"
        download.value.save_as(archive)
        with zipfile.ZipFile(archive) as zf:
            assert sorted(zf.namelist()) == ["a.blur.png", "b.blur.png"]
        assert page.errors == []
    finally:
        page.close()


def test_edge_stage_menu_sends_the_stage_and_says_what_it_costs(browser, server_url, tmp_path):
    """The Edge stage menu (issue 31: a stage that is not on by default is one choice on the page,
    which says what it costs): "The model's own" names the model's stage, the learned refiner is
    offered only for a model that has one, and a choice re-runs the photos with ``edges``."""
    from cleancut.testing import write_tiny_model

    page = open_page(browser, server_url + "/", viewport={"width": 1280, "height": 900})
    sent: list[bytes] = []

    def record(route):
        sent.append(route.request.post_data_buffer or b"")
        route.continue_()

    page.route("**/api/remove*", record)
    try:
        page.wait_for_function("document.querySelector('#edges option[value=auto]').textContent.includes('(')")
        assert page.text_content("#edges option[value=auto]") == "The model's own (network)"
        assert not page.eval_on_selector("#edges option[value=learned]", "(o) => o.disabled")  # tiny has one
        assert not page.is_visible("#edges-note")
        page.set_input_files("#files", str(synthetic_photo(tmp_path / "p.jpg")))
        wait_done(page, 1)
        assert b'name="edges"\r\n\r\nauto\r\n' in sent[-1]
        page.select_option("#edges", "guided")
        assert page.is_visible("#edges-note") and "1.4-1.5x the time" in page.text_content("#edges-note")
        wait_done(page, 1)
        assert len(sent) == 2 and b'name="edges"\r\n\r\nguided\r\n' in sent[-1]
        assert page.errors == [] and page.failed == []
    finally:
        page.close()
    plain = write_tiny_model(tmp_path / "plain", name="plain", edge_refiner=False)
    with serving(model=str(plain), workers=1) as url:
        page = open_page(browser, url + "/", viewport={"width": 1280, "height": 900})
        try:
            page.wait_for_function("document.querySelector('#edges option[value=auto]').textContent.includes('(')")
            assert page.eval_on_selector("#edges option[value=learned]", "(o) => o.disabled && o.hidden")
        finally:
            page.close()


def test_before_after_slider_and_the_large_view_zoom_and_pan(browser, server_url, tmp_path):
    page = open_page(browser, server_url + "/", viewport={"width": 1280, "height": 900})
    try:
        page.set_input_files("#files", str(synthetic_photo(tmp_path / "p.jpg")))
        wait_done(page, 1)
        frame = page.query_selector(".card .compare")
        page.eval_on_selector(".card .compare-slider", "(s) => { s.value = 70; s.dispatchEvent(new Event('input')); }")
        box = frame.bounding_box()
        shot = Image.open(io.BytesIO(page.screenshot(clip=box))).convert("RGB")
        # left of the split: the photo's dark background; right of it: the result's transparent
        # background over the light checkerboard
        y = int(box["height"] * 0.1)
        left = shot.getpixel((int(box["width"] * 0.3), y))
        right = shot.getpixel((int(box["width"] * 0.85), y))
        assert max(left) < 90 and min(right) > 180, (left, right)

        frame.click()
        page.wait_for_selector("#viewer[open]", timeout=TIMEOUT_MS)
        page.wait_for_function("window.cleancut.viewer.width === 320", timeout=TIMEOUT_MS)
        before = page.evaluate("({...window.cleancut.viewer})")
        page.click("#zoom-in")
        page.click("#zoom-in")
        zoomed = page.evaluate("window.cleancut.viewer.scale")
        assert zoomed > before["scale"] * 1.5
        stage = page.query_selector("#viewer .viewer-stage").bounding_box()
        cx, cy = stage["x"] + stage["width"] / 2, stage["y"] + stage["height"] / 2
        page.mouse.move(cx, cy)
        page.mouse.wheel(0, -400)
        page.wait_for_function("(s) => window.cleancut.viewer.scale > s", arg=zoomed, timeout=TIMEOUT_MS)
        x0 = page.evaluate("window.cleancut.viewer.x")
        page.mouse.down()
        page.mouse.move(cx + 120, cy + 40, steps=5)
        page.mouse.up()
        assert abs(page.evaluate("window.cleancut.viewer.x") - x0 - 120) < 2
        page.click("#zoom-fit")
        assert page.evaluate("window.cleancut.viewer.scale") == before["scale"]
        page.click("#viewer-done")
        page.wait_for_function("!document.querySelector('#viewer').open", timeout=TIMEOUT_MS)
        assert page.errors == []
    finally:
        page.close()


def _set_range(page, selector: str, value) -> None:
    page.eval_on_selector(selector, "(s, v) => { s.value = v; s.dispatchEvent(new Event('input', {bubbles: true})); }",
                          value)


def _stroke(page, points) -> None:
    """Drag the brush through photo points (the viewer shows the 320x240 photo at 1:1)."""
    box = page.query_selector("#viewer-edit").bounding_box()
    k = box["width"] / 320
    page.mouse.move(box["x"] + points[0][0] * k, box["y"] + points[0][1] * k)
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(box["x"] + x * k, box["y"] + y * k, steps=8)
    page.mouse.up()


def test_brush_erases_and_restores_the_mask_at_the_photos_size(browser, server_url, tmp_path):
    page = open_page(browser, server_url + "/", viewport={"width": 1280, "height": 900})
    try:
        page.set_input_files("#files", str(synthetic_photo(tmp_path / "subject.jpg")))
        wait_done(page, 1)
        assert not page.is_visible(".card .download-mask")  # nothing corrected yet
        page.click(".card .open")
        page.wait_for_selector("#viewer[open]", timeout=TIMEOUT_MS)
        page.check("#viewer input[name=tool][value=erase]")
        page.wait_for_selector("#viewer-edit:not([hidden])", timeout=TIMEOUT_MS)
        _set_range(page, "#brush-size", 30)
        _set_range(page, "#brush-soft", 0)
        _stroke(page, [(120, 120), (200, 120)])  # across the subject's middle
        _stroke(page, [(160, 70), (165, 70)])     # a dab that will be undone
        page.click("#brush-undo")
        page.check("#viewer input[name=tool][value=restore]")
        _stroke(page, [(20, 20), (40, 20)])       # a patch of background made opaque
        page.click("#viewer-done")
        page.wait_for_selector(".card[data-edited] .download-mask:not([hidden])", timeout=TIMEOUT_MS)

        result = fetch_image(page, ".card .download")
        assert result.format == "PNG" and result.mode == "RGBA" and result.size == (320, 240)
        assert page.get_attribute(".card .download", "download") == "subject.cutout.png"
        alpha = np.asarray(result.getchannel("A"))
        assert alpha[120, 160] == 0 and alpha[120, 130] == 0  # erased: transparent in the download
        assert alpha[70, 160] >= 250                           # undone: the subject again
        assert alpha[20, 30] == 255 and alpha[200, 10] <= 3    # restored patch; the rest as it was
        photo = np.asarray(Image.open(tmp_path / "subject.jpg").convert("RGB")).astype(int)
        assert np.abs(np.asarray(result.convert("RGB")).astype(int)[20, 30] - photo[20, 30]).max() <= 3

        mask = fetch_image(page, ".card .download-mask")
        assert mask.format == "PNG" and mask.mode == "L" and mask.size == (320, 240)
        assert page.get_attribute(".card .download-mask", "download") == "subject.mask.png"
        assert np.array_equal(np.asarray(mask), alpha)

        # a re-run with the same edge options keeps the edit: here over a colour, as a JPEG
        page.check("input[name=mode][value=color]")
        page.click(".swatch[data-color='#00b140']")
        page.wait_for_function("document.querySelector('.card .download').download === 'subject.color.png'",
                               timeout=TIMEOUT_MS)
        wait_done(page, 1)
        card = fetch_image(page, ".card .download").convert("RGB")
        assert all(abs(a - b) <= 3 for a, b in zip(card.getpixel((160, 120)), (0, 177, 64)))
        assert page.is_visible(".card[data-edited] .badge.edited")
        assert page.errors == []
    finally:
        page.close()


def _erase_across_the_middle(page, card: str) -> None:
    """Open ``card`` large, erase a band 30 photo pixels wide through the subject (y 120, x 120..200), Done."""
    page.click(f"{card} .open")
    page.wait_for_selector("#viewer[open]", timeout=TIMEOUT_MS)
    page.check("#viewer input[name=tool][value=erase]")
    page.wait_for_selector("#viewer-edit:not([hidden])", timeout=TIMEOUT_MS)
    _set_range(page, "#brush-size", round(30 * page.evaluate("window.cleancut.viewer.scale")))  # in screen pixels
    _set_range(page, "#brush-soft", 0)
    _stroke(page, [(120, 120), (200, 120)])
    page.click("#viewer-done")
    page.wait_for_selector(f"{card}[data-edited] .download-mask:not([hidden])", timeout=TIMEOUT_MS)


def _save_example(page, card: str, count: int) -> str:
    """Click the card's Save as example; wait for the set to hold ``count``; the card's note."""
    page.click(f"{card} .save-example")
    page.wait_for_selector(f"{card}[data-saved] .save-example:disabled", timeout=TIMEOUT_MS)
    assert page.get_attribute("#examples", "data-count") == str(count)
    assert page.text_content("#examples-count strong") == str(count)
    return page.text_content(f"{card} .example-note")


def test_save_as_example_in_the_page_downloads_the_set_as_a_zip(browser, server_url, tmp_path):
    """Without --examples the page keeps the set: brush, save, and its zip is what finetune reads."""
    from cleancut.examples import read_examples

    page = open_page(browser, server_url + "/", viewport={"width": 1280, "height": 900})
    try:
        page.set_input_files("#files", str(synthetic_photo(tmp_path / "my subject.png")))
        wait_done(page, 1)
        page.wait_for_function("window.cleancut.examples && document.querySelector('#examples-where')"
                               ".textContent === 'in this page'", timeout=TIMEOUT_MS)
        assert page.get_attribute("#examples", "data-mode") == "browser"
        assert page.is_disabled("#examples-download") and page.is_visible(".card .save-example")
        _erase_across_the_middle(page, ".card")
        note = _save_example(page, ".card", 1)
        assert "im/my-subject.jpg" in note and "gt/my-subject.png" in note and "in this page" in note
        assert page.is_visible(".card .badge.saved")
        with page.expect_download(timeout=TIMEOUT_MS) as download:
            page.click("#examples-download")
        assert download.value.suggested_filename == "examples.zip"
        archive = tmp_path / "examples.zip"
        download.value.save_as(archive)
        assert page.errors == [] and page.failed == []
    finally:
        page.close()
    with zipfile.ZipFile(archive) as zf:
        assert zf.testzip() is None
        assert sorted(zf.namelist()) == ["gt/my-subject.png", "im/my-subject.jpg"]
        photo = Image.open(io.BytesIO(zf.read("im/my-subject.jpg")))
        mask = Image.open(io.BytesIO(zf.read("gt/my-subject.png")))
    assert photo.format == "JPEG" and photo.mode == "RGB" and photo.size == (320, 240)
    original = np.asarray(Image.open(tmp_path / "my subject.png").convert("RGB")).astype(int)
    assert np.abs(np.asarray(photo).astype(int) - original).mean() < 3  # the photo, re-encoded at quality 95
    assert mask.format == "PNG" and mask.mode == "L" and mask.size == (320, 240)
    m = np.asarray(mask)
    assert (m[112:129, 125:196] == 0).all()              # erased by the brush
    assert m[70, 160] >= 250 and m[170, 160] >= 250       # the rest of the subject
    assert m[5, 5] <= 3 and m[-5, -5] <= 3               # the background
    pairs = read_examples(archive, tmp_path / "unpacked")  # what cleancut finetune reads
    assert [p.image.name for p in pairs] == ["my-subject.jpg"]


def test_save_as_example_on_the_server_never_overwrites(browser, tiny_model, tmp_path):
    """With --examples DIR the pair goes to DIR; the same photo saved again is a second pair;
    a server error is shown on the card in a sentence."""
    folder = tmp_path / "examples"
    photo = synthetic_photo(tmp_path / "shot.jpg")
    with serving(model=str(tiny_model), workers=1, examples_dir=folder) as url:
        page = open_page(browser, url + "/", viewport={"width": 1280, "height": 900})
        try:
            page.wait_for_selector("#examples[data-mode=server]", timeout=TIMEOUT_MS)
            assert page.text_content("#examples-where") == "on the server"
            page.set_input_files("#files", str(photo))
            wait_done(page, 1)

            # the server refuses once (disk full): the card says so, nothing is counted
            refusal = {"error": "the example could not be stored on the server (No space left on device); "
                                "nothing was written.", "detail": {"code": "examples_storage"}}
            page.route("**/api/examples", lambda route: route.fulfill(
                status=507, content_type="application/json", body=json.dumps(refusal))
                if route.request.method == "POST" else route.continue_())
            page.click(".card .save-example")
            page.wait_for_selector(".card .example-note.failed", timeout=TIMEOUT_MS)
            message = page.text_content(".card .example-note")
            assert message.startswith("Could not save this photo as an example: ") and "No space left" in message
            assert page.is_enabled(".card .save-example") and page.get_attribute("#examples", "data-count") == "0"
            page.unroute("**/api/examples")

            # saved unedited: the server's own mask
            note = _save_example(page, ".card", 1)
            assert "on the server" in note and "(1 in the set)" in note
            first = {p.relative_to(folder): p.read_bytes() for p in folder.glob("*/*") if p.is_file()}
            assert len(first) == 2 and all(str(p).startswith(("im/shot-", "gt/shot-")) for p in first)

            # the same photo again, corrected with the brush: a second pair beside the first
            page.set_input_files("#files", str(photo))
            wait_done(page, 2)
            _erase_across_the_middle(page, ".card:nth-child(2)")
            note = _save_example(page, ".card:nth-child(2)", 2)
            assert "(2 in the set)" in note
            with page.expect_download(timeout=TIMEOUT_MS) as download:
                page.click("#examples-download")
            archive = tmp_path / "server.zip"
            download.value.save_as(archive)
            assert page.errors == []
        finally:
            page.close()
    photos, masks = sorted((folder / "im").glob("*.jpg")), sorted((folder / "gt").glob("*.png"))
    assert len(photos) == len(masks) == 2 and [p.stem for p in photos] == [m.stem for m in masks]
    assert all(folder.joinpath(p).read_bytes() == data for p, data in first.items())  # the first pair untouched
    second = next(m for m in masks if m.relative_to(folder) not in first)
    old = np.asarray(Image.open(folder / next(p for p in first if p.parts[0] == "gt")))
    new = np.asarray(Image.open(second))
    assert old.shape == new.shape == (240, 320)
    assert old[120, 160] >= 250 and new[120, 160] == 0 and (new[112:129, 125:196] == 0).all()
    assert old[5, 5] <= 3 and new[70, 160] >= 250
    for p in photos:
        assert Image.open(p).size == (320, 240)
    with zipfile.ZipFile(archive) as zf:
        assert sorted(zf.namelist()) == sorted([f"im/{p.name}" for p in photos] + [f"gt/{m.name}" for m in masks])


def _drop_file(page, path: Path, name: str, mime: str = "") -> None:
    transfer = page.evaluate_handle(
        """([b64, name, type]) => {
            const bin = atob(b64), bytes = new Uint8Array(bin.length);
            for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, { type }));
            return dt;
        }""", [base64.b64encode(path.read_bytes()).decode(), name, mime])
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})


def test_a_clip_dropped_on_the_page_becomes_a_video_job(browser, server_url, tmp_path):
    pytest.importorskip("av", reason="clips need PyAV (the video extra)")
    from video_clips import make_clip

    short = make_clip(tmp_path / "short.mp4", frames=10, audio=None)
    long = make_clip(tmp_path / "long.mp4", frames=600, audio=None)
    page = open_page(browser, server_url + "/", viewport={"width": 1280, "height": 900})
    try:
        _drop_file(page, short, "holiday")  # no type, no suffix: known by its bytes
        page.wait_for_selector(".card[data-kind=clip][data-status=done]", timeout=TIMEOUT_MS)
        assert page.text_content(".card[data-kind=clip] .name") == "holiday"
        assert page.get_attribute(".card[data-kind=clip] .download", "download") == "holiday.cutout.webm"
        page.wait_for_function("document.querySelector('.card[data-kind=clip] video.clip').readyState >= 2",
                               timeout=TIMEOUT_MS)
        assert page.evaluate("document.querySelector('.card[data-kind=clip] video.clip').videoWidth") == 64
        assert fetch_bytes(page, ".card[data-kind=clip] .download")[:4] == b"\x1a\x45\xdf\xa3"  # WebM

        # an option change marks the clip out of date and offers to redo it
        page.check("input[name=mode][value=mask]")
        page.wait_for_selector(".card[data-kind=clip][data-stale] .retry:not([hidden])", timeout=TIMEOUT_MS)
        assert "new options" in page.text_content(".card[data-kind=clip] .retry")
        page.check("input[name=mode][value=cutout]")
        page.wait_for_selector(".card[data-kind=clip]:not([data-stale])", timeout=TIMEOUT_MS)

        # a long one shows its progress and can be cancelled
        page.set_input_files("#files", str(long))
        second = ".card[data-kind=clip]:nth-child(2)"
        page.wait_for_function(f"document.querySelector('{second} progress') && "
                               f"document.querySelector('{second} .status').textContent.includes('frames')",
                               timeout=TIMEOUT_MS)
        assert page.is_visible(f"{second} .progress")
        page.click(f"{second} .cancel")
        page.wait_for_selector(f"{second}[data-status=cancelled]", timeout=TIMEOUT_MS)
        assert page.is_visible(f"{second} .retry") and not page.is_visible(f"{second} .progress")
        assert page.errors == []
    finally:
        page.close()


def _camera_pixel(page, x: int, y: int) -> list[int]:
    return page.evaluate("([x, y]) => Array.from(document.querySelector('#camera-out').getContext('2d')"
                         ".getImageData(x, y, 1, 1).data)", [x, y])


def _more_frames(page, n: int = 4) -> None:
    start = page.evaluate("window.cleancutCamera.stats().frames")
    page.wait_for_function("(n) => window.cleancutCamera.stats().frames >= n", arg=start + n, timeout=TIMEOUT_MS)


def test_camera_switches_modes_and_colours_while_streaming(camera_browser, server_url, tmp_path):
    browser, _ = camera_browser
    backdrop = tmp_path / "red.png"
    Image.new("RGB", (40, 30), (220, 20, 20)).save(backdrop)
    page = open_page(browser, server_url + "/", viewport={"width": 1280, "height": 900})
    try:
        page.check("input[name=mode][value=color]")
        page.click("#camera-toggle")
        _more_frames(page, 3)
        assert _camera_pixel(page, 4, 4)[:3] == [255, 255, 255]
        page.click(".swatch[data-color='#00b140']")  # a swatch, not a form event
        _more_frames(page)
        assert _camera_pixel(page, 4, 4)[:3] == [0, 177, 64]
        page.check("input[name=mode][value=blur]")    # leaving Colour used to close the stream
        _more_frames(page)
        blurred = _camera_pixel(page, 4, 4)
        assert blurred[3] == 255 and max(blurred[:3]) < 90
        page.check("input[name=mode][value=mask]")
        _more_frames(page)
        assert _camera_pixel(page, 4, 4) == [0, 0, 0, 255] and _camera_pixel(page, 160, 120)[0] >= 250
        page.check("input[name=mode][value=image]")
        page.set_input_files("#bg_image", str(backdrop))
        _more_frames(page, 6)
        assert _camera_pixel(page, 4, 4)[:3] == [220, 20, 20]
        page.check("input[name=mode][value=cutout]")
        page.check("#camera-smooth")                   # an option message, not a restart
        page.evaluate("document.querySelector('#feather').value = 2; "
                      "document.querySelector('#feather').dispatchEvent(new Event('input', {bubbles: true}))")
        _more_frames(page)
        assert _camera_pixel(page, 4, 4)[3] == 0 and _camera_pixel(page, 160, 120)[3] >= 250
        assert not page.is_visible("#camera-ignored")
        page.check("#alpha_matting")                   # the camera says what it does not use
        page.wait_for_selector("#camera-ignored:not([hidden])", timeout=TIMEOUT_MS)
        assert "Refine edges" in page.text_content("#camera-ignored")
        page.select_option("#edges", "guided")
        page.wait_for_function("document.querySelector('#camera-ignored').textContent.includes('Edge stage')",
                               timeout=TIMEOUT_MS)
        _more_frames(page)
        state = page.evaluate("({running: window.cleancutCamera.state.running, "
                              "error: document.querySelector('#camera-error').textContent})")
        assert state == {"running": True, "error": ""}
        page.click("#camera-toggle")
        assert page.errors == []
    finally:
        page.close()


def test_docs_site_works_opened_from_files(browser, tmp_path):
    """``make docs`` builds a site that works from file:// URLs: pages, not directory listings,
    and search, without a server."""
    import subprocess
    import sys

    pytest.importorskip("mkdocs", reason="the docs extra (mkdocs) is not installed")
    repo = Path(__file__).resolve().parent.parent
    site = tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(site)], cwd=repo,
                           capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert build.returncode == 0, build.stderr[-2000:]
    page = browser.new_page()
    outside: list[str] = []
    page.on("request", lambda r: r.url.startswith("file://") or outside.append(r.url))
    try:
        page.goto((site / "index.html").as_uri())
        page.locator("a.md-nav__link[href='reference.html']").first.click()
        page.wait_for_selector("h1#api-reference", timeout=TIMEOUT_MS)
        assert page.url.endswith("/reference.html")
        heading = page.inner_text("h2#cleancut\\.options\\.RemoveOptions")
        assert heading.startswith("cleancut.options.RemoveOptions") and len(heading) < 60  # not a 3,864-character signature
        assert ":meth:`" not in page.inner_text("article") and ":class:`" not in page.inner_text("article")
        page.click("label.md-search__icon, .md-search__input", timeout=TIMEOUT_MS)
        page.wait_for_function(  # the index is loaded (by a worker, from files) before a query is typed
            "!document.querySelector('.md-search-result__meta').textContent.includes('Initializing')",
            timeout=TIMEOUT_MS)
        page.type(".md-search__input", "alpha matting")
        page.wait_for_selector(".md-search-result__item", timeout=TIMEOUT_MS)
        page.click(".md-search-result__item a")
        page.wait_for_load_state()
        assert page.url.startswith("file://") and ".html" in page.url
        assert "Index of" not in page.inner_text("body")
        assert outside == []  # nothing from a CDN
    finally:
        page.close()


def test_screenshot_tool_takes_the_page_and_the_brush(playwright_driver, tiny_model, tmp_path):
    """tools/screenshot_web.py (the docs' screenshots), run here on the tiny model and a still
    camera; in a child process, as this module's Playwright driver is running."""
    import subprocess
    import sys

    tool = Path(__file__).resolve().parent.parent / "tools" / "screenshot_web.py"
    run = subprocess.run([sys.executable, str(tool), "--model", str(tiny_model), "--data", str(tmp_path / "none"),
                          "--out-dir", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    for name in ("screenshot-web.png", "screenshot-brush.png"):
        shot = Image.open(tmp_path / name)
        assert shot.size == (1360, 1000) and len(np.unique(np.asarray(shot.convert("L")))) > 20
