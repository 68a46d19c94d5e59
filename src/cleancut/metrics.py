"""The field's salient-object metrics, computed with the maintained ``pysodmetrics`` package.

Protocol (as in the DUTS / DIS benchmarks): the prediction is scored at ground-truth resolution as
uint8 0..255, the ground truth is thresholded at 128 (pysodmetrics does both the thresholding and the
min-max normalisation of the prediction). IoU and pixel accuracy are the binary versions (prediction
> 0.5 after that normalisation), averaged per image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._deps import require

# Display order and names used everywhere (tables, JSON, README).
METRIC_NAMES = [
    "MAE", "maxF", "meanF", "adpF", "wF", "Sm", "maxE", "meanE", "adpE", "IoU", "PixAcc",
]
# Whether higher is better (for "best" selection and table formatting).
HIGHER_IS_BETTER = {name: name != "MAE" for name in METRIC_NAMES}


def to_uint8(pred: np.ndarray) -> np.ndarray:
    """Float probability in [0, 1] (or uint8) -> uint8 0..255."""
    pred = np.asarray(pred)
    if pred.dtype == np.uint8:
        return pred
    return np.clip(np.rint(np.asarray(pred, np.float64) * 255.0), 0, 255).astype(np.uint8)


@dataclass
class SODMetrics:
    """Accumulates one prediction per image; ``results()`` returns the dataset-level figures."""

    curves: bool = True
    _m: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        sod = require("py_sod_metrics", "evaluation")
        self._m = {
            "mae": sod.MAE(),
            "wfm": sod.WeightedFmeasure(),
            "sm": sod.Smeasure(),
            "em": sod.Emeasure(),
            "v2": sod.FmeasureV2(
                metric_handlers={
                    "fm": sod.FmeasureHandler(with_dynamic=True, with_adaptive=True, beta=0.3),
                    "p": sod.PrecisionHandler(with_dynamic=True, with_adaptive=False),
                    "r": sod.RecallHandler(with_dynamic=True, with_adaptive=False),
                    "iou": sod.IOUHandler(with_dynamic=False, with_adaptive=False, with_binary=True),
                    "acc": sod.OverallAccuracyHandler(with_dynamic=False, with_adaptive=False, with_binary=True),
                }
            ),
        }
        self.count = 0

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """``pred``: float [0, 1] or uint8, ``gt``: uint8 mask 0..255, same ``HxW``."""
        pred = to_uint8(pred)
        gt = np.asarray(gt)
        if gt.dtype != np.uint8:
            gt = to_uint8(gt if gt.max() <= 1 else gt / 255.0)
        if pred.shape != gt.shape:
            raise ValueError(
                f"prediction {pred.shape} and ground truth {gt.shape} differ: score predictions at "
                "ground-truth resolution (resize the prediction first)"
            )
        for metric in self._m.values():
            metric.step(pred=pred, gt=gt)
        self.count += 1

    def results(self) -> dict[str, float]:
        if self.count == 0:
            raise ValueError("no predictions were added")
        v2 = self._m["v2"].get_results()
        fm = {"curve": np.asarray(v2["fm"]["dynamic"]), "adp": v2["fm"]["adaptive"]}
        em = self._m["em"].get_results()["em"]
        out = {
            "MAE": float(self._m["mae"].get_results()["mae"]),
            "maxF": float(fm["curve"].max()),
            "meanF": float(fm["curve"].mean()),
            "adpF": float(fm["adp"]),
            "wF": float(self._m["wfm"].get_results()["wfm"]),
            "Sm": float(self._m["sm"].get_results()["sm"]),
            "maxE": float(em["curve"].max()),
            "meanE": float(em["curve"].mean()),
            "adpE": float(em["adp"]),
            "IoU": float(v2["iou"]["binary"]),
            "PixAcc": float(v2["acc"]["binary"]),
        }
        return out

    def curve_data(self) -> dict[str, list[float]]:
        """Precision, recall and F-measure over the 256 thresholds (for the PR / F curves)."""
        r = self._m["v2"].get_results()
        return {
            "precision": [float(v) for v in r["p"]["dynamic"]],
            "recall": [float(v) for v in r["r"]["dynamic"]],
            "fmeasure": [float(v) for v in r["fm"]["dynamic"]],
        }


def format_table(rows: dict[str, dict[str, float]], names: list[str] | None = None) -> str:
    """Markdown table: one row per model/split, one column per metric."""
    names = names or METRIC_NAMES
    head = "| | " + " | ".join(names) + " |"
    sep = "|---|" + "---:|" * len(names)
    lines = [head, sep]
    for label, res in rows.items():
        lines.append(f"| {label} | " + " | ".join(
            f"{res[n]:.4f}" if n in res else "" for n in names) + " |")
    return "\n".join(lines)
