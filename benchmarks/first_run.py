"""First-use costs a newcomer meets, each measured in fresh processes: ``import cleancut``,
``cleancut --help``, the first and a later ``cleancut remove``, alpha matting on a machine's
first use (numba compiling pymatting's kernels) and afterwards, ``cleancut warmup``, and
``cleancut serve``: time to ready and the first request against the later ones, with and
without the start-up warm-up.

A machine's "first use" of alpha matting is reproduced with an empty ``NUMBA_CACHE_DIR`` (numba
then compiles everything again and caches it there, not beside pymatting), so the installed
cache is neither used nor touched.

    python benchmarks/first_run.py                      # cleancut-default, samples/Abyssinian_224.jpg
    python benchmarks/first_run.py --model path.onnx --photo my.jpg --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import free_port, start_server, stop_server, wait_ready  # noqa: E402


def timed(cmd: list[str], env: dict | None = None) -> float:
    """Wall seconds of one command in a fresh process (it must succeed); its CPU seconds (user +
    system, all threads), which a loaded machine changes much less, go to ``CPU_SECONDS``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    CPU_SECONDS.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return seconds


CPU_SECONDS: list[float] = []


def timed_cpu(label: str, figures: dict, cmd: list[str], env: dict | None = None) -> float:
    """``timed``, recording the run's CPU seconds as ``figures[label + "_cpu_s"]``."""
    seconds = timed(cmd, env)
    figures[f"{label}_cpu_s"] = CPU_SECONDS[-1]
    return seconds


def import_seconds() -> float:
    code = "import time; t = time.perf_counter(); import cleancut; print(time.perf_counter() - t)"
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def serve_timings(model: str, photo: bytes, warm_up: bool, env: dict, log_path: Path, requests: int = 8) -> dict:
    """Seconds from start to /healthz 200, the first request and the median of the next ones
    (the first with alpha matting; the later ones alternate with and without)."""
    import httpx

    port = free_port()
    settings = argparse.Namespace(workers=1, max_queue=16, log_level="warning", threads=None)
    started = time.perf_counter()
    proc = start_server(settings, model, port, log_path, extra=() if warm_up else ("--no-warm-up",), env=env)
    try:
        wait_ready(proc, f"http://127.0.0.1:{port}", log_path, timeout=600)
        ready = time.perf_counter() - started
        seconds = []
        for i in range(requests):
            params = {"alpha_matting": "true"} if i % 2 == 0 else {}
            t = time.perf_counter()
            r = httpx.post(f"http://127.0.0.1:{port}/api/remove", params=params, content=photo, timeout=600)
            seconds.append(time.perf_counter() - t)
            assert r.status_code == 200, r.text
    finally:
        stop_server(proc)
    return {"ready_s": ready, "first_request_s": seconds[0], "later_matting_median_s": statistics.median(seconds[2::2]),
            "later_plain_median_s": statistics.median(seconds[1::2])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="cleancut-default", help="model (default: cleancut-default)")
    parser.add_argument("--photo", type=Path, default=REPO / "samples" / "Abyssinian_224.jpg",
                        help="photo to cut out (default: samples/Abyssinian_224.jpg)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of the quick measurements (default: 5)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="first-run-"))
    cli = [sys.executable, "-m", "cleancut"]
    out = str(work / "out.png")
    remove = cli + ["remove", str(args.photo), "-o", out, "--overwrite", "--model", args.model]
    figures: dict = {"model": args.model, "photo": str(args.photo), "cpus": os.cpu_count(),
                     "cpu": platform.processor() or platform.machine()}
    try:
        figures["import_cleancut_s"] = statistics.median(import_seconds() for _ in range(args.repeat))
        figures["help_s"] = statistics.median(timed(cli + ["--help"]) for _ in range(args.repeat))
        figures["remove_first_s"] = timed_cpu("remove_first", figures, remove)
        figures["remove_later_median_s"] = statistics.median(timed(remove) for _ in range(args.repeat - 1))

        cold = {**os.environ, "NUMBA_CACHE_DIR": str(work / "numba-cache")}  # an empty cache: first use
        figures["matting_first_s"] = timed_cpu("matting_first", figures, remove + ["--alpha-matting"], cold)
        figures["matting_later_s"] = timed_cpu("matting_later", figures, remove + ["--alpha-matting"], cold)
        shutil.rmtree(work / "numba-cache")
        figures["warmup_first_s"] = timed_cpu("warmup_first", figures, cli + ["warmup", "--model", args.model], cold)
        figures["warmup_later_s"] = timed_cpu("warmup_later", figures, cli + ["warmup", "--model", args.model], cold)
        figures["matting_after_warmup_s"] = timed(remove + ["--alpha-matting"], cold)

        photo = args.photo.read_bytes()
        for label, warm_up in (("serve_warm_up", True), ("serve_no_warm_up", False)):
            shutil.rmtree(work / "numba-cache")
            figures[f"{label}_first_start"] = serve_timings(args.model, photo, warm_up, cold, work / "serve.log")
            figures[f"{label}_cached"] = serve_timings(args.model, photo, warm_up, cold, work / "serve.log")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"first-use costs: model {args.model}, photo {args.photo.name}, {figures['cpus']} CPUs ({figures['cpu']})")
    for key, value in figures.items():
        if isinstance(value, float):
            print(f"  {key:<28} {value:8.2f} s" + (" CPU" if key.endswith("_cpu_s") else ""))
        elif isinstance(value, dict):
            print(f"  {key:<28} " + ", ".join(f"{k} {v:.2f} s" for k, v in value.items()))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
