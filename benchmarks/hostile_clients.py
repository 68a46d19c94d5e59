"""Hostile clients against ``cleancut serve``, surface by surface, with the figures that show the
server holds (loopback only; every round bounded in count and time; the servers it starts are
stopped when it ends, whatever happens).

Rounds (``--rounds``, default all):

=============  ==========================================================================
photo soak     ``soak_server.py`` (its own server, no key): the seeded mix of good photos and
               hostile requests (truncated, bit-flipped, bombs, non-images, oversized,
               disconnects, hostile names, bad options, bad HTTP)
http           against a server with ``--api-key``: forged ``Host`` (DNS rebinding), missing and
               wrong keys (header and query), ``/docs?api_key=`` and the schema and assets it
               loads, ``Content-Length: abc``, a 5,000-character job id and path, a 10-gigapixel
               PNG header
slow           ``--slow-clients`` connections that stall or trickle (a body stalled after 3
               bytes of a declared MB, a body at 10 bytes every 0.5 s, a head sent line by line
               every 0.7 s, a stalled clip upload), each reconnecting when cut, together with
               ``--streams`` WebSocket streams sending frames, while one client sends valid
               photos one after the other (each must be answered 200) and one valid clip job
               is started
websocket      every refusal and cap of ``/api/stream``: no key, a foreign ``Origin``, a forged
               ``Host``, connections over ``--stream-max-connections``, a frame that is not an
               image, a 12 kB PNG of 10,000 x 10,000 pixels, a JSON text nested 60,000 deep, a
               100 kB text, a 5 MB binary message, an invalid option, an idle connection, a
               client that vanishes mid-stream
clips          a raw H.264 stream over ``--max-video-seconds`` (no declared length), a raw stream
               whose frames grow mid-clip, a truncated MP4, a clip over the pixel cap, an upload
               aborted half-way, a cancelled job, a valid job
=============  ==========================================================================

For each round it prints what was sent (requests, WebSocket messages), the status and close codes
received, the 500s and tracebacks in the server's log (also "Task exception was never retrieved"
and "Exception in ASGI application"), any appearance of the API key or of the wrong keys sent in
the log, and the server's RSS, open file descriptors and threads before and after (counted when
quiet: after ``--settle`` seconds without traffic, again while they differ, three times at most).
Checks (exit status 1 if one fails): no 500; no traceback; no secret in the log; every valid
request of the slow round answered 200; RSS after each round within ``--rss-tolerance`` of the
baseline (after a warm-up that runs every round once, briefly); fds and threads back to the
baseline; nothing left in the server's temporary folder while idle and after it stops.

    python benchmarks/hostile_clients.py                         # the default model, every round
    python benchmarks/hostile_clients.py --tiny --soak-requests 500 --round-seconds 10   # quicker
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import random
import re
import secrets
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import soak_server  # noqa: E402
from common import build_tiny_model, free_port, start_server, stop_server, synthetic_photo  # noqa: E402

ROUNDS = ("photo soak", "http", "slow", "websocket", "clips")
TROUBLE = re.compile(r"Traceback|Task exception was never retrieved|Exception in ASGI application")
SERVER_500 = re.compile(r'" 500 ')


# ---------------------------------------------------------------- helpers


class Tally:
    """What one round sent and got, from several threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sent = Counter()  # "requests", "connections" (WebSocket), "messages" (sent whole on one)
        self.codes = Counter()  # "200", "408", "ws 4401", "no answer" ...

    def add(self, sent: str, code: str, n: int = 1) -> None:
        with self.lock:
            self.sent[sent] += n
            self.codes[code] += 1

    def count(self, sent: str, n: int = 1) -> None:
        with self.lock:
            self.sent[sent] += n


def png_bomb() -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0))
            + chunk(b"IEND", b""))


