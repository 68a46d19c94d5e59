"""The web page in a real browser: Debian's chromium driven by Playwright, against the real server
(uvicorn on a free 127.0.0.1 port, the tiny test model).

Skipped only when chromium (/usr/bin/chromium: ``apt-get install -y chromium``) or the Python
package playwright (``pip install playwright``; no browser download is needed) is missing.
Set ``CLEANCUT_UPDATE_SCREENSHOT=1`` to refresh docs/screenshot-web.png (written anyway when it
does not exist yet).
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import socket
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from cleancut.testing import write_y4m

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
DOCS_SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "screenshot-web.png"
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
    pytest.importorskip("fastapi", reason="the server extra (fastapi) is not installed")
    import uvicorn

    from cleancut.server import ServerSettings, create_app

    app = create_app(ServerSettings.from_values(model=str(tiny_model), workers=2))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


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


def fetch_image(page, selector: str) -> Image.Image:
    """The image an <img> shows, fetched inside the page (works for blob: URLs)."""
    b64 = page.evaluate(
        """async (selector) => {
            const img = document.querySelector(selector);
            const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
            let text = "";
            for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
            return btoa(text);
        }""", selector)
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def wait_done(page, count: int) -> None:
    page.wait_for_function(
        "(n) => document.querySelectorAll('.card[data-status=done]').length === n && "
        "!document.querySelector('.card[data-status=waiting], .card[data-status=working]')",
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

        shot = tmp_path / "web.png"
        page.screenshot(path=str(shot), full_page=True)
        assert Image.open(shot).size[0] == 1280
        if os.environ.get("CLEANCUT_UPDATE_SCREENSHOT") == "1" or not DOCS_SCREENSHOT.exists():
            DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, DOCS_SCREENSHOT)
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


def test_camera_frames_come_back_cut_out(camera_browser, server_url, tmp_path):
    """The fake camera's frames travel to the server and back; a returned mask matches what
    POST /api/remove gives for the same frame; frames/s and round trips are measured."""
    import httpx

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
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "PNG")
    reference = np.asarray(Image.open(io.BytesIO(httpx.post(server_url + "/api/remove", params={"mode": "mask"},
                                                            content=buf.getvalue(), timeout=30).content)))
    assert mask.shape == reference.shape == (240, 320)
    a, b = mask > 127, reference > 127
    iou = float((a & b).sum() / max(1, (a | b).sum()))
    print(f"\ncamera over WebSocket: {stats['frames']} frames, {stats['fps']:.1f} frames/s, round trip "
          f"p50 {stats['rtt_p50_ms']:.0f} ms / p95 {stats['rtt_p95_ms']:.0f} ms, {stats['dropped']} dropped; "
          f"mask IoU vs /api/remove {iou:.4f}")
    # the camera frame went through YUV 4:2:0 and JPEG on its way: the edges move by a pixel at most
    assert iou >= 0.98
    assert stats["fps"] > 1 and stats["rtt_p50_ms"] > 0
