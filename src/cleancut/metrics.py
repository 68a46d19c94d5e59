"""The field's salient-object metrics, computed with the maintained ``pysodmetrics`` package.

Protocol (as in the DUTS / DIS benchmarks): the prediction is scored at ground-truth resolution as
uint8 0..255, the ground truth is thresholded at 128 (pysodmetrics does both the thresholding and the
min-max normalisation of the prediction). IoU and pixel accuracy are the binary versions (prediction
> 0.5 after that normalisation), averaged per image.

Edge figures (:func:`edge_figures`, :class:`EdgeMetrics`; part of :class:`SODMetrics` unless
``edges=False``). Region figures hardly move when a two-pixel fringe runs all around an object,
so the edge is scored on its own, in bands of half-width ``d`` = a share of the image diagonal
(2 %, Boundary IoU's default, and 0.5 %, about what a person sees at 100 %), at ground-truth
resolution and without min-max normalisation (the alpha a user gets):

* ``BIoU@r``: Boundary IoU (Cheng et al., CVPR 2021), ``|Gd & Pd| / |Gd | Pd|`` where ``Gd`` and
  ``Pd`` are the pixels of the ground truth (> 128) and of the prediction (alpha >= 0.5) within
  ``d`` (Euclidean) of their own contour. Both bands empty: 1.
* ``fringe@r``: mean predicted alpha on ground-truth background within ``d`` of the ground-truth
  contour: the old background kept beside the object. Lower is better.
* ``bite@r``: mean ``1 - alpha`` on ground-truth object within ``d`` of its contour: the object's
  edge lost. Lower is better.

A contour is where object meets background: the photo's frame is not an edge (an object cut by
the border of the photo has no boundary there; the reference implementation of Boundary IoU pads
the mask with background and counts the frame). Each figure is the mean over images; an image
without the band a figure needs (no object, or no background) is left out of that figure's mean.
No package on PyPI implements these (pysodmetrics has multi-scale IoU, not Boundary IoU; the
Boundary IoU API is COCO-oriented and not on PyPI), so they are written here, on scipy's exact
Euclidean distance transform.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._deps import require

#: the band half-widths of the edge figures, as shares of the image diagonal
EDGE_RATIOS = (0.02, 0.005)


def _ratio_label(ratio: float) -> str:
    return f"{ratio * 100:g}%"


#: the edge figures' names, per band width (``BIoU@2%``, ``fringe@2%``, ``bite@2%``, ``BIoU@0.5%`` ...)
EDGE_METRIC_NAMES = [f"{what}@{_ratio_label(r)}" for r in EDGE_RATIOS for what in ("BIoU", "fringe", "bite")]
# Display order and names used everywhere (tables, JSON, README).
REGION_METRIC_NAMES = [
    "MAE", "maxF", "meanF", "adpF", "wF", "Sm", "maxE", "meanE", "adpE", "IoU", "PixAcc",
]
METRIC_NAMES = REGION_METRIC_NAMES + EDGE_METRIC_NAMES
_LOWER_IS_BETTER = ("MAE", "fringe", "bite")
# Whether higher is better (for "best" selection and table formatting).
HIGHER_IS_BETTER = {name: not name.startswith(_LOWER_IS_BETTER) for name in METRIC_NAMES}


def to_uint8(pred: np.ndarray) -> np.ndarray:
    """Float probability in [0, 1] (or uint8) -> uint8 0..255."""
    pred = np.asarray(pred)
    if pred.dtype == np.uint8:
        return pred
    return np.clip(np.rint(np.asarray(pred, np.float64) * 255.0), 0, 255).astype(np.uint8)


def binary(mask: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """A mask as bool: uint8 at ``round(threshold * 255)`` and above (128 for 0.5, the ground
    truth's protocol), float at ``threshold`` and above; bool as it is."""
    mask = np.asarray(mask)
    if mask.dtype == bool:
        return mask
    if mask.dtype == np.uint8:
        return mask >= round(threshold * 255)
    return mask >= threshold


def band_width(shape: tuple[int, ...], ratio: float = 0.02, minimum: int = 1) -> int:
    """Band half-width in pixels: ``ratio`` of the image diagonal (at least ``minimum``)."""
    return max(minimum, int(round(ratio * float(np.hypot(*shape[:2])))))


def inside_distance(mask: np.ndarray) -> np.ndarray:
    """For each pixel of ``mask``, its Euclidean distance to the nearest pixel outside it (a pixel
    beside the contour: 1); 0 outside the mask. Without any pixel outside (a full mask), there is
    no contour: infinity everywhere. The photo's frame is not a contour."""
    mask = np.asarray(mask, bool)
    if mask.all():
        return np.full(mask.shape, np.inf)
    if not mask.any():
        return np.zeros(mask.shape)
    ndimage = require("scipy.ndimage", "the edge figures (Boundary IoU, fringe, bite)")
    return ndimage.distance_transform_edt(mask)


def inner_band(mask: np.ndarray, d: float) -> np.ndarray:
    """The pixels of ``mask`` within ``d`` pixels (Euclidean) of its contour."""
    mask = np.asarray(mask, bool)
    return mask & (inside_distance(mask) <= d)


def boundary_iou(pred: np.ndarray, gt: np.ndarray, ratio: float = 0.02, threshold: float = 0.5) -> float:
    """Boundary IoU (Cheng et al., CVPR 2021) of one prediction (binarised at ``threshold``) against
    its ground truth (> 128), bands of ``ratio`` x the diagonal; see the module docstring."""
    return edge_figures(pred, gt, (ratio,), threshold)[f"BIoU@{_ratio_label(ratio)}"]


def edge_figures(pred: np.ndarray, gt: np.ndarray, ratios: tuple[float, ...] = EDGE_RATIOS,
                 threshold: float = 0.5) -> dict[str, float]:
    """``BIoU``, ``fringe`` and ``bite`` of one prediction at each band width in ``ratios`` (see the
    module docstring). ``pred``: alpha, float in [0, 1] or uint8; ``gt``: uint8 0..255 or bool, the
    same shape. A figure without its band (no object, or no background) is NaN."""
    alpha = np.asarray(pred, np.float32) / 255.0 if np.asarray(pred).dtype == np.uint8 else np.asarray(pred, np.float32)
    if alpha.shape != np.shape(gt):
        raise ValueError(f"prediction {alpha.shape} and ground truth {np.shape(gt)} differ")
    g, p = binary(gt, 128 / 255), binary(alpha, threshold)
    g_in, p_in, g_out = inside_distance(g), inside_distance(p), inside_distance(~g)
    out = {}
    for ratio in ratios:
        d, label = band_width(g.shape, ratio), _ratio_label(ratio)
        gb, pb = g & (g_in <= d), p & (p_in <= d)
        union = np.count_nonzero(gb | pb)
        out[f"BIoU@{label}"] = 1.0 if union == 0 else np.count_nonzero(gb & pb) / union
        outer = ~g & (g_out <= d)
        out[f"fringe@{label}"] = float(alpha[outer].mean()) if outer.any() else float("nan")
        out[f"bite@{label}"] = float(1.0 - alpha[gb].mean()) if gb.any() else float("nan")
    return out


class EdgeMetrics:
    """Accumulates :func:`edge_figures` per image; ``results()`` gives their means over images."""

    def __init__(self, ratios: tuple[float, ...] = EDGE_RATIOS):
        self.ratios = tuple(ratios)
        self.per_image: list[dict[str, float]] = []

    def add(self, pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
        figures = edge_figures(pred, gt, self.ratios)
        self.per_image.append(figures)
        return figures

    def results(self) -> dict[str, float]:
        if not self.per_image:
            raise ValueError("no predictions were added")
        out = {}
        for name in self.per_image[0]:
            values = np.array([f[name] for f in self.per_image], np.float64)
            values = values[~np.isnan(values)]
            out[name] = float(values.mean()) if values.size else float("nan")
        return out


@dataclass
class SODMetrics:
    """Accumulates one prediction per image; ``results()`` returns the dataset-level figures (the
    region figures, and with ``edges`` the edge figures of :class:`EdgeMetrics`)."""

    curves: bool = True
    edges: bool = True
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
        self._edges = EdgeMetrics() if self.edges else None
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
        if self._edges is not None:
            self._edges.add(pred, gt)
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
        if self._edges is not None:
            out.update(self._edges.results())
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
