"""Benchmark the web page's Camera against ``cleancut live`` on the same clip, in one run.

A 640x480 clip of DAVIS ``cows`` (the first ``--frames`` frames, looping) is played two ways:

* as Chromium's fake camera (Debian's chromium, ``--use-file-for-fake-video-capture``, driven by
  Playwright) for the page at ``cleancut serve --model MODEL`` on 127.0.0.1. The page sends each
  frame over the WebSocket ``/api/stream`` with ``reply=alpha`` (the server answers with the matte
  alone; the page composites the frame it sent on a canvas), one frame in flight at a time. After
  ``--warmup`` seconds the page's own counters are read twice, ``--seconds`` apart: frames/s drawn
  in between, and the round trips (frame sent -> matte back, as the page measures them) of those
  frames, p50 / p95; also their age (frame captured -> matte back: the page's capture and JPEG
  encoding and its wait for the previous reply included), closer to what ``cleancut live``
  measures, and how often the next frame was not ready when a reply came;
* as a file played at its frame rate by ``cleancut live CLIP -o OUT`` (the same model, the same
  result: a WebM with alpha for cut-out, ``--bg-color`` for colour), from ``--stats-json``:
  frames/s and latency from capture to output, p50 / p95.

The two never run at once; the browser, the server and the model share the machine's cores, as
they would on a laptop serving itself. The target is at least 20 frames/s in Cut-out and in
Colour with a round trip p95 of at most 80 ms; the last lines say whether it was met.

    python benchmarks/bench_web_camera.py                               # cut-out and colour, 30 s each
    python benchmarks/bench_web_camera.py --modes cutout --seconds 10   # a quick look

Needs the ``server``, ``video`` and ``dev`` extras (playwright) and ``apt-get install chromium``.
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
from common import (davis_frames, encode_clip, free_port, machine, run_sampling_memory, scaled,  # noqa: E402
                    start_server, stop_server, wait_ready)

from cleancut.testing import write_y4m  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
SIZE = (640, 480)
RATE = 30
COLOUR = "#00b140"  # the page's green swatch; cleancut live gets the same colour
TARGET_FPS, TARGET_P95_MS = 20.0, 80.0


def page_camera(args, base: str, clip: Path, mode: str) -> dict:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream", f"--use-file-for-fake-video-capture={clip}"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(base + "/")
            page.check(f"input[name=mode][value={mode}]")
            if mode == "color":
                page.click(f".swatch[data-color='{COLOUR}']")
            page.click("#camera-toggle")
            page.wait_for_function("window.cleancutCamera.stats().frames >= 1", timeout=60_000)
            time.sleep(args.warmup)
            before = page.evaluate("window.cleancutCamera.stats()")
            time.sleep(args.seconds)
            after = page.evaluate("window.cleancutCamera.stats()")
            rtts = page.evaluate("window.cleancutCamera.state.rtts")
            ages = page.evaluate("window.cleancutCamera.state.ages")
            error = page.text_content("#camera-error")
            page.click("#camera-toggle")
        finally:
            browser.close()
    if error:
        raise SystemExit(f"the page's camera failed: {error}")
    frames = after["frames"] - before["frames"]
    window = np.asarray(rtts[-frames:] if frames else [np.nan], float)  # the page keeps the last 600
    age = np.asarray(ages[-frames:] if frames else [np.nan], float)
    return {"fps": frames / args.seconds, "p50_ms": float(np.percentile(window, 50)),
            "p95_ms": float(np.percentile(window, 95)), "frames": frames,
            "dropped": after["dropped"] - before["dropped"],
            "age_p50_ms": float(np.percentile(age, 50)), "age_p95_ms": float(np.percentile(age, 95)),
            "late": after["late"] - before["late"]}


def live(args, clip: Path, workdir: Path, mode: str) -> dict:
    stats = workdir / f"live-{mode}.json"
    argv = [sys.executable, "-m", "cleancut", "live", str(clip), "-o", str(workdir / f"live-{mode}.webm"),
            "--model", args.model, "--stats-json", str(stats)]
    if mode == "color":
        argv += ["--bg-color", COLOUR]
    run_sampling_memory(argv)
    s = json.loads(stats.read_text())
    return {"fps": s["fps"], "p50_ms": s["latency_p50_ms"], "p95_ms": s["latency_p95_ms"], "frames": s["frames"],
            "dropped": s["dropped"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cleancut-default")
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    p.add_argument("--modes", nargs="+", choices=("cutout", "color", "mask", "blur"), default=["cutout", "color"])
    p.add_argument("--frames", type=int, default=60, help="clip length before it loops (default 60)")
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out" / "web-camera.json")
    args = p.parse_args(argv)
    args.max_queue, args.log_level = 16, "warning"

    print(f"machine: {machine()}")
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-camera-") as tmp:
        tmp = Path(tmp)
        frames = davis_frames(args.data, "cows")[:args.frames]
        camera = write_y4m(tmp / "cows.y4m", scaled(frames, SIZE))
        count = int((args.seconds + args.warmup) * RATE)
        clip = encode_clip(tmp / "cows.mp4", scaled(frames, SIZE, count), SIZE, RATE, crf=20, audio=False,
                           preset="veryfast")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = start_server(args, args.model, port, tmp / "server.log")
        try:
            wait_ready(server, base, tmp / "server.log")
            for mode in args.modes:
                rows[f"page camera, {mode}"] = page_camera(args, base, camera, mode)
        finally:
            stop_server(server)
        for mode in args.modes:
            if mode in ("cutout", "color"):
                rows[f"cleancut live, {mode}"] = live(args, clip, tmp, mode)
    print(f"\n### Web page Camera vs cleancut live, {SIZE[0]}x{SIZE[1]} DAVIS cows, {args.model}, "
          f"{args.seconds:g} s each on localhost\n")
    print("| run | frames/s | p50 (ms) | p95 (ms) | dropped |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['fps']:.1f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['dropped']} |")
    print("\n(page: round trip, frame sent -> matte back; cleancut live: capture -> output)")
    for name, r in rows.items():
        if "age_p50_ms" in r:
            print(f"{name}: frame captured -> matte back p50 {r['age_p50_ms']:.0f} ms / p95 {r['age_p95_ms']:.0f} ms; "
                  f"next frame not ready at the reply {r['late']} of {r['frames']} times")
    for name, r in rows.items():
        if name.startswith("page") and name.split(", ")[1] in ("cutout", "color"):
            met = r["fps"] >= TARGET_FPS and r["p95_ms"] <= TARGET_P95_MS
            print(f"target ({TARGET_FPS:g} frames/s, p95 <= {TARGET_P95_MS:g} ms) for {name}: "
                  f"{'met' if met else 'NOT met'}")
    print(f"machine after: {machine()}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": args.model, "seconds": args.seconds, "rows": rows,
                                    "machine": machine()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
