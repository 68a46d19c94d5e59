"""Benchmark the web page's Camera mode: frames/s and round trip on localhost, with a real model.

A 640x480 clip of DAVIS ``cows`` (the first ``--frames`` frames, looping) is Chromium's fake camera
(Debian's chromium, ``--use-file-for-fake-video-capture``, driven by Playwright); the page at
``cleancut serve --model MODEL`` on 127.0.0.1 sends each frame over the WebSocket ``/api/stream``
and draws what comes back, one frame in flight at a time. After ``--warmup`` seconds the page's
own counters are read twice, ``--seconds`` apart: frames/s drawn in between, and the round trips
(frame sent -> result back, as the page measures them) of those frames, p50 / p95. The browser, the
server and the model share the machine's cores, as they would on a laptop serving itself.

    python benchmarks/bench_web_camera.py --seconds 30                   # the default model, cut-out
    python benchmarks/bench_web_camera.py --seconds 30 --mode color      # over a colour

Needs the ``server`` and ``dev`` extras (playwright) and ``apt-get install chromium``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/common.py
from common import davis_frames, free_port, machine, scaled, start_server, stop_server, wait_ready  # noqa: E402

from cleancut.testing import write_y4m  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
SIZE = (640, 480)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cleancut-default")
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    p.add_argument("--mode", choices=("cutout", "mask", "color"), default="cutout",
                   help="what the page asks for (color: over the page's default colour)")
    p.add_argument("--frames", type=int, default=60, help="clip length before it loops (default 60)")
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out" / "web-camera.json")
    args = p.parse_args(argv)
    args.max_queue, args.log_level = 16, "warning"
    from playwright.sync_api import sync_playwright

    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="bench-camera-") as tmp:
        tmp = Path(tmp)
        clip = write_y4m(tmp / "cows.y4m", scaled(davis_frames(args.data, "cows")[:args.frames], SIZE))
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = start_server(args, args.model, port, tmp / "server.log")
        try:
            wait_ready(server, base, tmp / "server.log")
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
                    "--headless", "--no-sandbox", "--disable-gpu", "--use-fake-device-for-media-stream",
                    "--use-fake-ui-for-media-stream", f"--use-file-for-fake-video-capture={clip}"])
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(base + "/")
                page.check(f"input[name=mode][value={args.mode}]")
                page.click("#camera-toggle")
                page.wait_for_function("window.cleancutCamera.stats().frames >= 1", timeout=60_000)
                time.sleep(args.warmup)
                before = page.evaluate("window.cleancutCamera.stats()")
                time.sleep(args.seconds)
                after = page.evaluate("window.cleancutCamera.stats()")
                rtts = page.evaluate("window.cleancutCamera.state.rtts")
                page.click("#camera-toggle")
                browser.close()
        finally:
            stop_server(server)
    frames = after["frames"] - before["frames"]
    window = np.asarray(rtts[-frames:] if frames else [], float)  # the page keeps the last 600
    result = {"model": args.model, "mode": args.mode, "seconds": args.seconds, "frames": frames,
              "fps": frames / args.seconds, "rtt_p50_ms": float(np.percentile(window, 50)),
              "rtt_p95_ms": float(np.percentile(window, 95)), "rtts_scored": int(window.size),
              "dropped": after["dropped"] - before["dropped"], "machine": machine()}
    print(f"\n### Web page camera mode, {SIZE[0]}x{SIZE[1]} fake camera, {args.model}, {args.mode}, "
          f"{args.seconds:g} s on localhost\n")
    print("| frames/s | round trip p50 (ms) | round trip p95 (ms) | dropped by the server |")
    print("|---:|---:|---:|---:|")
    print(f"| {result['fps']:.1f} | {result['rtt_p50_ms']:.0f} | {result['rtt_p95_ms']:.0f} | {result['dropped']} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
