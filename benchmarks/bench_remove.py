"""Benchmark background removal on a folder of photos.

Prints, for one model:
  * per-image latency of the model alone (``Remover.predict_mask``) and of the whole path
    (decode + model + post-processing + PNG encode), median and p90, one image at a time;
  * throughput in images/s with N worker threads sharing one Remover, for each ``--jobs`` value;
  * peak resident memory of the process (``resource.getrusage``).

Example (the tiny test model; use ``--model cleancut-default`` for the real one)::

    python -m cleancut.testing /tmp/tiny-model
    python benchmarks/bench_remove.py /work/shared/data/oxford-pets/im --model /tmp/tiny-model/tiny.onnx --limit 20

Extra pipeline options can be given as ``--option name=value`` (e.g. ``--option alpha_matting=true``).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/common.py
from common import latency_summary  # noqa: E402


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / 1024.0 / 1024.0  # KiB on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="folder of photos (searched recursively)")
    parser.add_argument("--model", default=None, help="registered model name or .onnx path (default: cleancut-default)")
    parser.add_argument("--limit", type=int, default=20, help="number of photos (default: 20)")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2], help="thread counts for throughput (default: 1 2)")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    parser.add_argument("--warmup", type=int, default=2, help="untimed warm-up images (default: 2)")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="a RemoveOptions value, repeatable")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    from _photos import first_photos
    from cleancut import Remover
    from cleancut.io import encode_image, load_image
    from cleancut.options import options_from_mapping

    paths = first_photos(args.folder, args.limit)
    options = options_from_mapping(dict(o.split("=", 1) for o in args.option))
    remover = Remover(args.model, threads=args.threads)
    t0 = time.perf_counter()
    remover.load()
    load_s = time.perf_counter() - t0
    sizes = [load_image(p).size for p in paths]

    def full(path: Path) -> bytes:
        out = remover.remove(path, options)
        return encode_image(out, options.format, options.quality)

    for path in paths[: args.warmup]:
        full(path)

    model_times, full_times = [], []
    for path in paths:
        image = load_image(path)
        t = time.perf_counter()
        remover.predict_mask(image)
        model_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        full(path)
        full_times.append(time.perf_counter() - t)

    throughput = {}
    for jobs in args.jobs:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            t = time.perf_counter()
            list(pool.map(full, paths))
            throughput[jobs] = len(paths) / (time.perf_counter() - t)

    megapixels = [w * h / 1e6 for w, h in sizes]
    results = {
        "model": remover.spec.name, "input_size": list(remover.spec.input_size),
        "providers": remover.load().providers, "images": len(paths),
        "median_megapixels": float(np.median(megapixels)), "session_load_s": load_s,
        "model_latency": latency_summary(model_times), "full_latency": latency_summary(full_times),
        "throughput_images_per_s": {str(k): v for k, v in throughput.items()},
        "peak_rss_mb": _peak_rss_mb(), "cpu": platform.processor() or platform.machine(),
        "options": options.to_mapping(scope="request"),
    }
    print(f"model {results['model']} ({remover.spec.input_size[0]}x{remover.spec.input_size[1]}), "
          f"providers {', '.join(results['providers'])}; {len(paths)} images from {args.folder}, "
          f"median {results['median_megapixels']:.2f} MP; session load {load_s * 1000:.0f} ms")
    for label, key in (("model only", "model_latency"), ("full remove + PNG", "full_latency")):
        r = results[key]
        print(f"  {label:<18} median {r['median_ms']:7.1f} ms   p90 {r['p90_ms']:7.1f} ms")
    for jobs, rate in throughput.items():
        print(f"  throughput --jobs {jobs}: {rate:6.1f} images/s")
    print(f"  peak RSS {results['peak_rss_mb']:.0f} MB")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
