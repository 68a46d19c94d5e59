"""Choose a model's ``output_levels`` (the runtime's contrast stretch of the probability) on
validation data: the raw network runs once per image, then every candidate [low, high] is scored
with the project's metrics, exactly as the runtime would apply it (stretch at model resolution,
then resize to the ground truth).

    python benchmarks/output_levels.py runs/cutnet-ft/cutnet-ft.onnx --data ../shared/data \
        --split val val-objects --stride 3

The chosen pair goes into ``cleancut export --output-levels LOW HIGH``. The table prints MAE, maxF
and wF per split and the mean wF over the splits. The rule the default model's levels are chosen
by: the best mean wF among the stretches that lower no split's maxF by more than 0.005 against
the raw output (a stretch trades threshold-free quality for crisper masks; the same tolerance as
for quantised variants).
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from cleancut import datasets
from cleancut.evaluate import OnnxModel, _batches
from cleancut.metrics import SODMetrics
from cleancut.models import get_model
from cleancut.preprocess import resize_alpha

CANDIDATES = [(0.0, 1.0), (0.05, 0.95), (0.1, 0.9), (0.15, 0.85), (0.2, 0.8), (0.3, 0.7), (0.35, 0.65), (0.4, 0.6)]


def raw_predictions(model: str, pairs: list, threads: int | None) -> list[tuple[np.ndarray, np.ndarray]]:
    spec = dataclasses.replace(get_model(model), output_levels=(0.0, 1.0))
    onnx = OnnxModel(spec, threads=threads)
    out = []
    for x, gts in _batches(pairs, spec, 8):
        out.extend(zip(onnx.predict_batch(x), gts))
    return out


def score(preds, lo: float, hi: float) -> dict[str, float]:
    m = SODMetrics(curves=False)
    for prob, gt in preds:
        alpha = np.clip((prob - lo) / (hi - lo), 0.0, 1.0)
        m.add(resize_alpha(alpha, (gt.shape[1], gt.shape[0])), gt)
    return m.results()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="registered name, .onnx or .json")
    p.add_argument("--data", required=True)
    p.add_argument("--split", nargs="+", default=["val"])
    p.add_argument("--stride", type=int, default=1, help="score every n-th pair of each split")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)

    pairs = datasets.select([args.data], args.split)
    rows = {c: {} for c in CANDIDATES}
    for split in args.split:
        preds = raw_predictions(args.model, pairs[split][:: args.stride], args.threads)
        for c in CANDIDATES:
            rows[c][split] = score(preds, *c)
    head = " | ".join(f"{s} {k}" for s in args.split for k in ("MAE", "maxF", "wF"))
    print(f"| levels | {head} | mean wF |\n|---|" + "---:|" * (3 * len(args.split) + 1))
    mean_wf = {}
    for c, by_split in rows.items():
        mean_wf[c] = float(np.mean([by_split[s]["wF"] for s in args.split]))
        cells = " | ".join(f"{by_split[s][k]:.4f}" for s in args.split for k in ("MAE", "maxF", "wF"))
        print(f"| {c[0]:g} {c[1]:g} | {cells} | {mean_wf[c]:.4f} |")
    raw = rows[(0.0, 1.0)]
    allowed = [c for c in CANDIDATES if all(raw[s]["maxF"] - rows[c][s]["maxF"] <= 0.005 for s in args.split)]
    chosen = max(allowed, key=lambda c: mean_wf[c])
    print(f"\nchosen: --output-levels {chosen[0]:g} {chosen[1]:g} (mean wF {mean_wf[chosen]:.4f} vs raw "
          f"{mean_wf[(0.0, 1.0)]:.4f}; maxF within 0.005 of raw on every split; "
          f"{', '.join(f'{s}: {len(pairs[s][:: args.stride])}' for s in args.split)} pairs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
