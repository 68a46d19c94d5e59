"""What the benchmark scripts share: clips from the DAVIS frames, the matte's quality and flicker
against the ground truth, a process's memory from /proc, and a line describing the machine.

Benchmarks import this module (``from common import ...``, the scripts run from this folder);
no benchmark imports ``tests/``.
"""

from __future__ import annotations

import itertools
import os
import platform
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image


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


def status_kb(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None




def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return f"{cpu}, {os.cpu_count()} cores, load average {load}"
