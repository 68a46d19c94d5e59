"""Take the documentation's screenshots of the web page (docs/serving.md shows them):

* ``screenshot-web.png``: the page with the sample photos cut out (one result's before/after
  slider half-way) and the Camera panel running on a clip played as Chromium's fake camera;
* ``screenshot-brush.png``: the large view of a result while the brush erases part of the mask.

The page is served by this checkout (``cleancut.server.create_app`` under uvicorn on a free
127.0.0.1 port, stopped at the end) with ``--model`` (the bundled default by default), and driven
by Debian's chromium through Playwright. The camera plays ``--video`` frames of DAVIS-2016 from
``--data`` (a person: ``dance-twirl``) when they are there, else the first sample photo, still.

    python tools/screenshot_web.py                      # docs/screenshot-web.png, docs/screenshot-brush.png
    python tools/screenshot_web.py --out-dir /tmp/shots --model path/to/model.onnx
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CAMERA_SIZE = (640, 360)
TIMEOUT_MS = 120_000


class Server:
    """The app of this checkout under uvicorn, in a thread, on a free loopback port."""

    def __init__(self, model: str):
        import uvicorn

        from cleancut.server import ServerSettings, create_app

        app = create_app(ServerSettings.from_values(model=model, workers=2))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(60)


def camera_clip(folder: Path, data: Path, video: str, photos: list[Path]) -> Path:
    """A Y4M clip for the fake camera: DAVIS frames, or the first photo repeated."""
    from cleancut.testing import write_y4m

    frames = sorted((data / "davis16" / "im").glob(f"{video}_*.jpg"))[:60]
    sources = frames or photos[:1] * 30

    def fitted(path: Path) -> np.ndarray:
        with Image.open(path) as im:
            im = im.convert("RGB")
            k = max(CAMERA_SIZE[0] / im.width, CAMERA_SIZE[1] / im.height)
            im = im.resize((round(im.width * k), round(im.height * k)), Image.BICUBIC)
            left, top = (im.width - CAMERA_SIZE[0]) // 2, (im.height - CAMERA_SIZE[1]) // 2
            return np.asarray(im.crop((left, top, left + CAMERA_SIZE[0], top + CAMERA_SIZE[1])))

    return write_y4m(folder / "camera.y4m", [fitted(p) for p in sources])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="cleancut-default")
    p.add_argument("--photos", type=Path, nargs="+", default=sorted((ROOT / "samples").glob("*.jpg")))
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--video", default="dance-twirl", help="DAVIS-2016 sequence the fake camera plays")
    p.add_argument("--out-dir", type=Path, default=ROOT / "docs")
    args = p.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"Debian's chromium is missing at {CHROMIUM} (apt-get install -y chromium)", file=sys.stderr)
        return 1
    if not args.photos:
        print("no photos to show (--photos)", file=sys.stderr)
        return 1
    from playwright.sync_api import sync_playwright

    args.out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="screenshots-") as tmp, Server(args.model) as base, \
            sync_playwright() as pw:
        clip = camera_clip(Path(tmp), args.data, args.video, args.photos)
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream", f"--use-file-for-fake-video-capture={clip}", "--hide-scrollbars"])
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 1000}, device_scale_factor=1)
            page.goto(base + "/")
            page.set_input_files("#files", [str(p) for p in args.photos])
            page.wait_for_function(
                "(n) => document.querySelectorAll('.card[data-status=done]').length === n", arg=len(args.photos),
                timeout=TIMEOUT_MS)
            page.click("#camera-toggle")
            page.wait_for_function("window.cleancutCamera.stats().frames >= 20", timeout=TIMEOUT_MS)
            page.wait_for_function("document.querySelector('#camera-stats').textContent !== ''", timeout=TIMEOUT_MS)
            web = args.out_dir / "screenshot-web.png"
            page.screenshot(path=str(web), full_page=False)
            page.click("#camera-toggle")

            page.click(".card .open")
            page.wait_for_selector("#viewer[open]", timeout=TIMEOUT_MS)
            page.check("#viewer input[name=tool][value=erase]")
            page.wait_for_selector("#viewer-edit:not([hidden])", timeout=TIMEOUT_MS)
            box = page.query_selector("#viewer-edit").bounding_box()
            x, y = box["x"] + box["width"] * 0.08, box["y"] + box["height"] * 0.55
            page.mouse.move(x, y)
            page.mouse.down()
            page.mouse.move(x + box["width"] * 0.25, y - box["height"] * 0.1, steps=20)
            page.mouse.up()
            brush = args.out_dir / "screenshot-brush.png"
            page.screenshot(path=str(brush))
            page.click("#viewer-done")
        finally:
            browser.close()
    print(f"wrote {web} and {brush}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
