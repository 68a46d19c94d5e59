"""Load-test ``cleancut serve``: throughput, latency, errors and the server's memory over time.

Starts ``python -m cleancut serve`` in a subprocess on 127.0.0.1 (a free port), sends
``--requests`` POST /api/remove requests (one synthetic photo, multipart) from ``--clients``
concurrent clients (threads, one keep-alive httpx client each), and prints requests/s, p50/p95/p99
latency, the error count by status, and the server's resident memory (VmRSS) and peak (VmHWM)
from /proc/<pid>/status after the warm-up and at the end, plus samples in between, to show that
memory levels off instead of growing with the number of requests.

Examples::

    python benchmarks/bench_server.py --tiny                        # tiny test model (no bundled one yet)
    python benchmarks/bench_server.py --model cleancut-default      # the bundled model
    python benchmarks/bench_server.py --model exported/model.onnx --requests 2000 --clients 16 --workers 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/common.py
from common import (build_tiny_model, free_port, latency_summary, memory_kib, start_server,  # noqa: E402
                    stop_server, synthetic_photo, wait_ready)


def run_load(base: str, photo: bytes, params: dict, n_requests: int, n_clients: int, pid: int,
             samples: list) -> tuple[list[float], Counter, float]:
    import httpx

    latencies: list[float] = []
    statuses: Counter = Counter()
    lock = threading.Lock()
    counter = iter(range(n_requests))
    done = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=base, timeout=120) as http:
            while True:
                with lock:
                    if next(counter, None) is None:
                        return
                started = time.perf_counter()
                try:
                    r = http.post("/api/remove", params=params, files={"file": ("photo.jpg", photo, "image/jpeg")})
                    status = r.status_code
                    if status == 200 and not r.content:
                        status = "empty body"
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    statuses[status] += 1

    def monitor() -> None:
        while not done.wait(0.5):
            with lock:
                count = len(latencies)
            samples.append((count, memory_kib(pid)))

    watcher = threading.Thread(target=monitor, daemon=True)
    watcher.start()
    threads = [threading.Thread(target=client) for _ in range(n_clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    done.set()
    watcher.join()
    return latencies, statuses, wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="cleancut-default",
                        help="registered model name or .onnx path (default: cleancut-default)")
    parser.add_argument("--tiny", action="store_true",
                        help="build the tiny test model (cleancut.testing) and serve it instead of --model")
    parser.add_argument("--tiny-size", type=int, default=320, help="input size of the tiny model (default: 320)")
    parser.add_argument("--requests", type=int, default=1000, help="requests to send (default: 1000)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default: 8)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed requests first (default: 20)")
    parser.add_argument("--workers", type=int, default=2, help="server --workers (default: 2)")
    parser.add_argument("--max-queue", type=int, default=16, help="server --max-queue (default: 16)")
    parser.add_argument("--threads", type=int, default=None, help="server --threads (default: its own choice)")
    parser.add_argument("--log-level", default="warning",
                        help="server --log-level (default: warning; info adds one log line per request)")
    parser.add_argument("--size", default="640x480", help="synthetic photo WxH (default: 640x480)")
    parser.add_argument("--photo", type=Path, help="send this image file instead of the synthetic photo")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="request option, repeatable (e.g. --option mode=mask)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.clients < 1:
        parser.error("--requests and --clients must be >= 1")

    workdir = Path(tempfile.mkdtemp(prefix="bench-server-"))
    model = str(build_tiny_model(workdir / "model", args.tiny_size)) if args.tiny else args.model
    if args.photo:
        photo = args.photo.read_bytes()
        photo_desc = str(args.photo)
    else:
        width, height = (int(v) for v in args.size.lower().split("x"))
        photo = synthetic_photo(width, height)
        photo_desc = f"synthetic {width}x{height} JPEG"
    params = dict(o.split("=", 1) for o in args.option)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = workdir / "server.log"
    proc = start_server(args, model, port, log_path)
    samples: list = []
    try:
        wait_ready(proc, base, log_path)
        idle = memory_kib(proc.pid)
        if args.warmup:
            run_load(base, photo, params, args.warmup, min(args.clients, args.warmup), proc.pid, [])
        start_mem = memory_kib(proc.pid)
        latencies, statuses, wall = run_load(base, photo, params, args.requests, args.clients, proc.pid, samples)
        end_mem = memory_kib(proc.pid)
    finally:
        stop_server(proc)
        shutil.rmtree(workdir)

    latency = latency_summary(latencies, quantiles=(50, 95, 99))
    errors = {str(k): v for k, v in statuses.items() if k != 200}
    result = {
        "model": model if not args.tiny else f"tiny {args.tiny_size}x{args.tiny_size} (cleancut.testing)",
        "photo": photo_desc, "photo_bytes": len(photo), "options": params,
        "requests": args.requests, "clients": args.clients, "workers": args.workers, "max_queue": args.max_queue,
        "wall_s": wall, "requests_per_s": args.requests / wall,
        "p50_ms": latency["p50_ms"], "p95_ms": latency["p95_ms"],
        "p99_ms": latency["p99_ms"], "errors": sum(errors.values()), "errors_by_status": errors,
        "rss_idle_mib": idle["VmRSS"] / 1024, "rss_start_mib": start_mem["VmRSS"] / 1024,
        "peak_start_mib": start_mem["VmHWM"] / 1024, "rss_end_mib": end_mem["VmRSS"] / 1024,
        "peak_end_mib": end_mem["VmHWM"] / 1024,
        "rss_samples_mib": [(n, m["VmRSS"] / 1024) for n, m in samples],
        "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
    }
    print(f"cleancut serve benchmark: {result['model']}, {photo_desc} ({len(photo)} bytes), options {params or '{}'}")
    print(f"  {args.requests} requests from {args.clients} clients, server --workers {args.workers} "
          f"--max-queue {args.max_queue}, {result['cpus']} CPUs")
    print(f"  throughput   {result['requests_per_s']:.1f} requests/s ({wall:.1f} s)")
    print(f"  latency      p50 {result['p50_ms']:.1f} ms, p95 {result['p95_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms")
    print(f"  errors       {result['errors']}" + (f" {errors}" if errors else ""))
    print(f"  server RSS   idle {result['rss_idle_mib']:.0f} MiB; after warm-up {result['rss_start_mib']:.0f} MiB "
          f"(peak {result['peak_start_mib']:.0f} MiB); at the end {result['rss_end_mib']:.0f} MiB "
          f"(peak {result['peak_end_mib']:.0f} MiB)")
    if samples:
        picks = [samples[int(i * (len(samples) - 1) / 4)] for i in range(5)]
        print("  RSS samples  " + ", ".join(f"{m['VmRSS'] / 1024:.0f} MiB after {n}" for n, m in picks))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if not errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
