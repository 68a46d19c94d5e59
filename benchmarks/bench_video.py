"""Benchmark ``cleancut video``: quality and flicker, speed, memory. Prints Markdown tables.

Three parts (``--parts``, default all):

``quality``  Clips built from the DAVIS-2016 frames of the ``val-objects`` videos (``cows``,
             ``paragliding-launch``; unseen by training) in ``<data>/davis16``, encoded as
             near-lossless H.264 at their stored size, 24 frames/s. Every frame goes through the
             product path (``cleancut.iter_video``) with and without smoothing and is scored
             against the ground truth: IoU and maxF (``cleancut.metrics.SODMetrics``, the
             project's protocol), MAE, and flicker = mean over frames and pixels of
             ``max(0, |a_t - a_t-1| - |g_t - g_t-1|)``: the matte's change from one frame to
             the next beyond the ground truth's own change (alpha and ground truth in [0, 1]).
             With ``--tune``, a grid of smoothing parameters is scored on ``--tune-on`` (the raw
             mattes are computed once and smoothed offline by the same ``TemporalSmoother``).
``speed``    The first ``--speed-frames`` frames of ``cows``, scaled to 854x480 and 1920x1080,
             encoded as H.264 with an AAC track. The same frames are written as JPEG files
             (quality 95) and cut out by ``cleancut remove FOLDER -o OUT`` (PNG cut-outs), in the
             same process, next to ``cleancut video`` into each output kind. Frames/s is frames
             / wall-clock time of the command (after one untimed warm-up of each command, so
             the model file is cached; each command still creates its model session).
``memory``   A synthetic clip of ``--memory-seconds`` at 1920x1080, ``--memory-rate`` frames/s
             (default 25; a lower rate keeps a 10-minute clip affordable on 2 cores) (a moving
             gradient and a bright disc, with an AAC track) is generated, then
             ``cleancut video CLIP -o OUT.webm`` runs in a child process whose resident memory
             (VmRSS) is sampled every second; the peak is the child's VmHWM.

Examples::

    python benchmarks/bench_video.py --model cleancut-default --parts quality --tune
    python benchmarks/bench_video.py --model cleancut-default --parts speed --speed-frames 48
    python benchmarks/bench_video.py --model cleancut-default --parts memory --memory-seconds 600

Timings depend on the machine and its load: the script prints the CPU, its core count and the
load average before and after.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/common.py
from common import davis_frames, encode_clip, machine, run_sampling_memory, scaled, score  # noqa: E402

VIDEOS = ("cows", "paragliding-launch")
CLIP_RATE = 24


# ---------------------------------------------------------------- clips


# ---------------------------------------------------------------- quality


def _smoothed(frames: list[Image.Image], raw: list[np.ndarray], params) -> list[np.ndarray]:
    from cleancut.video.smooth import TemporalSmoother

    return [a for _, a in TemporalSmoother(params).smooth(zip(frames, raw))]


def quality(args, workdir: Path) -> dict:
    import cleancut
    from cleancut.video.smooth import SmoothParams

    results: dict = {}
    raw_cache: dict = {}
    for video in args.videos:
        paths = davis_frames(args.data, video)
        gts = [np.asarray(Image.open(args.data / "davis16" / "gt" / (p.stem + ".png")).convert("L"))
               for p in paths]
        size = Image.open(paths[0]).size
        clip = encode_clip(workdir / f"{video}.mp4", scaled(paths, None), size, CLIP_RATE, crf=12,
                       audio=False)
        started = time.perf_counter()
        pairs = list(cleancut.iter_video(clip, model=args.model, smooth=False))
        frames = [Image.fromarray(f) for f, _ in pairs]
        raw = [a for _, a in pairs]
        smooth = [a for _, a in cleancut.iter_video(clip, model=args.model)]  # the product path
        seconds = time.perf_counter() - started
        if len(raw) != len(gts):
            raise SystemExit(f"{video}: decoded {len(raw)} frames, expected {len(gts)}")
        offline = _smoothed(frames, raw, SmoothParams())
        assert max(float(np.abs(a - b).max()) for a, b in zip(offline, smooth)) < 1e-5
        raw_cache[video] = (frames, raw, gts)
        results[video] = {"frames": len(raw), "size": list(size), "seconds": seconds,
                          "no smoothing": score(raw, gts), "smoothing (default)": score(smooth, gts)}
    print("\n### Quality and flicker (product path, `cleancut.iter_video`)\n")
    print(f"Defaults: {SmoothParams()}\n")
    print("| video | frames | matte | IoU | maxF | MAE | flicker | mean abs change | GT's change |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for video, r in results.items():
        for label in ("no smoothing", "smoothing (default)"):
            s = r[label]
            print(f"| {video} | {r['frames']} | {label} | {s['IoU']:.4f} | {s['maxF']:.4f} | "
                  f"{s['MAE']:.4f} | {s['flicker']:.5f} | {s['change']:.5f} | {s['gt_change']:.5f} |")
    if args.tune:
        results["tuning"] = _tune(args, raw_cache)
    return results


def _tune(args, cache: dict) -> list[dict]:
    from cleancut.video.smooth import SmoothParams

    frames, raw, gts = cache[args.tune_on]
    base = score(raw, gts)
    rows = []
    for radius, high in itertools.product((1, 2, 3), (0.04, 0.08, 0.12, 0.16, 0.24)):
        params = SmoothParams(radius=radius, motion_high=high)
        s = score(_smoothed(frames, raw, params), gts)
        rows.append({"radius": radius, "motion_high": high, **s})
    print(f"\n### Tuning on {args.tune_on} (no smoothing: IoU {base['IoU']:.4f}, maxF "
          f"{base['maxF']:.4f}, MAE {base['MAE']:.4f}, flicker {base['flicker']:.5f})\n")
    print("Kept accuracy: IoU and maxF not below the unsmoothed matte's, MAE at most 1 % above it. "
          "The default is the kept row with the lowest flicker.\n")
    print("| radius | motion_high | IoU | maxF | MAE | flicker | keeps accuracy |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    for r in sorted(rows, key=lambda r: r["flicker"]):
        keeps = (r["IoU"] >= base["IoU"] and r["maxF"] >= base["maxF"] and r["MAE"] <= 1.01 * base["MAE"])
        r["keeps_accuracy"] = keeps
        print(f"| {r['radius']} | {r['motion_high']} | {r['IoU']:.4f} | {r['maxF']:.4f} | "
              f"{r['MAE']:.4f} | {r['flicker']:.5f} | {'yes' if keeps else 'no'} |")
    return rows


# ---------------------------------------------------------------- speed


def _timed_cli(argv: list[str]) -> float:
    from cleancut.cli import main

    started = time.perf_counter()
    code = main(argv)
    if code != 0:
        raise SystemExit(f"cleancut {' '.join(argv)} exited with {code}")
    return time.perf_counter() - started


def speed(args, workdir: Path) -> dict:
    import av

    paths = davis_frames(args.data, "cows")
    model = ["--model", args.model] if args.model else []
    results = {}
    for label, size in (("480p", (854, 480)), ("1080p", (1920, 1080))):
        if label not in args.sizes:
            continue
        clip = encode_clip(workdir / f"speed-{label}.mp4", scaled(paths, size, args.speed_frames), size,
                       CLIP_RATE, crf=18, audio=True, preset="veryfast")
        images = workdir / f"images-{label}"
        images.mkdir()
        with av.open(str(clip)) as container:  # the same frames, as the video decoder gives them
            for i, frame in enumerate(container.decode(video=0)):
                frame.to_image().save(images / f"{i:06d}.jpg", quality=95)
        n = len(list(images.glob("*.jpg")))
        warm = workdir / f"warm-{label}"
        warm.mkdir()
        short = encode_clip(warm / "short.mp4", scaled(paths, size, 3), size, CLIP_RATE, crf=18,
                        audio=True, preset="veryfast")
        _timed_cli(["remove", str(images / "000000.jpg"), "-o", str(warm / "w.png"), "--overwrite", *model])
        _timed_cli(["video", str(short), "-o", str(warm / "w.webm"), "--overwrite", *model])
        runs = [
            ("cleancut remove FOLDER -o OUT (PNG cut-outs)",
             ["remove", str(images), "-o", str(workdir / f"cut-{label}"), "--overwrite"]),
            ("cleancut video -o OUT.webm (VP9 + alpha)",
             ["video", str(clip), "-o", str(workdir / f"{label}.webm"), "--overwrite"]),
            ("cleancut video -o OUT.webm --no-smooth",
             ["video", str(clip), "-o", str(workdir / f"{label}-raw.webm"), "--overwrite", "--no-smooth"]),
            ("cleancut video -o OUT.mov (ProRes 4444)",
             ["video", str(clip), "-o", str(workdir / f"{label}.mov"), "--overwrite"]),
            ("cleancut video -o OUT.mp4 --bg-color white (H.264)",
             ["video", str(clip), "-o", str(workdir / f"{label}.mp4"), "--overwrite", "--bg-color", "white"]),
            ("cleancut video -o FOLDER/ (PNG cut-outs)",
             ["video", str(clip), "-o", str(workdir / f"frames-{label}"), "--overwrite"]),
        ]
        results[label] = {}
        for name, argv in runs:
            seconds = _timed_cli(argv + model)
            results[label][name] = {"frames": n, "seconds": seconds, "fps": n / seconds}
            print(f"  {label} {name}: {n} frames in {seconds:.1f} s = {n / seconds:.2f} frames/s",
                  file=sys.stderr)
    print("\n### Speed (frames/s, same frames, same run)\n")
    print("| command | " + " | ".join(results) + " |")
    print("|---|" + "---:|" * len(results))
    names = list(next(iter(results.values())))
    for name in names:
        print(f"| `{name}` | " + " | ".join(f"{results[s][name]['fps']:.2f}" for s in results) + " |")
    return results


# ---------------------------------------------------------------- memory


def _synthetic_frames(count: int, size=(1920, 1080), rate: float = 25.0):
    """A smooth grey pattern drifting right and a bright disc circling over it (cheap: slices of
    arrays made once)."""
    w, h = size
    y, x = np.mgrid[0:h, 0:2 * w].astype(np.float32)
    texture = 60 + 60 * np.sin(2 * np.pi * x / w) * np.cos(2 * np.pi * y / h)
    texture = np.repeat(np.clip(texture, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
    r = h // 5
    yy, xx = np.mgrid[-r:r, -r:r]
    disc = xx ** 2 + yy ** 2 < r ** 2
    for i in range(count):
        t = i / rate
        shift = int(t * 100) % w
        rgb = texture[:, shift:shift + w].copy()
        cx = int(w * (0.5 + 0.3 * np.sin(0.4 * t)))
        cy = int(h * (0.5 + 0.2 * np.cos(0.3 * t)))
        rgb[cy - r:cy + r, cx - r:cx + r][disc] = (230, 200, 170)
        yield rgb


def memory(args, workdir: Path) -> dict:
    rate = args.memory_rate
    frames = int(args.memory_seconds * rate)
    clip = workdir / "long-1080p.mp4"
    started = time.perf_counter()
    encode_clip(clip, _synthetic_frames(frames, rate=rate), (1920, 1080), rate, crf=28, audio=True, preset="ultrafast")
    print(f"  generated {frames} frames ({args.memory_seconds} s) of 1080p in "
          f"{time.perf_counter() - started:.0f} s", file=sys.stderr)
    argv = [sys.executable, "-m", "cleancut", "video", str(clip), "-o", str(workdir / "long.webm"),
            "--overwrite"] + (["--model", args.model] if args.model else [])
    run = run_sampling_memory(argv)
    samples, peak, total, stderr = run["samples"], run["peak_kib"], run["wall_seconds"], run["stderr"]
    mib = lambda kb: kb / 1024.0  # noqa: E731
    points = {}
    for share in (0.05, 0.25, 0.5, 0.75, 1.0):
        at = [rss for t, rss in samples if t <= share * total]
        points[f"{int(share * 100)}%"] = mib(at[-1]) if at else None
    result = {"frames": frames, "seconds_of_video": args.memory_seconds, "frames_per_second": rate, "wall_seconds": total,
              "rss_mib_at": points, "rss_start_mib": points["5%"], "rss_end_mib": points["100%"],
              "peak_mib": mib(peak), "samples": len(samples), "summary": stderr[-1].strip() if stderr else ""}
    print("\n### Memory (child process running `cleancut video`, 1920x1080)\n")
    print(f"{frames} frames ({args.memory_seconds} s at {rate:g} frames/s) in {total:.0f} s; "
          + ", ".join(f"RSS at {k} of the run: {v:.0f} MiB" for k, v in points.items() if v)
          + f"; peak (VmHWM) {mib(peak):.0f} MiB")
    return result


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model name or .onnx (default: cleancut-default)")
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data"), help="shared data root")
    parser.add_argument("--parts", nargs="+", default=["quality", "speed", "memory"],
                        choices=["quality", "speed", "memory"])
    parser.add_argument("--videos", nargs="+", default=list(VIDEOS), help="DAVIS videos to score")
    parser.add_argument("--tune", action="store_true", help="also score a grid of smoothing parameters")
    parser.add_argument("--tune-on", default="cows", help="the video the grid is scored on")
    parser.add_argument("--sizes", nargs="+", default=["480p", "1080p"], choices=["480p", "1080p"])
    parser.add_argument("--speed-frames", type=int, default=48, help="frames per speed clip")
    parser.add_argument("--memory-seconds", type=float, default=600.0, help="length of the memory clip")
    parser.add_argument("--memory-rate", type=int, default=25, help="frames/s of the memory clip (default 25)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    print(f"machine: {machine()}", file=sys.stderr)
    results: dict = {"machine_before": machine(), "model": args.model or "cleancut-default"}
    with tempfile.TemporaryDirectory(prefix="bench-video-") as tmp:
        for part in args.parts:
            folder = Path(tmp) / part
            folder.mkdir()
            results[part] = {"quality": quality, "speed": speed, "memory": memory}[part](args, folder)
    results["machine_after"] = machine()
    print(f"\nmachine before: {results['machine_before']}\nmachine after:  {results['machine_after']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