def huge_png() -> bytes:
    """10,000 x 10,000 pixels of black in about 12 kB."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def raw_exchange(port: int, data: bytes, timeout: float = 30.0) -> bytes:
    """Send ``data``, read until the server closes (or ``timeout``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        return soak_server._read_all(sock)


def status_of(answer: bytes) -> str:
    return str(soak_server._parse(answer)[0] or "no answer")


class Target:
    """The keyed server of the hostile rounds."""

    def __init__(self, args, workdir: Path, model: str):
        self.key = secrets.token_urlsafe(18)
        self.wrong = ["wrong-" + secrets.token_hex(8) for _ in range(3)]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = workdir / "target-tmp"
        self.tmp.mkdir()
        self.log_path = workdir / "target.log"
        args.threads, args.log_level = None, "info"
        extra = ("--api-key", self.key, "--read-timeout", str(args.read_timeout), "--stream-idle-seconds", "4",
                 "--max-video-seconds", "3", "--max-video-pixels", str(320 * 240),
                 "--stream-max-connections", str(args.streams))
        self.proc = start_server(args, model, self.port, self.log_path, extra=extra,
                                 env={**os.environ, "TMPDIR": str(self.tmp)})
        self.headers = {"X-API-Key": self.key}

    def wait_ready(self, timeout: float = 600) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the server exited:\n{self.log_path.read_text()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/healthz", headers=self.headers, timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise SystemExit("the server did not start")

    def health(self) -> dict:
        import httpx

        return httpx.get(f"{self.url}/healthz", headers=self.headers, timeout=30).json()

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def log_since(self, offset: int) -> str:
        with open(self.log_path, "rb") as fh:
            fh.seek(offset)
            return fh.read().decode("utf-8", "replace")

    def figures(self, settle: float, before: dict | None = None) -> dict:
        """RSS, fds and threads once quiet (see soak_server.settle); counted again while the fds
        or threads differ from ``before`` (without it: from the previous count, so that a
        baseline is a steady count), three times at most."""
        previous = before
        for attempt in range(3):
            self.wait_idle()
            time.sleep(settle)
            raw_exchange(self.port, soak_server.request("GET", "/static/app.js"), 10)
            time.sleep(0.5)
            figures = soak_server.process_figures(self.proc.pid)
            if previous is not None and (figures["fds"], figures["threads"]) == (previous["fds"], previous["threads"]):
                break
            previous = before or figures
        figures["recounts"] = attempt
        return figures

    def wait_idle(self, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            body = self.health()
            if not (body["admitted"] or body["receiving"] or body["streams"] or body["video_jobs"]):
                return
            time.sleep(0.2)

    def ws(self, path: str = "/api/stream", host: str = "127.0.0.1", key: bool = True, **kwargs):
        from websockets.sync.client import connect

        if key:
            path += ("&" if "?" in path else "?") + "api_key=" + self.key
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        return connect(f"ws://{host}:{self.port}{path}", sock=sock, proxy=None, open_timeout=30, close_timeout=5,
                       max_size=None, **kwargs)


def ws_outcome(ws, send=None, tally: Tally | None = None, timeout: float = 30.0) -> str:
    """Send ``send`` (if any) after the ready message, then read until the server closes: the
    close code, as ``ws CODE``."""
    from websockets.exceptions import ConnectionClosed

    try:
        if send is not None:
            ws.recv(timeout=timeout)
            ws.send(send)
            if tally:
                tally.count("messages")
        while True:
            ws.recv(timeout=timeout)
    except ConnectionClosed as exc:
        return f"ws {exc.rcvd.code if exc.rcvd else 'no close frame'}"
    except TimeoutError:
        return "ws no close"


# ---------------------------------------------------------------- rounds


def round_http(t: Target, args, tally: Tally) -> dict:
    import httpx

    photo = synthetic_photo(320, 240, seed=3)
    bomb = png_bomb()
    with httpx.Client(timeout=30) as c:
        def hit(method, path, **kw):
            r = c.request(method, t.url + path, **kw)
            tally.add("requests", str(r.status_code))
            return r

        for i in range(args.repeat):
            r = hit("POST", "/api/remove", content=photo, headers={**t.headers, "Host": f"evil.example:{t.port}"})
            assert r.status_code == 400 and r.json()["detail"]["code"] == "host_not_allowed", r.text
            hit("GET", "/healthz", headers={"Host": "rebind.example"})
            hit("POST", "/api/remove", content=photo)  # no key: 401
            hit("POST", "/api/remove", content=photo, headers={"X-API-Key": t.wrong[i % 3]})
            hit("GET", "/docs", params={"api_key": t.wrong[i % 3]})
            hit("GET", "/api/models", params={"api_key": t.key})  # the query key only opens the socket and /docs
            page = hit("GET", "/docs", params={"api_key": t.key})
            schema = re.search(r"url: '([^']+)'", page.text).group(1)
            hit("GET", schema)
            for asset in re.findall(r'(?:src|href)="(/docs-static/[^"]+)"', page.text)[:2]:
                hit("GET", asset)
            hit("GET", "/api/video/" + "a" * 5000, headers=t.headers)
            hit("GET", "/" + "b" * 5000, headers=t.headers)
            r = hit("POST", "/api/remove", content=bomb, headers=t.headers)
            assert "178956970" not in r.text
            hit("POST", "/api/remove", content=photo, headers=t.headers)
            answer = raw_exchange(t.port, b"POST /api/remove HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: "
                                  + t.key.encode() + b"\r\nContent-Length: abc\r\n\r\n")
            tally.add("requests", status_of(answer))
            assert answer.split(b"\r\n\r\n", 1)[1].startswith(b'{"error"'), answer
    return {}


SLOW_KINDS = ("stalled body", "trickled body", "slow head", "stalled clip")


def _slow_client(t: Target, kind: str, stop: threading.Event, tally: Tally) -> None:
    """One hostile connection after another until ``stop``: each is cut by the server."""
    key = t.key.encode()
    heads = {
        "stalled body": b"POST /api/remove HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: " + key
                        + b"\r\nContent-Type: image/jpeg\r\nContent-Length: 1000000\r\n\r\nabc",
        "trickled body": b"POST /api/remove HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: " + key
                         + b"\r\nContent-Length: 1000000\r\n\r\n",
        "stalled clip": b"POST /api/video HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: " + key
                        + b"\r\nContent-Type: video/mp4\r\nContent-Length: 1000000\r\n\r\nabc",
    }
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", t.port), timeout=30) as sock:
                if kind == "slow head":
                    lines = [b"POST /api/remove HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n", b"X-API-Key: " + key + b"\r\n"]
                    lines += [b"X-Pad-%d: x\r\n" % i for i in range(100)]
                    for line in lines:
                        if stop.wait(0.7) or soak_server._answered(sock):
                            break
                        sock.sendall(line)
                else:
                    sock.sendall(heads[kind])
                    while kind == "trickled body" and not stop.wait(0.5) and not soak_server._answered(sock):
                        sock.sendall(b"x" * 10)
                answer = soak_server._read_all(sock)
        except (BrokenPipeError, ConnectionResetError):
            answer = b""
        except OSError:
            continue
        tally.add("requests", f"{kind}: {status_of(answer)}")


def _stream_client(t: Target, frame: bytes, stop: threading.Event, tally: Tally, counts: Counter) -> None:
    from websockets.exceptions import ConnectionClosed

    try:
        with t.ws("/api/stream?format=jpeg&mode=color&bg_color=green") as ws:
            json.loads(ws.recv(timeout=30))
            while not stop.is_set():
                ws.send(frame)
                tally.count("messages")
                meta = json.loads(ws.recv(timeout=60))
                counts[meta["type"]] += 1
                if meta["type"] == "frame":
                    ws.recv(timeout=60)
                time.sleep(0.03)
            ws.close()
        tally.add("connections", "ws 1000 (client)")
    except ConnectionClosed as exc:
        tally.add("connections", f"ws {exc.rcvd.code if exc.rcvd else 'gone'}")


def round_slow(t: Target, args, tally: Tally, seconds: float) -> dict:
    import httpx

    photo = synthetic_photo(640, 480, seed=5)
    frame = synthetic_photo(320, 240, seed=7)
    with httpx.Client(timeout=60) as c:  # valid requests on a quiet server, for comparison
        quiet = []
        for _ in range(5):
            started = time.perf_counter()
            assert c.post(f"{t.url}/api/remove", content=photo, headers=t.headers).status_code == 200
            quiet.append(time.perf_counter() - started)
    stop = threading.Event()
    counts: Counter = Counter()
    threads = [threading.Thread(target=_slow_client, args=(t, SLOW_KINDS[i % len(SLOW_KINDS)], stop, tally))
               for i in range(args.slow_clients)]
    threads += [threading.Thread(target=_stream_client, args=(t, frame, stop, tally, counts))
                for _ in range(args.streams)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    served, latencies, health = Counter(), [], []
    clip = make_clips(t)["valid"]
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=120) as c:
        job = c.post(f"{t.url}/api/video", content=clip, headers=t.headers)  # the stalled clips hold no job slot
        tally.add("requests", f"valid clip: {job.status_code}")
        served[f"clip {job.status_code}"] += 1
        while time.monotonic() < deadline:
            started = time.perf_counter()
            r = c.post(f"{t.url}/api/remove", content=photo, headers=t.headers)
            latencies.append(time.perf_counter() - started)
            served[r.status_code] += 1
            tally.add("requests", f"valid: {r.status_code}")
            health.append(t.health())
        stop.set()
        for thread in threads:
            thread.join(90)
        if job.status_code == 202:  # its result goes with it
            wait_job(c, t, job.json()["id"])
            c.delete(f"{t.url}/api/video/{job.json()['id']}", headers=t.headers)
    peak = {k: max(h[k] for h in health) for k in ("admitted", "receiving", "streams", "stream_frames")}
    return {"valid": dict(served), "valid_ms": _ms(latencies), "quiet_ms": _ms(quiet),
            "stream_replies": dict(counts), "healthz_peak": peak,
            "all_served": set(served) <= {200, "clip 202"} and served[200] > 0}


def _ms(values: list[float]) -> dict:
    if not values:
        return {}
    values = sorted(values)
    return {"p50": round(1000 * values[len(values) // 2]), "p95": round(1000 * values[int(len(values) * 0.95)])}


def round_websocket(t: Target, args, tally: Tally) -> dict:
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    photo = synthetic_photo(320, 240, seed=9)
    huge = huge_png()

    def expect(label: str, ws_factory, send=None) -> None:
        try:
            with ws_factory() as ws:
                code = ws_outcome(ws, send, tally)
        except InvalidStatus as exc:  # refused at the handshake
            code = f"http {exc.response.status_code}"
        tally.add("connections", f"{label}: {code}")

    for _ in range(args.repeat):
        expect("no key", lambda: t.ws(key=False))
        expect("wrong key", lambda: t.ws(f"/api/stream?api_key={t.wrong[0]}", key=False))
        expect("foreign origin", lambda: t.ws(origin="https://evil.example"))
        expect("forged host", lambda: t.ws(host="evil.example", origin=f"http://evil.example:{t.port}"))
        expect("not an image", t.ws, b"%PDF-1.4 not a frame")
        expect("10,000 x 10,000 PNG", t.ws, huge)
        expect("nested JSON", t.ws, "[" * 60_000)
        expect("100 kB text", t.ws, "[" * 100_000)
        expect("5 MB binary", t.ws, os.urandom(5 * 1024 * 1024))
        expect("invalid option", t.ws, json.dumps({"options": {"quality": "9" * 5000}}))
        expect("bad query option", lambda: t.ws("/api/stream?model=/etc/passwd"))
        with contextlib.suppress(OSError, ConnectionClosed), t.ws() as ws:  # vanishes, without a close frame
            ws.recv(timeout=30)
            ws.send(photo)
            tally.count("messages")
            ws.socket.shutdown(socket.SHUT_RDWR)
            ws.socket.close()
            tally.add("connections", "vanished: (no close)")
    t.wait_idle()  # the connections above are gone
    open_ = []
    try:  # every stream slot taken: the next ones are told to come back later
        for _ in range(args.streams):
            ws = t.ws()
            ws.recv(timeout=30)
            open_.append(ws)
            tally.count("connections")
        for _ in range(4):
            expect("over the cap", t.ws)
    finally:
        for ws in open_:
            ws.close()
    idle = [threading.Thread(target=lambda: expect("idle", t.ws)) for _ in range(4)]
    for thread in idle:
        thread.start()
    for thread in idle:
        thread.join(60)
    return {}


def make_clips(t: Target) -> dict[str, bytes]:
    """The clips of the clip round, made once (PyAV): valid, long raw H.264, growing raw, truncated
    MP4, over the pixel cap."""
    if getattr(t, "_clips", None) is None:
        sys.path.insert(0, str(HERE.parent / "tests"))
        from video_clips import make_clip

        folder = Path(tempfile.mkdtemp(prefix="hostile-clips-"))
        try:
            def clip(name, **kw):
                return make_clip(folder / name, **kw).read_bytes()

            full = clip("full.mp4", frames=40, container_options={"movflags": "faststart"})
            t._clips = {
                "valid": clip("valid.mp4", frames=12, size=(160, 120)),
                "raw over the duration cap": clip("long.h264", fmt="h264", frames=100, audio=None, size=(64, 48)),
                "raw, frames grow mid-clip": clip("a.h264", fmt="h264", frames=10, audio=None, size=(64, 48))
                + clip("b.h264", fmt="h264", frames=10, audio=None, size=(640, 480)),
                "truncated": full[: len(full) * 6 // 10],
                "over the pixel cap": clip("big.mp4", frames=4, audio=None, size=(640, 480)),
            }
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return t._clips


def wait_job(c, t: Target, job_id: str, seconds: float = 120) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        body = c.get(f"{t.url}/api/video/{job_id}", headers=t.headers).json()
        if body.get("status") in ("done", "failed", "cancelled"):
            return body
        time.sleep(0.1)
    return {"status": "timed out"}


def round_clips(t: Target, args, tally: Tally) -> dict:
    import httpx

    clips = make_clips(t)
    jobs = Counter()
    with httpx.Client(timeout=120) as c:
        for _ in range(args.repeat):
            for label, data in clips.items():
                r = c.post(f"{t.url}/api/video", content=data, params={"output": "mov"}, headers=t.headers)
                tally.add("requests", f"{label}: {r.status_code}")
                assert "/tmp" not in r.text and "cleancut-video-" not in r.text, r.text
                if r.status_code == 202:
                    end = wait_job(c, t, r.json()["id"])
                    jobs[f"{label}: {end['status']}" + (" + warning" if end.get("warning") else "")] += 1
                    c.delete(f"{t.url}/api/video/{r.json()['id']}", headers=t.headers)
                t.wait_idle()  # its job slot is free again
            data = clips["valid"]
            with socket.create_connection(("127.0.0.1", t.port), timeout=30) as sock:  # aborted half-way
                sock.sendall(b"POST /api/video HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: " + t.key.encode()
                             + b"\r\nContent-Length: %d\r\n\r\n" % len(data) + data[: len(data) // 2])
            tally.add("requests", "aborted upload: (gone)")
            r = c.post(f"{t.url}/api/video", content=data, headers=t.headers)
            tally.add("requests", f"to cancel: {r.status_code}")
            if r.status_code == 202:
                job_id = r.json()["id"]
                tally.add("requests", f"cancel: {c.delete(f'{t.url}/api/video/{job_id}', headers=t.headers).status_code}")
                tally.add("requests", f"cancelled result: "
                                      f"{c.get(f'{t.url}/api/video/{job_id}/result', headers=t.headers).status_code}")
            t.wait_idle()
    return {"jobs": dict(jobs)}


# ---------------------------------------------------------------- the run


def run_soak(args, workdir: Path) -> dict:
    out = workdir / "soak.json"
    argv = ["--requests", str(args.soak_requests), "--warmup", str(args.soak_warmup), "--json", str(out),
            "--settle", str(args.settle), "--seed", str(args.seed)]
    argv += ["--tiny"] if args.tiny else ["--model", args.model]
    started = time.monotonic()
    code = soak_server.main(argv)
    r = json.loads(out.read_text())
    return {"surface": "photo soak", "seconds": time.monotonic() - started, "sent": {"requests": r["requests_sent"]},
            "codes": r["statuses"], "500s": int(r["statuses"].get("500", 0)),
            "tracebacks": 0 if r["checks"]["no traceback in the server log"] else 1, "secrets": 0,
            "rss_mib": (r["rss_mib"]["after_warmup"], r["rss_mib"]["end"]),
            "fds": (r["fds"]["before"], r["fds"]["after"]), "threads": (r["threads"]["before"], r["threads"]["after"]),
            "extra": {"good_p50_ms": round(r.get("p50_ms", 0)), "checks_failed": [k for k, v in r["checks"].items()
                                                                                    if not v]},
            "ok": code == 0, "temporary_files_left": r["temporary_files_left"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="cleancut-default", help="model to serve (default: cleancut-default)")
    parser.add_argument("--tiny", action="store_true", help="serve the tiny test model instead")
    parser.add_argument("--rounds", default=",".join(ROUNDS), help=f"comma-separated, from: {', '.join(ROUNDS)}")
    parser.add_argument("--soak-requests", type=int, default=2000, help="requests of the photo soak (default: 2000)")
    parser.add_argument("--soak-warmup", type=int, default=200, help="warm-up requests of the photo soak (default: 200)")
    parser.add_argument("--slow-clients", type=int, default=50, help="slow clients of the slow round (default: 50)")
    parser.add_argument("--streams", type=int, default=16,
                        help="streams of the slow round, and the server's --stream-max-connections (default: 16)")
    parser.add_argument("--round-seconds", type=float, default=30.0, help="length of the slow round (default: 30)")
    parser.add_argument("--repeat", type=int, default=10, help="times each case of the other rounds is sent (default: 10)")
    parser.add_argument("--read-timeout", type=float, default=2.0, help="the server's --read-timeout (default: 2)")
    parser.add_argument("--workers", type=int, default=2, help="server --workers (default: 2)")
    parser.add_argument("--max-queue", type=int, default=16, help="server --max-queue (default: 16)")
    parser.add_argument("--settle", type=float, default=12.0, help="quiet seconds before counting fds and threads")
    parser.add_argument("--rss-tolerance", type=float, default=0.10, help="allowed RSS growth per round (default: 0.10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    logging.getLogger("websockets").setLevel(logging.CRITICAL)  # the client side of connections cut on purpose
    rounds = [r.strip() for r in args.rounds.split(",") if r.strip()]
    unknown = set(rounds) - set(ROUNDS)
    if unknown:
        parser.error(f"unknown rounds {sorted(unknown)}; choose from {', '.join(ROUNDS)}")
    random.seed(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="hostile-clients-"))
    rows: list[dict] = []
    try:
        if "photo soak" in rounds:
            rows.append(run_soak(args, workdir))
        hostile = [r for r in rounds if r != "photo soak"]
        if hostile:
            rows += run_hostile(args, workdir, hostile)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    checks = print_report(rows, args)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "checks": checks}, indent=2, default=str))
    return 0 if all(checks.values()) else 1


def run_hostile(args, workdir: Path, rounds: list[str]) -> list[dict]:
    model = str(build_tiny_model(workdir / "model", 320)) if args.tiny else args.model
    t = Target(args, workdir, model)
    rows = []
    functions = {"http": round_http, "websocket": round_websocket, "clips": round_clips,
                 "slow": lambda t, a, tally: round_slow(t, a, tally, a.round_seconds)}
    try:
        t.wait_ready()
        at_start = {p for p in t.tmp.rglob("*") if p.is_file()}  # ONNX Runtime's own file, from the start
        # warm-up: each round once, briefly, so that memory and threads reach their steady state
        warm = argparse.Namespace(**{**vars(args), "repeat": 1, "round_seconds": min(5.0, args.round_seconds)})
        for name in rounds:
            functions[name](t, warm, Tally())
        baseline = t.figures(args.settle)
        before = baseline
        for name in rounds:
            offset = t.log_size()
            tally = Tally()
            started = time.monotonic()
            extra = functions[name](t, args, tally)
            seconds = time.monotonic() - started
            after = t.figures(args.settle, baseline)
            log = t.log_since(offset)
            rows.append({
                "surface": name, "seconds": seconds, "sent": dict(tally.sent), "codes": dict(sorted(tally.codes.items())),
                "500s": sum(n for code, n in tally.codes.items() if code.endswith("500")) + len(SERVER_500.findall(log)),
                "tracebacks": len(TROUBLE.findall(log)),
                "secrets": sum(log.count(s) for s in (t.key, *t.wrong)),
                "rss_mib": (before["rss_kib"] / 1024, after["rss_kib"] / 1024),
                "baseline_rss_mib": baseline["rss_kib"] / 1024,
                "fds": (before["fds"], after["fds"]), "threads": (before["threads"], after["threads"]),
                "baseline_fds_threads": (baseline["fds"], baseline["threads"]), "extra": extra,
                "ok": True})
            before = after
        idle_left = [str(p) for p in t.tmp.rglob("*") if p.is_file() and p not in at_start]
    finally:
        stop_server(t.proc)
    log = t.log_path.read_text(errors="replace")
    left = [str(p.relative_to(t.tmp)) for p in t.tmp.rglob("*") if p not in at_start]
    rows.append({"surface": "whole keyed run", "secrets": sum(log.count(s) for s in (t.key, *t.wrong)),
                 "tracebacks": len(TROUBLE.findall(log)), "500s": len(SERVER_500.findall(log)),
                 "temporary_files_left": idle_left + left, "log_lines": log.count("\n")})
    return rows


def print_report(rows: list[dict], args) -> dict:
    print(f"cleancut serve under hostile clients: {'tiny 320x320' if args.tiny else args.model}, --workers "
          f"{args.workers} --max-queue {args.max_queue}, {args.slow_clients} slow clients, {args.streams} streams, "
          f"{os.cpu_count()} CPUs")
    print(f"{'surface':<12} {'sent':<28} {'500s':>4} {'tracebacks':>10} {'secrets':>7}  {'RSS MiB before -> after':<24} "
          f"{'fds':<9} {'threads':<9}")
    checks: dict[str, bool] = {}
    for row in rows:
        if row["surface"] == "whole keyed run":
            continue
        sent = ", ".join(f"{n} {what}" for what, n in row["sent"].items())
        rss = f"{row['rss_mib'][0]:.0f} -> {row['rss_mib'][1]:.0f}"
        print(f"{row['surface']:<12} {sent:<28} {row['500s']:>4} {row['tracebacks']:>10} {row['secrets']:>7}  {rss:<24} "
              f"{row['fds'][0]} -> {row['fds'][1]:<4} {row['threads'][0]} -> {row['threads'][1]}")
        print(f"{'':<12} codes: {json.dumps(row['codes'])}")
        if row.get("extra"):
            print(f"{'':<12} {json.dumps(row['extra'])}")
        name = row["surface"]
        base_rss = row.get("baseline_rss_mib", row["rss_mib"][0])
        base_fds, base_threads = row.get("baseline_fds_threads", (row["fds"][0], row["threads"][0]))
        checks[f"{name}: no 500, no traceback, no secret"] = not (row["500s"] or row["tracebacks"] or row["secrets"])
        checks[f"{name}: RSS within {args.rss_tolerance:.0%} of the baseline"] = (
            row["rss_mib"][1] <= base_rss * (1 + args.rss_tolerance))
        checks[f"{name}: fds and threads back to the baseline"] = (row["fds"][1], row["threads"][1]) == (
            base_fds, base_threads)
        if name == "photo soak":
            checks["photo soak: every check of soak_server.py"] = row["ok"]
        if name == "slow":
            checks["slow: every valid request answered 200 (and the clip 202)"] = row["extra"]["all_served"]
    for row in rows:
        if row["surface"] in ("whole keyed run", "photo soak"):
            checks[f"{row['surface']}: no temporary file left"] = not row["temporary_files_left"]
        if row["surface"] == "whole keyed run":
            checks["whole keyed run: no secret, traceback or 500 in the server log"] = not (
                row["secrets"] or row["tracebacks"] or row["500s"])
    for name, ok in checks.items():
        print(f"  [{'ok' if ok else 'FAILED'}] {name}")
    return checks


if __name__ == "__main__":
    raise SystemExit(main())
