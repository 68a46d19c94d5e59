"""What the benchmark scripts share: latency summaries, a process's memory from /proc, starting and
stopping a server, clips from the DAVIS frames, the matte's quality and flicker against the ground
truth, and a line describing the machine.

Benchmarks import this module (``from common import ...``, the scripts run from this folder);
no benchmark imports ``tests/``.
"""

from __future__ import annotations

import io
import itertools
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- timing


def latency_summary(seconds, quantiles=(50, 90, 95, 99)) -> dict[str, float]:
    """Median, mean and percentiles (in ms) of durations given in seconds."""
    ms = np.asarray(seconds, dtype=float) * 1000.0
    out = {"median_ms": float(np.median(ms)), "mean_ms": float(ms.mean())}
    out.update({f"p{q}_ms": float(np.percentile(ms, q)) for q in quantiles})
    return out


# ---------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (peak resident) of a process, in KiB."""
    status = proc_status(pid)
    return {key: int(status[key].split()[0]) for key in ("VmRSS", "VmHWM") if key in status}


def synthetic_photo(width: int, height: int, seed: int = 0) -> bytes:
    """A JPEG photo-like image: a bright subject on a dark, textured background."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height)[:, None, None]
    bg = np.array([18, 26, 48]) + y * np.array([30, 22, 40]) + rng.normal(0, 6, (height, width, 3))
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))
    ImageDraw.Draw(img).ellipse((width * 0.3, height * 0.15, width * 0.7, height * 0.85), fill=(250, 210, 120))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def build_tiny_model(folder: Path, size: int) -> Path:
    from cleancut.testing import write_tiny_model

    return write_tiny_model(folder, name="tiny", input_size=(size, size))


def start_server(args, model: str, port: int, log_path: Path, extra: tuple[str, ...] = (),
                 env: dict[str, str] | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "cleancut", "serve", "--model", model, "--host", "127.0.0.1",
           "--port", str(port), "--workers", str(args.workers), "--max-queue", str(args.max_queue),
           "--log-level", args.log_level, *extra]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    log = open(log_path, "w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)


def wait_ready(proc: subprocess.Popen, base: str, log_path: Path, timeout: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with code {proc.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"the server did not answer /healthz within {timeout:.0f}s:\n{log_path.read_text()}")


def stop_server(proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """SIGTERM (the server finishes what is in flight), then kill if it does not exit."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------- clips


def davis_frames(data: Path, video: str) -> list[Path]:
    frames = sorted((data / "davis16" / "im").glob(f"{video}_*.jpg"))
    if not frames:
        raise SystemExit(f"no frames of '{video}' in {data / 'davis16' / 'im'}")
    return frames


def encode_clip(path: Path, frames, size: tuple[int, int], rate: int, crf: int, audio: bool,
            preset: str = "medium") -> Path:
    """Encode an iterable of RGB arrays (``size`` = width, height) as H.264 (+ AAC) MP4."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate, options={"crf": str(crf), "preset": preset})
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        sound = out.add_stream("aac", rate=48000, layout="mono") if audio else None
        count = 0
        for count, rgb in enumerate(frames, 1):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = count - 1, Fraction(1, rate)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if sound is not None:
            total, start = 48000 * count // rate, 0
            while start < total:
                n = min(1024, total - start)
                tone = (0.2 * np.sin(np.arange(start, start + n) * 0.03)).astype(np.float32)[None]
                chunk = av.AudioFrame.from_ndarray(tone, format="flt", layout="mono")
                chunk.sample_rate, chunk.pts, chunk.time_base = 48000, start, Fraction(1, 48000)
                out.mux(sound.encode(chunk))
                start += n
            out.mux(sound.encode(None))
    return path


def scaled(paths: list[Path], size: tuple[int, int] | None, count: int | None = None):
    source = itertools.islice(itertools.cycle(paths), count) if count else paths
    for p in source:
        image = Image.open(p).convert("RGB")
        yield np.asarray(image if size is None or image.size == size else image.resize(size, Image.BICUBIC))




# ---------------------------------------------------------------- quality of a sequence of mattes


def flicker(alphas: list[np.ndarray], truths: list[np.ndarray]) -> dict[str, float]:
    excess, change, truth_change = [], [], []
    for t in range(1, len(alphas)):
        da = np.abs(alphas[t] - alphas[t - 1])
        dg = np.abs(truths[t] - truths[t - 1])
        excess.append(float(np.maximum(da - dg, 0).mean()))
        change.append(float(da.mean()))
        truth_change.append(float(dg.mean()))
    return {"flicker": float(np.mean(excess)), "change": float(np.mean(change)),
            "gt_change": float(np.mean(truth_change))}


def score(alphas: list[np.ndarray], gts: list[np.ndarray]) -> dict[str, float]:
    from cleancut.metrics import SODMetrics

    metrics = SODMetrics(curves=False)
    for alpha, gt in zip(alphas, gts):
        metrics.add(alpha, gt)
    got = metrics.results()
    truths = [(g >= 128).astype(np.float32) for g in gts]
    return {"IoU": got["IoU"], "maxF": got["maxF"], "MAE": got["MAE"], **flicker(alphas, truths)}



# ---------------------------------------------------------------- processes and machine


def proc_status(pid: int) -> dict[str, str]:
    """The fields of ``/proc/PID/status`` (e.g. ``VmRSS``, ``VmHWM``) as text."""
    with open(f"/proc/{pid}/status") as fh:
        return dict(line.rstrip("\n").split(":\t", 1) for line in fh if ":\t" in line)


def status_kb(pid: int, key: str) -> int | None:
    """One memory field of ``/proc/PID/status`` in KiB, or None (process gone, no such field)."""
    try:
        value = proc_status(pid).get(key)
    except OSError:
        return None
    return int(value.split()[0]) if value else None




def cleancut_env() -> dict[str, str]:
    """The environment for a child ``python -m cleancut`` that runs this checkout's sources."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"),
                                                                     os.environ.get("PYTHONPATH")])))


def run_sampling_memory(argv: list[str], every: float = 1.0) -> dict:
    """Run ``argv`` as a child process, sampling its resident memory (VmRSS) every ``every``
    seconds; SystemExit with its last output if it fails. Returns ``samples`` ((seconds, KiB)
    pairs), ``peak_kib`` (VmHWM), ``wall_seconds`` and its ``stderr`` lines."""
    import threading

    child = subprocess.Popen(argv, env=cleancut_env(), stderr=subprocess.PIPE, text=True)
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.extend(child.stderr), daemon=True)
    reader.start()
    samples: list[tuple[float, int]] = []
    peak = 0
    t0 = time.perf_counter()
    while child.poll() is None:
        rss = status_kb(child.pid, "VmRSS")
        peak = max(peak, status_kb(child.pid, "VmHWM") or 0)
        if rss:
            samples.append((time.perf_counter() - t0, rss))
        time.sleep(every)
    reader.join()
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(argv[1:4])} failed:\n{''.join(stderr)[-2000:]}")
    return {"samples": samples, "peak_kib": peak, "wall_seconds": time.perf_counter() - t0, "stderr": stderr}


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return f"{cpu}, {os.cpu_count()} cores, load average {load}"
