"""Choose a model's output calibration on validation data: the runtime's ``output_levels``
(a contrast stretch, alpha = clip((p - low) / (high - low))), the graph's ``temperature``
(alpha = sigmoid(logit / T), strictly increasing: it sharpens without merging probabilities into
0 and 1) or the runtime's ``alpha_temperature`` (the same sigmoid, applied after the resize to
the photo's size, so the upsampling does not blur the sharpened edge again). The raw network runs
once per image, then every candidate is scored with the project's metrics, exactly as it would be
applied (levels and graph temperature at model resolution, then resized to the ground truth;
alpha temperature after that resize).

    python benchmarks/output_levels.py runs/cutnet-ft/cutnet-ft.onnx --data ../shared/data \
        --split val val-objects --stride 3

The choice goes into ``cleancut export --output-levels LOW HIGH``, ``--temperature T`` or
``--alpha-temperature T``. The
table prints MAE, maxF and wF per split and the mean wF over the splits. The rule: the best mean
wF among the candidates that lower no split's maxF by more than ``--max-maxf-drop`` against the
raw output (a stretch trades threshold-free quality for crisper masks). v7 and earlier were chosen
with 0.005 among the stretches only; v8 with 0.0025, temperatures included; v9 with 0.0025,
alpha temperatures included (see MODEL_CARD.md).
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from cleancut import datasets
from cleancut.evaluate import OnnxModel, _batches
from cleancut.metrics import SODMetrics
from cleancut.models import get_model
from cleancut.preprocess import finish_alpha

# (low, high, graph temperature, alpha temperature); the first is the raw output
CANDIDATES = [(0.0, 1.0, 1.0, 1.0), *((lo, 1.0 - lo, 1.0, 1.0) for lo in (0.05, 0.1, 0.15, 0.2, 0.3, 0.35, 0.4)),
              *((0.0, 1.0, t, 1.0) for t in (0.5, 0.33, 0.25, 0.2, 0.15)),
              *((0.0, 1.0, 1.0, t) for t in (0.5, 0.33, 0.25, 0.2, 0.15))]


def calibrate(prob: np.ndarray, lo: float, hi: float, temperature: float) -> np.ndarray:
    if temperature != 1.0:  # what the graph does to the logit: p = sigmoid(z) -> sigmoid(z / T)
        p = np.clip(prob.astype(np.float64), 1e-7, 1 - 1e-7)
        prob = (1.0 / (1.0 + np.exp(-np.log(p / (1 - p)) / temperature))).astype(np.float32)
    return np.clip((prob - lo) / (hi - lo), 0.0, 1.0)


def label(c: tuple[float, float, float, float]) -> str:
    if c[3] != 1.0:
        return f"alpha temperature {c[3]:g}"
    return f"levels {c[0]:g} {c[1]:g}" if c[2] == 1.0 else f"temperature {c[2]:g}"


def flag(c: tuple[float, float, float, float]) -> str:
    if c[3] != 1.0:
        return f"--alpha-temperature {c[3]:g}"
    return f"--output-levels {c[0]:g} {c[1]:g}" if c[2] == 1.0 else f"--temperature {c[2]:g}"


def raw_predictions(model: str, pairs: list, threads: int | None) -> list[tuple[np.ndarray, np.ndarray]]:
    spec = dataclasses.replace(get_model(model), output_levels=(0.0, 1.0))
    onnx = OnnxModel(spec, threads=threads)
    out = []
    for x, gts in _batches(pairs, spec, 8):
        out.extend(zip(onnx.predict_batch(x), gts))
    return out


def score(preds, lo: float, hi: float, temperature: float = 1.0, alpha_temperature: float = 1.0) -> dict[str, float]:
    m = SODMetrics(curves=False)
    for prob, gt in preds:
        alpha = calibrate(prob, lo, hi, temperature)
        m.add(finish_alpha(alpha, (gt.shape[1], gt.shape[0]), alpha_temperature), gt)
    return m.results()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="registered name, .onnx or .json")
    p.add_argument("--data", nargs="+", required=True, help="dataset root(s): with splits.csv, or DUTS")
    p.add_argument("--split", nargs="+", default=["val"])
    p.add_argument("--stride", type=int, default=1, help="score every n-th pair of each split")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--max-maxf-drop", type=float, default=0.0025,
                   help="largest maxF loss against the raw output allowed on any split (default: 0.0025)")
    args = p.parse_args(argv)

    pairs = datasets.select(args.data, args.split)
    rows = {c: {} for c in CANDIDATES}
    for split in args.split:
        preds = raw_predictions(args.model, pairs[split][:: args.stride], args.threads)
        for c in CANDIDATES:
            rows[c][split] = score(preds, *c)
    head = " | ".join(f"{s} {k}" for s in args.split for k in ("MAE", "maxF", "wF"))
    print(f"| calibration | {head} | mean wF |\n|---|" + "---:|" * (3 * len(args.split) + 1))
    mean_wf = {}
    for c, by_split in rows.items():
        mean_wf[c] = float(np.mean([by_split[s]["wF"] for s in args.split]))
        cells = " | ".join(f"{by_split[s][k]:.4f}" for s in args.split for k in ("MAE", "maxF", "wF"))
        print(f"| {label(c)} | {cells} | {mean_wf[c]:.4f} |")
    raw = rows[CANDIDATES[0]]
    allowed = [c for c in CANDIDATES
               if all(raw[s]["maxF"] - rows[c][s]["maxF"] <= args.max_maxf_drop for s in args.split)]
    chosen = max(allowed, key=lambda c: mean_wf[c])
    print(f"\nchosen: {flag(chosen)} (mean wF {mean_wf[chosen]:.4f} vs raw "
          f"{mean_wf[CANDIDATES[0]]:.4f}; maxF within {args.max_maxf_drop:g} of raw on every split; "
          f"{', '.join(f'{s}: {len(pairs[s][:: args.stride])}' for s in args.split)} pairs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
