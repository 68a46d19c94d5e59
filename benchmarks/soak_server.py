"""Soak and abuse test of ``cleancut serve``: many requests, hostile clients, and the figures
that show the server holds (loopback only; bounded in count and time).

Starts ``python -m cleancut serve`` on 127.0.0.1 (a free port, its own temporary folder) and
sends ``--requests`` requests from ``--concurrency`` clients over raw sockets (one connection
each, ``Connection: close``), drawn at random (``--seed``) from this mix:

==================  ======  ======================================================================
kind                 share  what is sent (expected answer)
==================  ======  ======================================================================
good                   44%  photos of 4 sizes (0.02-2 MP) as JPEG, PNG, WebP, GIF, BMP or TIFF,
                            multipart or raw, with valid options (200)
slow                    2%  a good photo sent in 8 pieces over ~1 s, or its head line by line (200)
truncated               5%  a good photo cut short (400)
bit-flipped             4%  a good photo with random bytes changed (200, 400, 413 or 415)
bomb                    3%  a 60-byte PNG header claiming 10 gigapixels, or a 25-MP black PNG of
                            ~30 kB (413, read from the header; nothing decoded)
not an image            4%  text, HTML, PDF, ZIP, ELF, random bytes, an empty body (415 or 400)
over the cap            4%  a body declared over ``--max-upload-mb`` (413 before reading it), or a
                            chunked one that keeps coming (413 once past the cap, or reset)
disconnect              4%  the client closes half-way through the body (no answer to read)
hostile file name       8%  a good photo named with separators, quotes, line breaks, 5,000
                            characters ... (200 with a safe ``Content-Disposition``, or 400)
bad options            14%  unknown, invalid, repeated or operator-only options, a path for
                            ``bg_image`` (422)
bad HTTP                8%  a 20-kB header (431), ``/static/../`` paths (404), wrong method (405)
==================  ======  ======================================================================

A warm-up first sends every good photo with every set of good options, then ``--warmup``
requests of the same mix, so that memory, the worker threads' OpenMP teams (alpha matting) and
Starlette's helper threads have reached their steady state before the figures start.

Checks (each a line of the report; the exit status is 1 if one fails): no response of 500 (nor
any 5xx but 503); every 503 carries ``Retry-After``; every answer is one the kind allows, every
error is JSON, every file name safe; the server's resident memory at the end within
``--rss-tolerance`` of its value after the warm-up; its open file descriptors and threads the
same after the run as after the warm-up (counted when quiet, see ``settle``, and counted again
after another quiet period, twice at most, while they differ); nothing left in
its temporary folder, while it runs (once idle) and after it stops (ONNX Runtime's own ``.ses``
file, written when the model is loaded, is there from the start and not counted). Also reported:
RSS at start, middle and end, p50/p95/p99 of the good requests, statuses per kind.

    python benchmarks/soak_server.py                          # 10,000 requests, cleancut-default
    python benchmarks/soak_server.py --tiny --requests 500    # the short version the tests run
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import select
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import (build_tiny_model, free_port, memory_kib, start_server, stop_server,  # noqa: E402
                          synthetic_photo, wait_ready)
from cleancut.testing import content_type as form_type, form_data  # noqa: E402

SAFE_DISPOSITION = re.compile(rb'inline; filename="[A-Za-z0-9._-]{1,100}"')
MIX = {"good": 44, "slow": 2, "truncated": 5, "bit-flipped": 4, "bomb": 3, "not an image": 4,
       "over the cap": 4, "disconnect": 4, "hostile file name": 8, "bad options": 14, "bad HTTP": 8}
SIZES = "200x150,640x480,1024x768,1600x1200"
FORMATS = ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"]
GOOD_OPTIONS = [{}, {"mode": "mask"}, {"mode": "mask", "threshold": "0.5"}, {"format": "webp", "quality": "70"},
                {"format": "jpg", "mode": "color", "bg_color": "white"}, {"mode": "blur", "blur_radius": "8"},
                {"crop": "true", "crop_margin": "10"}, {"feather": "1.5", "remove_islands": "0.01"},
                {"alpha_matting": "true", "matting_max_side": "256"}]
BAD_OPTIONS = [{"quality": "0"}, {"mode": "sepia"}, {"mdoe": "mask"}, {"bg_color": "hsv(0,101%,100%)"},
               {"threshold": "1e400"}, {"crop": "maybe"}, {"model": "/etc/passwd"}, {"max_pixels": "10000000000"},
               {"threads": "512"}, {"providers": "CUDAExecutionProvider"}, {"bg_image": "/etc/hosts"},
               {"mode": "image"}, {"mode": "mask", "bg_color": "red"}, {"quality": "9" * 5000},
               {"x" * 3000: "1"}]
HOSTILE_NAMES = [b"../../../etc/passwd", b"..\\..\\windows\\win.ini", b'quo"te.png', b"new\nline.png",
                 b"carriage\r\nX-Injected: 1.png", b"semi;colon.png", b"n" * 5000 + b".png", b"\xff\xfe\x00.png",
                 "日本語.png".encode(), b"%2e%2e%2f%2e%2e%2fetc.png", b"", b".", b"/abs/path.jpg", b"\x00"]


@dataclass
class Spec:
    """One planned request."""

    kind: str
    head: bytes  # request line and headers, up to the blank line
    body: bytes = b""
    allowed: frozenset = frozenset()  # statuses the kind may get (503 is always allowed)
    plan: str = "send"  # send | slow | slow-head | disconnect | stream | declared
    json_errors: bool = True  # errors come from the app (uvicorn's own 400s are plain text)


@dataclass
class Outcome:
    spec: Spec
    status: int | None = None
    headers: dict = field(default_factory=dict)
    body: bytes = b""
    seconds: float = 0.0
    note: str = ""


# ---------------------------------------------------------------- what to send


def encode(img, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "GIF":
        img = img.convert("P", palette=1, colors=128)  # adaptive palette
    img.save(buf, fmt, **({"quality": 90} if fmt in ("JPEG", "WEBP") else {}))
    return buf.getvalue()


def photos(limit_bytes: int, sizes: str = SIZES) -> list[tuple[str, bytes]]:
    """(name, bytes) of the good photos: every size as JPEG and WebP, up to 640 x 480 in every
    format."""
    from PIL import Image

    out = []
    for i, (w, h) in enumerate(tuple(int(v) for v in size.split("x")) for size in sizes.split(",")):
        img = Image.open(io.BytesIO(synthetic_photo(w, h, seed=i))).convert("RGB")
        for fmt in FORMATS if w * h <= 640 * 480 else ["JPEG", "WEBP"]:
            data = encode(img, fmt)
            if len(data) < limit_bytes:
                out.append((f"photo-{w}x{h}.{fmt.lower()}", data))
    return out


def request(method: str, target: str, body: bytes = b"", headers: dict | None = None, length: bool = True) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    for key, value in (headers or {}).items():
        lines.append(f"{key}: {value}")
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def query(options: dict) -> str:
    from urllib.parse import urlencode

    return "/api/remove" + ("?" + urlencode(options) if options else "")


def upload(kind: str, data: bytes, options: dict, rng: random.Random, filename: bytes | str = "photo",
           allowed=frozenset({200}), plan: str = "send", multipart: bool | None = None) -> Spec:
    """A POST of ``data`` as multipart (field ``file``) or as the raw body."""
    if multipart is None:
        multipart = rng.random() < 0.7
    if multipart:
        body = form_data([("file", filename, data)])
        return Spec(kind, request("POST", query(options), body, {"Content-Type": form_type()}), body,
                    frozenset(allowed), plan)
    return Spec(kind, request("POST", query(options), data, {"Content-Type": "application/octet-stream"}), data,
                frozenset(allowed), plan)


def bombs() -> list[bytes]:
    import struct
    import zlib

    from PIL import Image

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    header_only = (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
                   + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + b"\0\0\0\0IEND\xaeB`\x82")
    black = io.BytesIO()
    Image.new("1", (5000, 5000)).save(black, "PNG", optimize=True)  # 25 MP of black in ~30 kB
    return [header_only, black.getvalue()]


NOT_IMAGES = [b"", b"hello, this is plain text and no picture at all", b"<!DOCTYPE html><html><body>hi</body></html>",
              b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj", b"PK\x03\x04" + b"\0" * 60,
              b"\x7fELF\x02\x01\x01" + b"\0" * 57, bytes(range(256)) * 8, b"GIF89a"]


def plan_requests(n: int, seed: int, cap_bytes: int, good: list[tuple[str, bytes]]) -> list[Spec]:
    """The ``n`` requests of the run, drawn from MIX with a seeded generator (reproducible)."""
    rng = random.Random(seed)
    bomb_bodies = bombs()
    kinds = rng.choices(list(MIX), weights=list(MIX.values()), k=n)
    specs = []
    for kind in kinds:
        name, data = rng.choice(good)
        options = dict(rng.choice(GOOD_OPTIONS))
        if kind == "good":
            specs.append(upload(kind, data, options, rng, name))
        elif kind == "slow":
            specs.append(upload(kind, data, options, rng, name, plan=rng.choice(["slow", "slow-head"])))
        elif kind == "truncated":
            cut = rng.randint(16, max(17, len(data) // 2))
            specs.append(upload(kind, data[:cut], options, rng, name, allowed={400}))
        elif kind == "bit-flipped":
            flipped = bytearray(data)
            for _ in range(rng.randint(1, 20)):
                flipped[rng.randrange(len(flipped))] = rng.randrange(256)
            specs.append(upload(kind, bytes(flipped), options, rng, name, allowed={200, 400, 413, 415}))
        elif kind == "bomb":
            specs.append(upload(kind, rng.choice(bomb_bodies), {}, rng, "bomb.png", allowed={413}))
        elif kind == "not an image":
            blob = rng.choice(NOT_IMAGES + [rng.randbytes(rng.randint(1, 4000))])
            specs.append(upload(kind, blob, {}, rng, "x.jpg", allowed={400, 415}))
        elif kind == "over the cap":
            if rng.random() < 0.5:  # declared: refused on Content-Length, nothing read
                head = request("POST", "/api/remove", b"x" * (cap_bytes + 1), {"Content-Type": "image/jpeg"})
                specs.append(Spec(kind, head, b"", frozenset({413}), "declared"))
            else:  # chunked, no length: refused once past the cap
                head = request("POST", "/api/remove", headers={"Content-Type": "image/jpeg", "Transfer-Encoding": "chunked"},
                               length=False)
                specs.append(Spec(kind, head, data, frozenset({413}), "stream"))
        elif kind == "disconnect":
            specs.append(upload(kind, data, options, rng, name, allowed=set(), plan="disconnect"))
        elif kind == "hostile file name":
            specs.append(upload(kind, data, options, rng, rng.choice(HOSTILE_NAMES), allowed={200, 400}, multipart=True))
        elif kind == "bad options":
            bad = dict(rng.choice(BAD_OPTIONS))
            specs.append(upload(kind, data, {**options, **bad} if rng.random() < 0.5 else bad, rng, name,
                                allowed={422}, multipart=rng.random() < 0.5))
        else:  # bad HTTP
            choice = rng.randrange(3)
            if choice == 0:
                specs.append(Spec(kind, request("GET", "/healthz", headers={"X-Pad": "a" * 20_000}), b"", frozenset({431})))
            elif choice == 1:
                target = rng.choice(["/static/../../../../etc/passwd", "/static/%2e%2e/%2e%2e/etc/passwd",
                                     "/docs-static/../server/app.py", "/static/..%2fapp.py"])
                specs.append(Spec(kind, request("GET", target), b"", frozenset({404, 400}), json_errors=False))
            else:
                specs.append(Spec(kind, request(rng.choice(["GET", "PUT", "DELETE"]), "/api/remove"), b"", frozenset({405})))
    return specs


# ---------------------------------------------------------------- sending


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(answer: bytes) -> tuple[int | None, dict, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    try:
        status = int(lines[0].split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None, {}, answer
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(b":")
        headers[key.strip().lower().decode("latin-1")] = value.strip()
    return status, headers, body


def exchange(port: int, spec: Spec, timeout: float) -> Outcome:
    out = Outcome(spec)
    started = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            answer = _send(sock, spec)
    except (ConnectionError, socket.timeout, OSError) as exc:
        out.note = f"{type(exc).__name__}"
        out.seconds = time.perf_counter() - started
        return out
    out.seconds = time.perf_counter() - started
    if answer is None:
        out.note = "disconnected"
        return out
    out.status, out.headers, out.body = _parse(answer)
    if out.status is None:
        out.note = "reset" if not answer else "unparsable"
    return out


def _answered(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def _send_body(sock: socket.socket, pieces, delay: float = 0.0) -> None:
    """Send the body piece by piece, stopping as soon as the server has answered: it may refuse
    a request (503, 413) without reading its body, and a client that keeps writing then gets a
    reset that can destroy the answer before it is read."""
    for piece in pieces:
        if delay:
            time.sleep(delay)
        if _answered(sock):
            return
        try:
            sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            return


def _pieces(body: bytes, size: int = 65536) -> list[bytes]:
    return [body[i:i + size] for i in range(0, len(body), size)]


def _send(sock: socket.socket, spec: Spec) -> bytes | None:
    """Send ``spec`` as planned; the answer, or None where the client itself hung up."""
    if spec.plan == "disconnect":
        sock.sendall(spec.head + spec.body[: len(spec.body) // 2])
        sock.shutdown(socket.SHUT_RDWR)
        return None
    if spec.plan == "slow-head":
        for line in spec.head.split(b"\r\n")[:-1]:
            sock.sendall(line + b"\r\n")
            time.sleep(0.1)
    else:
        sock.sendall(spec.head)
    if spec.plan == "slow":
        _send_body(sock, [p.tobytes() for p in np.array_split(np.frombuffer(spec.body, np.uint8), 8)], delay=0.12)
    elif spec.plan == "stream":  # chunks until the server answers (it must, once past the cap)
        chunk = spec.body or b"\0" * 65536
        _send_body(sock, (b"%x\r\n" % len(chunk) + chunk + b"\r\n" for _ in range(64 * 1024 * 1024 // len(chunk))))
    else:
        _send_body(sock, _pieces(spec.body))
    return _read_all(sock)


# ---------------------------------------------------------------- the server's side


def process_figures(pid: int) -> dict:
    figures = {"rss_kib": memory_kib(pid)["VmRSS"], "fds": len(os.listdir(f"/proc/{pid}/fd"))}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("Threads:"):
                figures["threads"] = int(line.split()[1])
    names = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/comm") as fh:
                names.append(fh.read().strip())
        except OSError:  # the thread ended meanwhile
            pass
    figures["thread_names"] = sorted(names)
    return figures


def wait_idle(base_port: int, seconds: float = 30.0) -> dict:
    """Poll /healthz until nothing is admitted; returns its last body."""
    deadline = time.monotonic() + seconds
    body = {}
    while time.monotonic() < deadline:
        answer = exchange(base_port, Spec("health", request("GET", "/healthz")), 10)
        if answer.status == 200:
            body = json.loads(answer.body)
            if body["admitted"] == 0 and body["running"] == 0:
                return body
        time.sleep(0.2)
    return body


def settle(pid: int, port: int, seconds: float) -> dict:
    """Idle figures once the server is quiet: wait for idle, then ``seconds`` more (closed
    connections are gone), then one static-file request: Starlette runs file look-ups in
    anyio's helper threads, which drops the helpers idle for over 10 s when it is next used, so
    the count is taken with the same single helper thread each time."""
    wait_idle(port)
    time.sleep(seconds)
    exchange(port, Spec("static", request("GET", "/static/app.js")), 10)
    time.sleep(0.5)
    return process_figures(pid)


def settle_again(pid: int, port: int, seconds: float, before: dict, tries: int = 3) -> tuple[dict, int]:
    """:func:`settle`, then up to ``tries - 1`` more quiet periods while the fds or threads differ
    from ``before``: a connection the server has yet to close or a helper thread still winding
    down shows once, a leak stays. Returns the last figures and the number of recounts."""
    figures = settle(pid, port, seconds)
    recounts = 0
    while recounts < tries - 1 and (figures["fds"], figures["threads"]) != (before["fds"], before["threads"]):
        recounts += 1
        figures = settle(pid, port, seconds)
    return figures, recounts


# ---------------------------------------------------------------- the run


def run_clients(port: int, specs: list[Spec], concurrency: int, timeout: float, deadline: float, pid: int,
                samples: list) -> list[Outcome]:
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    queue = iter(specs)
    stop = threading.Event()

    def client() -> None:
        while time.monotonic() < deadline:
            with lock:
                spec = next(queue, None)
            if spec is None:
                return
            outcome = exchange(port, spec, timeout)
            with lock:
                outcomes.append(outcome)

    def monitor() -> None:
        while not stop.wait(0.5):
            with lock:
                count = len(outcomes)
            try:
                samples.append((count, process_figures(pid)["rss_kib"]))
            except (FileNotFoundError, ProcessLookupError):
                return

    watcher = threading.Thread(target=monitor, daemon=True)
    watcher.start()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watcher.join()
    return outcomes


def judge(outcome: Outcome) -> str | None:
    """What is wrong with one answer, or None."""
    spec, status = outcome.spec, outcome.status
    if spec.plan == "disconnect":
        return None
    if status is None:
        if spec.plan == "stream" and outcome.note in ("reset", "ConnectionResetError", "BrokenPipeError"):
            return None  # refused mid-stream: the reset may beat the 413 to the client
        return f"no answer ({outcome.note})"
    if status >= 500 and status != 503:
        return f"status {status}: {outcome.body[:200]!r}"
    if status == 503:
        return None if outcome.headers.get("retry-after") else "503 without Retry-After"
    if status not in spec.allowed:
        return f"status {status}, expected {sorted(spec.allowed)}: {outcome.body[:200]!r}"
    if status == 200 and spec.kind != "bad HTTP":
        disposition = outcome.headers.get("content-disposition", b"")
        if not SAFE_DISPOSITION.fullmatch(disposition):
            return f"unsafe Content-Disposition {disposition!r}"
    if status >= 400 and spec.json_errors:
        try:
            body = json.loads(outcome.body)
            assert set(body) == {"error", "detail"}
        except (ValueError, AssertionError):
            return f"error body is not the API's JSON: {outcome.body[:200]!r}"
        if b"Traceback" in outcome.body:
            return "error body shows a traceback"
    return None


def percentiles(values: list[float]) -> dict:
    if not values:
        return {}
    ms = np.asarray(values) * 1000.0
    return {f"p{q}_ms": float(np.percentile(ms, q)) for q in (50, 95, 99)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="cleancut-default", help="model to serve (default: cleancut-default)")
    parser.add_argument("--tiny", action="store_true", help="serve the tiny test model (cleancut.testing) instead")
    parser.add_argument("--requests", type=int, default=10_000, help="requests to send (default: 10000)")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent clients (default: 16)")
    parser.add_argument("--warmup", type=int, default=300,
                        help="requests of the same mix (another seed) sent before the figures start, after every "
                             "photo with every set of good options once, so that memory and the helper threads "
                             "have peaked (default: 300)")
    parser.add_argument("--sizes", default=SIZES, help=f"photo sizes, WxH comma-separated (default: {SIZES})")
    parser.add_argument("--workers", type=int, default=2, help="server --workers (default: 2)")
    parser.add_argument("--max-queue", type=int, default=16, help="server --max-queue (default: 16)")
    parser.add_argument("--max-upload-mb", type=float, default=8.0, help="server --max-upload-mb (default: 8)")
    parser.add_argument("--max-pixels", type=int, default=16_000_000, help="server --max-pixels (default: 16 MP)")
    parser.add_argument("--max-seconds", type=float, default=3600.0,
                        help="stop sending new requests after this long (default: 3600)")
    parser.add_argument("--timeout", type=float, default=120.0, help="client socket timeout in seconds (default: 120)")
    parser.add_argument("--rss-tolerance", type=float, default=0.10,
                        help="allowed growth of RSS from after the warm-up to the end (default: 0.10)")
    parser.add_argument("--settle", type=float, default=12.0,
                        help="seconds of quiet before counting fds and threads (default: 12: keep-alive "
                             "connections close after 5 s, idle anyio worker threads end after 10 s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the request mix (default: 0)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    args.threads, args.log_level = None, "warning"  # for bench_server.start_server
    if args.requests < 1 or args.concurrency < 1:
        parser.error("--requests and --concurrency must be >= 1")

    workdir = Path(tempfile.mkdtemp(prefix="soak-server-"))
    server_tmp = workdir / "server-tmp"
    server_tmp.mkdir()
    model = str(build_tiny_model(workdir / "model", 320)) if args.tiny else args.model
    cap = int(args.max_upload_mb * 1024 * 1024)
    good = photos(cap, args.sizes)
    specs = plan_requests(args.requests, args.seed, cap, good)
    # every good photo with every option set, one at a time (so no 503 skips a code path and its
    # lazily started threads or caches), then the mix at full concurrency
    warm_each = [upload("good", data, options, random.Random(i), name)
                 for i, ((name, data), options) in enumerate((g, o) for o in GOOD_OPTIONS for g in good)]
    warm = plan_requests(args.warmup, args.seed + 1, cap, good)
    port = free_port()
    log_path = workdir / "server.log"
    env = {**os.environ, "TMPDIR": str(server_tmp)}
    extra = ("--max-upload-mb", str(args.max_upload_mb), "--max-pixels", str(args.max_pixels))
    started = time.monotonic()
    proc = start_server(args, model, port, log_path, extra=extra, env=env)
    samples: list = []
    report: dict = {"model": "tiny 320x320 (cleancut.testing)" if args.tiny else model,
                    "requests_planned": args.requests, "concurrency": args.concurrency, "workers": args.workers,
                    "max_queue": args.max_queue, "max_upload_mb": args.max_upload_mb, "max_pixels": args.max_pixels,
                    "seed": args.seed, "cpus": os.cpu_count()}
    try:
        wait_ready(proc, f"http://127.0.0.1:{port}", log_path, timeout=600)
        report["startup_s"] = time.monotonic() - started
        at_start = {p for p in server_tmp.rglob("*") if p.is_file()}  # ONNX Runtime's own .ses file
        run_clients(port, warm_each, 1, args.timeout, time.monotonic() + 1800, proc.pid, [])
        run_clients(port, warm, args.concurrency, args.timeout, time.monotonic() + 1800, proc.pid, [])
        before = settle(proc.pid, port, args.settle)
        run_started = time.monotonic()
        outcomes = run_clients(port, specs, args.concurrency, args.timeout, run_started + args.max_seconds,
                               proc.pid, samples)
        report["wall_s"] = time.monotonic() - run_started
        after, report["recounts"] = settle_again(proc.pid, port, args.settle, before)
        health = wait_idle(port)
        serving_tmp = [p for p in server_tmp.rglob("*") if p.is_file() and p not in at_start]
    finally:
        stop_server(proc)
    left_after_exit = [str(p.relative_to(server_tmp)) for p in server_tmp.rglob("*") if p not in at_start]
    server_log = log_path.read_text(errors="replace")
    shutil.rmtree(workdir, ignore_errors=True)

    problems: dict[str, list[str]] = defaultdict(list)
    statuses: dict[str, Counter] = defaultdict(Counter)
    good_latency = []
    for outcome in outcomes:
        key = outcome.status if outcome.status is not None else outcome.note
        statuses[outcome.spec.kind][str(key)] += 1
        problem = judge(outcome)
        if problem:
            problems[outcome.spec.kind].append(problem)
        if outcome.spec.kind == "good" and outcome.status == 200:
            good_latency.append(outcome.seconds)
    all_statuses = Counter()
    for counter in statuses.values():
        all_statuses.update(counter)
    with_retry = sum(1 for o in outcomes if o.status == 503 and o.headers.get("retry-after"))
    middle = samples[len(samples) // 2][1] if samples else after["rss_kib"]
    rss_growth = (after["rss_kib"] - before["rss_kib"]) / before["rss_kib"]
    checks = {
        "no 500 (nor any 5xx but 503)": not any(o.status and o.status >= 500 and o.status != 503 for o in outcomes),
        "every 503 has Retry-After": with_retry == all_statuses.get("503", 0),
        "every answer allowed for its kind, errors JSON, file names safe": not problems,
        f"RSS at the end within {args.rss_tolerance:.0%} of after the warm-up": rss_growth <= args.rss_tolerance,
        "open file descriptors: same after as before": after["fds"] == before["fds"],
        "threads: same after as before": after["threads"] == before["threads"],
        "idle server: nothing admitted, running or queued": health.get("admitted") == 0 and health.get("running") == 0
        and health.get("queued") == 0,
        "temporary folder empty while serving (idle)": not serving_tmp,
        "temporary folder empty after exit": not left_after_exit,
        "no traceback in the server log": "Traceback" not in server_log,
        "every planned request sent": len(outcomes) == args.requests,
    }
    report.update({
        "requests_sent": len(outcomes), "statuses": dict(sorted(all_statuses.items())),
        "statuses_by_kind": {k: dict(sorted(v.items())) for k, v in sorted(statuses.items())},
        "good_200": len(good_latency), **percentiles(good_latency),
        "rss_mib": {"after_warmup": before["rss_kib"] / 1024, "middle": middle / 1024, "end": after["rss_kib"] / 1024},
        "rss_growth": rss_growth, "rss_samples_mib": [(n, kib / 1024) for n, kib in samples[:: max(1, len(samples) // 20)]],
        "fds": {"before": before["fds"], "after": after["fds"]},
        "threads": {"before": before["threads"], "after": after["threads"],
                    "names_before": before["thread_names"], "names_after": after["thread_names"]},
        "temporary_files_left": [str(p) for p in serving_tmp] + left_after_exit, "warmup_requests": len(warm),
        "startup_s": report.get("startup_s"),
        "temporary_files_at_start": sorted(str(p.relative_to(server_tmp)) for p in at_start),
        "problems": {k: v[:5] for k, v in problems.items()}, "problem_count": sum(map(len, problems.values())),
        "checks": checks,
    })
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0 if all(checks.values()) else 1


def print_report(r: dict) -> None:
    print(f"cleancut serve soak: {r['model']}, {r['requests_sent']}/{r['requests_planned']} requests from "
          f"{r['concurrency']} clients in {r.get('wall_s', 0):.0f} s; --workers {r['workers']} --max-queue "
          f"{r['max_queue']} --max-upload-mb {r['max_upload_mb']:g} --max-pixels {r['max_pixels']}; {r['cpus']} CPUs")
    print(f"  statuses     {r['statuses']}")
    for kind, counts in r["statuses_by_kind"].items():
        print(f"    {kind:<18} {counts}")
    if "p50_ms" in r:
        print(f"  good (200)   {r['good_200']}: p50 {r['p50_ms']:.0f} ms, p95 {r['p95_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms")
    m = r["rss_mib"]
    print(f"  server RSS   after warm-up {m['after_warmup']:.0f} MiB, middle {m['middle']:.0f} MiB, end {m['end']:.0f} MiB "
          f"({r['rss_growth']:+.1%})")
    print(f"  fds          {r['fds']['before']} before, {r['fds']['after']} after; threads {r['threads']['before']} "
          f"before, {r['threads']['after']} after; counted again {r.get('recounts', 0)} time(s)")
    for kind, examples in r["problems"].items():
        print(f"  PROBLEM {kind}: {examples[0]}")
    for name, ok in r["checks"].items():
        print(f"  [{'ok' if ok else 'FAILED'}] {name}")


if __name__ == "__main__":
    raise SystemExit(main())
