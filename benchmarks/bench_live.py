"""Benchmark ``cleancut live``: speed and latency on a paced file, memory over a long run, and the
flicker and accuracy of causal smoothing. Prints Markdown tables.

``speed``    A 854x480, 30 frames/s H.264 clip made from the DAVIS-2016 ``cows`` frames (looped to
             ``--seconds``) is played by ``cleancut live CLIP -o OUT.webm --bg-color green`` in a
             child process, paced at its frame rate (the way a camera delivers frames). Reported:
             frames processed per second, latency from capture to output (p50 / p95), dropped
             frames (from ``--stats-json``), and the child's resident memory (VmRSS, sampled every
             second) at the start and end of the run and its peak (VmHWM): flat for a long run
             (``--seconds 600``).
``flicker``  The ``val-objects`` videos ``cows`` and ``paragliding-launch`` (unseen by training),
             frame by frame through the model (``Remover.predict_mask``), then: no smoothing, the
             live path's causal smoothing (``CausalSmoother``: no look-ahead), and the file path's
             centred smoothing (``TemporalSmoother``: one frame of look-ahead). Scored against the
             ground truth: IoU, maxF and MAE (``cleancut.metrics``) and flicker (the matte's change
             between frames beyond the ground truth's own; see ``common.flicker``).

Examples::

    python benchmarks/bench_live.py --parts speed --seconds 60
    python benchmarks/bench_live.py --parts speed --seconds 600     # memory stays flat
    python benchmarks/bench_live.py --parts flicker

Figures depend on the machine and its load: the script prints the CPU, its cores and the load
average before and after.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/common.py
from common import davis_frames, encode_clip, machine, run_sampling_memory, scaled, score  # noqa: E402

VIDEOS = ("cows", "paragliding-launch")
SIZE = (854, 480)
RATE = 30


def speed(args, workdir: Path) -> dict:
    frames = davis_frames(args.data, "cows")
    clip = workdir / "cows-480p30.mp4"
    count = int(args.seconds * RATE)
    encode_clip(clip, scaled(frames, SIZE, count), SIZE, RATE, crf=20, audio=False, preset="veryfast")
    stats_path = workdir / "stats.json"
    argv = [sys.executable, "-m", "cleancut", "live", str(clip), "-o", str(workdir / "out.webm"),
            "--bg-color", "green", "--stats-json", str(stats_path)] + (["--model", args.model] if args.model else [])
    run = run_sampling_memory(argv)
    samples, peak = run["samples"], run["peak_kib"]
    stats = json.loads(stats_path.read_text())
    late = [rss for t, rss in samples if t >= 0.1 * samples[-1][0]] if samples else []
    result = {**stats, "source_frames": count, "seconds_of_video": args.seconds,
              "rss_start_mib": late[0] / 1024 if late else None, "rss_end_mib": late[-1] / 1024 if late else None,
              "peak_mib": peak / 1024, "command": " ".join(argv[1:])}
    print(f"\n### cleancut live on a paced {SIZE[0]}x{SIZE[1]} {RATE} frames/s file ({args.seconds:g} s)\n")
    print("| frames/s | latency p50 (ms) | latency p95 (ms) | dropped | frames | RSS at 10 % / end (MiB) | peak (MiB) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {stats['fps']:.1f} | {stats['latency_p50_ms']:.0f} | {stats['latency_p95_ms']:.0f} | "
          f"{stats['dropped']} of {count} | {stats['frames']} | {result['rss_start_mib']:.0f} / "
          f"{result['rss_end_mib']:.0f} | {result['peak_mib']:.0f} |")
    return result


def flicker(args) -> dict:
    from cleancut.api import Remover
    from cleancut.video.smooth import CausalSmoother, TemporalSmoother

    remover = Remover(model=args.model)
    rows = {}
    for video in VIDEOS:
        paths = davis_frames(args.data, video)
        frames = [Image.open(p).convert("RGB") for p in paths]
        gts = [np.asarray(Image.open(args.data / "davis16" / "gt" / (p.stem + ".png")).convert("L")) for p in paths]
        raw = [remover.predict_mask(f) for f in frames]
        causal = CausalSmoother()
        variants = {"none": raw, "causal (live)": [causal.push(f, a) for f, a in zip(frames, raw)],
                    "centred (file)": [a for _, a in TemporalSmoother().smooth(zip(frames, raw))]}
        rows[video] = {name: score(alphas, gts) for name, alphas in variants.items()}
    print("\n### Temporal smoothing: none vs causal (live) vs centred (file path)\n")
    print("| video | smoothing | IoU | maxF | MAE | flicker |")
    print("|---|---|---:|---:|---:|---:|")
    for video, variants in rows.items():
        for name, s in variants.items():
            print(f"| {video} | {name} | {s['IoU']:.4f} | {s['maxF']:.4f} | {s['MAE']:.4f} | {s['flicker']:.5f} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model name or .onnx (default: cleancut-default)")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--parts", nargs="+", choices=("speed", "flicker"), default=["speed", "flicker"])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the speed run's clip (default 60)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out" / "live.json")
    args = parser.parse_args(argv)
    print(f"machine: {machine()}")
    report = {"machine_before": machine()}
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        if "speed" in args.parts:
            report["speed"] = speed(args, Path(tmp))
        if "flicker" in args.parts:
            report["flicker"] = flicker(args)
    report["machine_after"] = machine()
    print(f"\nmachine after: {report['machine_after']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
