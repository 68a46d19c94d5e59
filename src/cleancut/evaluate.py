"""Evaluate a model on a dataset under the field's protocol (see :mod:`cleancut.metrics`).

A model is anything with ``input_size``, ``channels`` and ``predict_batch(x) -> probs`` where ``x``
is a float32 ``[N, C, H, W]`` batch made by :func:`cleancut.preprocess.to_input` and ``probs`` is
``[N, H, W]`` in [0, 1]. :class:`OnnxModel` wraps an exported ONNX model (torch-free);
``cleancut.train.predict.TorchModel`` wraps a training checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Protocol

import numpy as np
from PIL import Image

from .datasets import Pair
from .edges import EdgeRefiner, finish_edges, resolve_stage
from .metrics import EDGE_METRIC_NAMES, REGION_METRIC_NAMES, SODMetrics, format_table
from .models import ModelSpec
from .preprocess import finish_alpha, to_input


class BatchModel(Protocol):
    spec: ModelSpec

    def predict_batch(self, x: np.ndarray) -> np.ndarray: ...


class OnnxModel:
    """An exported model run by the product's ONNX Runtime session, batch in, probabilities out."""

    def __init__(self, spec: ModelSpec, threads: int | None = None, providers=None):
        from .runtime import Session

        self.session = Session(spec, providers=providers, threads=threads)
        self.spec = spec

    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        return self.session.run_batch(x)


def _batches(pairs: list[Pair], spec: ModelSpec, batch_size: int) -> Iterable[tuple[np.ndarray, list[np.ndarray]]]:
    """Up to ``batch_size`` consecutive pairs whose inputs have one shape (a model with aspect
    'keep' runs each photo at a size of its own), in order."""
    xs, gts = [], []
    for pair in pairs:
        with Image.open(pair.image) as im:
            x = to_input(im.convert("RGB"), spec)
        with Image.open(pair.mask) as m:
            gt = np.asarray(m.convert("L"))
        if xs and (len(xs) == batch_size or x.shape != xs[0].shape):
            yield np.stack(xs), gts
            xs, gts = [], []
        xs.append(x)
        gts.append(gt)
    if xs:
        yield np.stack(xs), gts


def evaluate(model: BatchModel, pairs: list[Pair], batch_size: int = 8, progress: bool = False,
             edges: str = "auto") -> SODMetrics:
    """Score ``model`` on ``pairs``: predictions are resized to each ground truth's resolution (and
    sharpened there by the spec's ``alpha_temperature``, as :meth:`runtime.Session.predict` does;
    through the edge stage ``edges``, :data:`cleancut.edges.EDGE_STAGES`, with the photo)."""
    metrics = SODMetrics()
    stage = resolve_stage(edges, model.spec)
    refiner = EdgeRefiner(model.spec.edge_refiner) if stage == "learned" else None
    photos = iter(pairs)
    batches = _batches(pairs, model.spec, batch_size)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, total=None if model.spec.aspect == "keep" else (len(pairs) + batch_size - 1) // batch_size,
                       desc="evaluate", unit="batch")
    for x, gts in batches:
        probs = model.predict_batch(x)
        for prob, gt, given in zip(probs, gts, x):
            pair = next(photos)
            size = (gt.shape[1], gt.shape[0])
            if stage == "network":  # no photo needed
                metrics.add(finish_alpha(prob, size, model.spec.alpha_temperature), gt)
            else:  # as the runtime does it
                metrics.add(finish_edges(prob, _photo(pair, size), model.spec, stage, refiner, network_input=given), gt)
    return metrics


def _photo(pair: Pair, size: tuple[int, int]) -> Image.Image:
    with Image.open(pair.image) as im:
        photo = im.convert("RGB")
    if photo.size != size:
        raise ValueError(f"{pair.image}: the photo is {photo.size[0]}x{photo.size[1]}, its mask {size[0]}x{size[1]}")
    return photo


def plot_curves(curves: dict[str, dict[str, list[float]]], path: Path) -> None:
    """PR curve and F-measure-vs-threshold curve, one line per split/model."""
    from ._deps import require

    require("matplotlib", "curve plots")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for label, c in curves.items():
        ax1.plot(c["recall"], c["precision"], label=label)
        ax2.plot(np.linspace(0, 1, len(c["fmeasure"])), c["fmeasure"], label=label)
    ax1.set(xlabel="recall", ylabel="precision", title="Precision-recall", xlim=(0, 1), ylim=(0, 1.01))
    ax2.set(xlabel="threshold", ylabel="F-measure (beta^2 = 0.3)", title="F-measure vs threshold", xlim=(0, 1), ylim=(0, 1.01))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: dict[str, dict[str, float]], curves: dict[str, dict], out_dir: Path, meta: dict) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps({"meta": meta, "results": results, "curves": curves}, indent=1))
    plot_curves(curves, out_dir / "curves.png")
    tables = [format_table(results, REGION_METRIC_NAMES)]
    if any(name in res for res in results.values() for name in EDGE_METRIC_NAMES):
        tables.append("Edge (bands of 2 % and 0.5 % of the diagonal; fringe and bite: lower is better):\n\n"
                      + format_table(results, EDGE_METRIC_NAMES))
    return "\n\n".join(tables)
