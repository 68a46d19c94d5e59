"""``cleancut batch`` (Ray) against ``cleancut remove --jobs`` on one machine, in one run.

Runs each command as a user would, on the same photos, into fresh output folders:

* ``cleancut remove SRC -o OUT --jobs 1`` and ``--jobs 2`` (threads, one shared model);
* ``cleancut batch SRC -o OUT --actors 1``, ``--actors 2`` (one ONNX Runtime thread each) and
  ``--actors 1 --threads-per-actor 2`` (a private Ray on this machine, started by the command).

and reports for each: wall-clock time and images/s (start-up included), the steady rate between
the first and the last output written (start-up excluded), and the peak RSS (``VmHWM``, sampled
every 0.2 s) of the command's process (the driver), of each Ray worker holding a model, and of
Ray's own processes together.

Example (the figures of the README's "At scale" section)::

    python benchmarks/bench_batch.py /work/shared/data/unlabelled/caltech101 --limit 1000 \\
        --model cleancut-default --json benchmarks/out/batch.json

The photos are the first ``--limit`` images of the folder in name order, linked (not copied)
into a temporary folder. Ray starts its workers 15 steps nicer than itself by default; the
benchmark sets ``RAY_worker_niceness=0`` so that Ray's workers and ``cleancut remove`` compete
for the CPU on equal terms on a machine that runs other jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

RUNS = {
    "remove --jobs 1": ["remove", "--jobs", "1"],
    "remove --jobs 2": ["remove", "--jobs", "2"],
    "batch --actors 1": ["batch", "--actors", "1"],
    "batch --actors 2": ["batch", "--actors", "2"],
    "batch --actors 1 --threads-per-actor 2": ["batch", "--actors", "1", "--threads-per-actor", "2"],
}

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/common.py
from common import proc_status  # noqa: E402


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(c) for c in fh.read().split()]
    except OSError:
        return []


def _cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()


class PeakRSS(threading.Thread):
    """Samples the peak RSS (VmHWM) of a process and all its descendants until it exits."""

    def __init__(self, pid: int, every_s: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.every_s = pid, every_s
        self.peaks: dict[int, tuple[str, float]] = {}  # pid -> (command line, MB)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            stack = [self.pid]
            while stack:
                pid = stack.pop()
                stack += _children(pid)
                try:
                    hwm = float(proc_status(pid)["VmHWM"].split()[0]) / 1024.0
                    self.peaks[pid] = (_cmdline(pid), hwm)  # a Ray worker renames itself once it is an actor
                except (OSError, KeyError):  # exited between listing and reading
                    continue
            self.done.wait(self.every_s)

    def summary(self) -> dict:
        driver = self.peaks.get(self.pid, ("", 0.0))[1]
        workers = [mb for pid, (cmd, mb) in self.peaks.items() if cmd.startswith("ray::MapWorker")]
        ray_own = sum(mb for pid, (cmd, mb) in self.peaks.items()
                      if pid != self.pid and not cmd.startswith("ray::MapWorker"))
        return {"driver_mb": round(driver), "worker_mb": [round(mb) for mb in sorted(workers)],
                "ray_processes_mb": round(ray_own), "processes": len(self.peaks)}


def run_one(name: str, args: list[str], source: Path, out: Path, model: str, env: dict) -> dict:
    command, *flags = args
    cmd = [sys.executable, "-m", "cleancut", command, str(source), "-o", str(out), "--model", model, *flags]
    started = time.perf_counter()
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    sampler = PeakRSS(process.pid)
    sampler.start()
    _, stderr = process.communicate()
    wall = time.perf_counter() - started
    sampler.done.set()
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"{name} failed ({process.returncode}):\n{stderr}")
    times = sorted(p.stat().st_mtime for p in out.rglob("*.png"))
    steady = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else None
    return {"run": name, "command": " ".join(cmd[2:]), "images": len(times), "wall_s": round(wall, 1),
            "images_per_s": round(len(times) / wall, 2),
            "steady_images_per_s": round(steady, 2) if steady else None,
            "summary": stderr.strip().splitlines()[-1], **sampler.summary()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="folder of photos (searched recursively)")
    parser.add_argument("--limit", type=int, default=1000, help="number of photos (default: 1000)")
    parser.add_argument("--model", default="cleancut-default", help="registered model name or .onnx path")
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS), help="which runs (default: all)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    from _photos import first_photos

    photos = first_photos(args.folder, args.limit)
    env = {**os.environ, "RAY_worker_niceness": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        source = Path(tmp) / "photos"
        source.mkdir()
        for i, photo in enumerate(photos):
            (source / f"{i:05d}{photo.suffix.lower()}").symlink_to(photo.resolve())
        with open("/proc/loadavg") as fh:
            load_before = fh.read().split()[:3]
        for name in args.runs:
            result = run_one(name, RUNS[name], source, Path(tmp) / name.replace(" ", "_"), args.model, env)
            results.append(result)
            print(f"{name}: {result['summary']}", file=sys.stderr)
        with open("/proc/loadavg") as fh:
            load_after = fh.read().split()[:3]

    header = {"images": len(photos), "folder": str(args.folder), "model": args.model,
              "cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
              "python": platform.python_version(), "load_average": [load_before, load_after]}
    print(f"{len(photos)} images from {args.folder}, model {args.model}, {os.cpu_count()} CPUs, "
          f"load average {' '.join(load_before)} -> {' '.join(load_after)}")
    print("| run | wall s | images/s | steady images/s | driver peak RSS | worker peak RSS | Ray's processes |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        workers = ", ".join(f"{mb} MB" for mb in r["worker_mb"]) or "-"
        ray_own = f"{r['ray_processes_mb']} MB" if r["run"].startswith("batch") else "-"
        print(f"| `{r['run']}` | {r['wall_s']} | {r['images_per_s']} | {r['steady_images_per_s']} | "
              f"{r['driver_mb']} MB | {workers} | {ray_own} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**header, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
