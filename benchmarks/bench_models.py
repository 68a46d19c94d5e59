"""Latency of several models in one run, interleaved so that they share the same machine state.

For each model, per photo (decoded in memory beforehand):

* ``model``: ``session.run`` alone on the already preprocessed input (the network's cost);
* ``predict_mask``: ``Remover.predict_mask`` on the decoded photo, i.e. preprocessing (resize,
  normalisation or uint8 pass-through), the network and the resize of the mask back to the photo.

Models take turns on every photo (A, B, C, A, B, C, ...), so a background job slows them alike;
each turn starts with one untimed run, so that neither figure pays for the switch from another
model (a user runs one model: caches hold its weights).
Prints median and p90 per model and the ratio of each model's medians to the first one's.

Example (the v5-vs-v6 figures of MODEL_CARD.md; 0.15 MP photos)::

    python benchmarks/bench_models.py cleancut-default cleancut-v5 --photos ../shared/data/oxford-pets/im \\
        --min-mp 0.12 --max-mp 0.18 --limit 40 --threads 2
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/common.py
from common import latency_summary  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="registered names or .onnx paths (the first is the reference)")
    parser.add_argument("--photos", type=Path, required=True, help="folder of photos")
    parser.add_argument("--limit", type=int, default=40, help="photos timed (default: 40)")
    parser.add_argument("--min-mp", type=float, default=0.0, help="only photos of at least this many megapixels")
    parser.add_argument("--max-mp", type=float, default=1e9, help="only photos of at most this many megapixels")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default: 3)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    from cleancut import Remover
    from cleancut.io import load_image
    from cleancut.preprocess import to_input

    photos = []
    for path in sorted(args.photos.rglob("*")):
        if path.suffix.lower() not in (".jpg", ".jpeg", ".png"):
            continue
        image = load_image(path).convert("RGB")
        if args.min_mp <= image.width * image.height / 1e6 <= args.max_mp:
            photos.append(image)
        if len(photos) >= args.limit:
            break
    if not photos:
        print(f"no photos of {args.min_mp}-{args.max_mp} MP in {args.photos}", file=sys.stderr)
        return 1
    removers = [Remover(m, threads=args.threads) for m in args.models]
    sessions = [r.load() for r in removers]
    inputs = [[to_input(p, s.spec)[None] for p in photos] for s in sessions]
    times = {m: {"model": [], "predict_mask": []} for m in args.models}
    for rnd in range(args.warmup + 1):
        timed = rnd == args.warmup
        for i, photo in enumerate(photos if timed else photos[:1]):
            for name, remover, session, xs in zip(args.models, removers, sessions, inputs):
                session.run_batch(xs[i])  # untimed: the caches are this model's again after the others ran
                t = time.perf_counter()
                session.run_batch(xs[i])
                t1 = time.perf_counter()
                remover.predict_mask(photo)
                t2 = time.perf_counter()
                if timed:
                    times[name]["model"].append(t1 - t)
                    times[name]["predict_mask"].append(t2 - t1)
    mp = float(np.median([p.width * p.height / 1e6 for p in photos]))
    results = {"photos": len(photos), "median_megapixels": mp, "threads": args.threads,
               "cpu": platform.processor() or platform.machine(), "models": {}}
    ref = None
    print(f"{len(photos)} photos from {args.photos}, median {mp:.3f} MP; threads {args.threads or 'default'}")
    for name, spec_session in zip(args.models, sessions):
        row = {}
        for key, values in times[name].items():
            row[key] = latency_summary(values, quantiles=(90,))
        row["input"] = list(spec_session.spec.input_size)
        row["file_mb"] = spec_session.spec.path.stat().st_size / 1e6
        results["models"][name] = row
        ref = ref or row
        ratio = row["model"]["median_ms"] / ref["model"]["median_ms"]
        print(f"  {name:<28} {row['input'][0]}x{row['input'][1]}  {row['file_mb']:5.1f} MB  "
              f"model median {row['model']['median_ms']:6.1f} ms (p90 {row['model']['p90_ms']:6.1f}, "
              f"{ratio:.2f}x the first)   predict_mask median {row['predict_mask']['median_ms']:6.1f} ms "
              f"(p90 {row['predict_mask']['p90_ms']:6.1f})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
