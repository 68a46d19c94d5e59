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
import onnx
import onnxruntime as ort
from onnxruntime import quantization as q
from PIL import Image

from cleancut import datasets
from cleancut.evaluate import OnnxModel, evaluate
from cleancut.models import ModelSpec, file_sha256, get_model
from cleancut.preprocess import to_input

METRICS = ("MAE", "maxF", "wF")


class Calibration(q.CalibrationDataReader):
    """Preprocessed training images, one per batch, exactly as the runtime feeds them."""

    def __init__(self, spec: ModelSpec, pairs: list[datasets.Pair]):
        self.spec, self.pairs, self.i = spec, pairs, 0

    def get_next(self):
        if self.i >= len(self.pairs):
            return None
        with Image.open(self.pairs[self.i].image) as im:
            x = to_input(im.convert("RGB"), self.spec)[None]
        self.i += 1
        return {self.spec.input_name: x}

    def rewind(self):
        self.i = 0


def write_variant(spec: ModelSpec, model_path: Path, tag: str) -> ModelSpec:
    """A JSON spec beside ``model_path`` (fp32 spec, new name/file/sha256) and the loaded spec."""
    data = spec.to_json()
    for key in ("metrics", "parity"):  # figures of the fp32 export, not of this file
        data.pop(key, None)
    data.update(name=f"{spec.name}-{tag}", file=model_path.name, sha256=file_sha256(model_path),
                description=f"{spec.name} ({tag}, made by benchmarks/quantize.py)",
                source_sha256=file_sha256(spec.path))
    model_path.with_suffix(".json").write_text(json.dumps(data, indent=1))
    return get_model(model_path)


VARIANTS = ("int8-static-u8", "int8-static-s8", "int8-dynamic", "fp16")


def outside_network(path: Path) -> list[str]:
    """Names of the nodes ``cleancut export`` put around the network (its graph names the network's
    own nodes ``/net/...``): the uint8 prologue, the resize to the input size, the temperature and
    the sigmoid."""
    return [n.name for n in onnx.load(str(path)).graph.node if not n.name.startswith("/net/")]


def depthwise_weights(path: Path) -> list[str]:
    """The weight initialisers of the depthwise convolutions (``group`` > 1) of an ONNX graph."""
    names = []
    for node in onnx.load(str(path)).graph.node:
        group = next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "group"), 1)
        if node.op_type == "Conv" and group > 1:
            names.append(node.input[1])
    return names


def make_variants(spec: ModelSpec, calib: list[datasets.Pair], out: Path, reduce_range: bool = False,
                  only: tuple[str, ...] = VARIANTS, network_only: bool = False,
                  full_range_depthwise: bool = False) -> dict[str, ModelSpec | str]:
    """Each variant's spec (those named in ``only``), or the error text when ONNX Runtime's tooling
    could not make it. ``network_only``: the static variants leave the nodes around the network in
    float (see :func:`outside_network`), so the output probability is not rounded to 8 bits.
    ``full_range_depthwise``: with ``reduce_range``, the depthwise convolutions' weights keep all 8
    bits (per channel): ONNX Runtime's depthwise kernels widen both operands to 16 bits before
    multiplying, so only the GEMM-based convolutions can saturate on x86 CPUs without VNNI."""
    stem = out / spec.name
    pre = Path(f"{stem}-pre.onnx")
    q.quant_pre_process(str(spec.path), str(pre))  # shape inference + graph cleanup, as ORT advises
    exclude = outside_network(pre) if network_only else []
    extra = {}
    if reduce_range and full_range_depthwise:
        extra["TensorQuantOverrides"] = {w: [{"reduce_range": False, "axis": 0}] for w in depthwise_weights(pre)}

    def static(activations):
        return lambda dst: q.quantize_static(
            str(pre), str(dst), Calibration(spec, calib), quant_format=q.QuantFormat.QDQ, per_channel=True,
            activation_type=activations, weight_type=q.QuantType.QInt8, reduce_range=reduce_range,
            nodes_to_exclude=exclude, extra_options=extra)

    makers = {  # u8 activations: ORT fuses every QDQ conv into QLinearConv on x86; s8: only some
        "int8-static-u8": static(q.QuantType.QUInt8),
        "int8-static-s8": static(q.QuantType.QInt8),
        "int8-dynamic": lambda dst: q.quantize_dynamic(
            str(pre), str(dst), per_channel=True, weight_type=q.QuantType.QInt8, reduce_range=reduce_range),
        "fp16": lambda dst: onnx.save(_fp16(spec.path), str(dst)),
    }
    variants: dict[str, ModelSpec | str] = {"fp32": spec}
    for tag, make in makers.items():
        if tag not in only:
            continue
        dst = Path(f"{stem}-{tag}.onnx")
        try:
            make(dst)
            ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])  # does ORT run it?
            variants[tag] = write_variant(spec, dst, tag)
        except Exception as exc:  # report and go on: each tool may reject this graph
            variants[tag] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    return variants


def _fp16(path: Path) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)


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
