"""Quantised variants of a cleancut model, measured: int8 static (QDQ), int8 dynamic and fp16.

Every variant is made with ONNX Runtime's own tooling, written with a JSON spec beside it (so
``cleancut evaluate <variant>.onnx`` works too) and scored with the project's evaluation code
(``cleancut.evaluate``, the spec's ``output_levels`` applied) on each split. A variant passes when
its maxF is within ``--tolerance`` (0.005) of the fp32 model's on every split. Also reported:
single-image ``session.run`` latency (median / p90) with 1 and 2 intra-op threads, and file size.

    nice -n 10 .venv/bin/python benchmarks/quantize.py --data ../shared/data --out benchmarks/out/quantize
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from cleancut import datasets
from cleancut.evaluate import OnnxModel, evaluate
from cleancut.models import ModelSpec, file_sha256, get_model
from cleancut.preprocess import to_input
# the variants are made in the package (cleancut finetune quantises its models the same way)
from cleancut.train.quantize import VARIANTS, depthwise_weights, make_variants, outside_network  # noqa: F401

METRICS = ("MAE", "maxF", "wF")


def latency(spec: ModelSpec, x: np.ndarray, threads: int, runs: int) -> dict[str, float]:
    """Median / p90 milliseconds of one ``session.run`` on one preprocessed image."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(str(spec.path), sess_options=opts, providers=["CPUExecutionProvider"])
    feed = {spec.input_name: x[None]}
    for _ in range(10):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t) * 1000)
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90))}


def measure(spec: ModelSpec, splits: dict[str, list], x: np.ndarray, runs: int, threads: int | None) -> dict:
    model = OnnxModel(spec, threads=threads)
    row = {"file": str(spec.path), "size_kb": spec.path.stat().st_size / 1024, "splits": {}}
    for split, pairs in splits.items():
        res = evaluate(model, pairs).results()
        row["splits"][split] = {k: float(res[k]) for k in METRICS}
    row["latency"] = {f"{t}t": latency(spec, x, t, runs) for t in (1, 2)}
    return row


def table(rows: dict[str, dict], splits: list[str]) -> str:
    head = ["variant", "size KB"] + [f"{s} {m}" for s in splits for m in (*METRICS, "dmaxF")]
    head += ["1t med/p90 ms", "2t med/p90 ms", "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for tag, r in rows.items():
        if "error" in r:
            lines.append(f"| {tag} | " + " | ".join(["-"] * (len(head) - 2)) + f" | not made: {r['error']} |")
            continue
        cells = [tag, f"{r['size_kb']:.0f}"]
        for s in splits:
            m = r["splits"][s]
            cells += [f"{m['MAE']:.4f}", f"{m['maxF']:.4f}", f"{m['wF']:.4f}", f"{r['delta_maxF'][s]:+.4f}"]
        cells += [f"{r['latency'][k]['median_ms']:.1f} / {r['latency'][k]['p90_ms']:.1f}" for k in ("1t", "2t")]
        cells.append(r["verdict"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="cleancut-default", help="registered name or .onnx path (fp32)")
    ap.add_argument("--data", nargs="+", default=["../shared/data"],
                    help="dataset root(s): with splits.csv, or DUTS in its official layout")
    ap.add_argument("--splits", nargs="+", default=["val", "val-objects"])
    ap.add_argument("--calib-split", default="train")
    ap.add_argument("--calib", type=int, default=160, help="calibration images (random, seed 0)")
    ap.add_argument("--runs", type=int, default=100, help="timed session.run calls per thread count")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads for evaluation")
    ap.add_argument("--reduce-range", action="store_true",
                    help="7-bit int8 weights: avoids u8*s8 saturation on x86 CPUs without VNNI")
    ap.add_argument("--full-range-depthwise", action="store_true",
                    help="with --reduce-range: the depthwise convolutions keep 8-bit weights (their kernels "
                         "cannot saturate; only the GEMM-based convolutions need the 7 bits)")
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                    help="which variants to make and score (default: all)")
    ap.add_argument("--tolerance", type=float, default=0.005, help="largest |maxF delta| that passes")
    ap.add_argument("--network-only", action="store_true",
                    help="static variants: quantise the network only; the nodes cleancut export puts around it "
                         "(uint8 prologue, resize, temperature, sigmoid) stay float")
    ap.add_argument("--out", default="benchmarks/out/quantize")
    args = ap.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = get_model(args.model)
    spec.verify()
    selected = datasets.select(args.data, [*args.splits, args.calib_split])
    splits = {s: selected[s] for s in args.splits}
    calib = random.Random(0).sample(selected[args.calib_split], min(args.calib, len(selected[args.calib_split])))
    with Image.open(splits[args.splits[0]][0].image) as im:
        x = to_input(im.convert("RGB"), spec)

    rows: dict[str, dict] = {}
    for tag, variant in make_variants(spec, calib, out, args.reduce_range, tuple(args.variants),
                                              args.network_only, args.full_range_depthwise).items():
        if isinstance(variant, str):
            rows[tag] = {"error": variant}
            print(f"{tag}: not made ({variant})", flush=True)
            continue
        print(f"{tag}: evaluating {variant.path.name}", flush=True)
        rows[tag] = measure(variant, splits, x, args.runs, args.threads)
    base = rows["fp32"]["splits"]
    for tag, r in rows.items():
        if "error" in r:
            continue
        r["delta_maxF"] = {s: r["splits"][s]["maxF"] - base[s]["maxF"] for s in args.splits}
        ok = all(abs(d) <= args.tolerance for d in r["delta_maxF"].values())
        r["verdict"] = "reference" if tag == "fp32" else ("PASS" if ok else "FAIL")

    print(table(rows, args.splits))
    for tag, r in rows.items():
        if tag != "fp32":
            deltas = ", ".join(f"{s} {d:+.4f}" for s, d in r.get("delta_maxF", {}).items())
            print(f"{tag}: {r.get('verdict', 'not made')} (maxF delta vs fp32: {deltas or r.get('error')}; "
                  f"passes when every |delta| <= {args.tolerance})")
    meta = {"model": args.model, "model_sha256": file_sha256(spec.path), "data": args.data,
            "splits": {s: len(p) for s, p in splits.items()},
            "calibration": {"split": args.calib_split, "images": len(calib)}, "reduce_range": args.reduce_range,
            "network_only": args.network_only, "full_range_depthwise": args.full_range_depthwise,
            "latency_runs": args.runs, "tolerance": args.tolerance, "onnxruntime": ort.__version__}
    (out / "quantize.json").write_text(json.dumps({"meta": meta, "variants": rows}, indent=1))
    print(f"wrote {out / 'quantize.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
