"""``cleancut evaluate``: the field's metrics for a model (ONNX or checkpoint) on a dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..options import EDGE_STAGES

DEFAULT_ROOTS = ("datasets", "../shared/data")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score a model with MAE, F-beta, S/E-measure, weighted F, IoU and the edge "
                                        "figures (Boundary IoU, fringe, bite)",
                       description="Evaluate under the field's protocol (pysodmetrics, ground truth at 128, "
                                   "prediction scored at ground-truth resolution), and the edge: Boundary IoU, "
                                   "fringe and bite in bands of 2 %% and 0.5 %% of the diagonal (cleancut.metrics).")
    p.add_argument("model", help="registered model name, exported .onnx, checkpoint .pt or run folder")
    p.add_argument("--data", "-d", nargs="+", default=None,
                   help="dataset root(s) in the DUTS layout (default: those of " + " and ".join(DEFAULT_ROOTS)
                        + " that exist here: the DUTS download and the shared data)")
    p.add_argument("--split", "-s", nargs="+", default=["val"],
                   help="split(s) from the root's splits.csv (default: val); 'all' = every pair")
    p.add_argument("--stride", type=int, default=1,
                   help="score every k-th pair of each split (a strided subset; default: 1 = all)")
    p.add_argument("--edges", choices=EDGE_STAGES, default="auto",
                   help="the edge stage the prediction goes through, as with cleancut remove --edges (default: "
                        "auto, the model's default)")
    p.add_argument("--out", "-o", help="report folder for metrics.json and curves.png (default: <model>-eval)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads")
    p.add_argument("--size", type=int, default=None,
                   help="checkpoints only: run at this input size instead of the training size (multiple of 32)")
    p.set_defaults(func=run)


def load_model(name: str, threads: int | None = None, size: int | None = None):
    """An object with ``spec`` and ``predict_batch``, for ONNX models and torch checkpoints alike."""
    from ..errors import ConfigError

    p = Path(name)
    if size is not None and (size < 32 or size % 32):
        raise ConfigError(f"--size must be a multiple of 32, got {size}")
    if p.suffix == ".pt" or (p.is_dir() and (p / "checkpoints").is_dir()):
        from .._deps import require

        require("torch", "evaluating a training checkpoint")
        from ..train.predict import TorchModel

        return TorchModel.from_checkpoint(p, size=size)
    if size is not None:
        raise ConfigError("--size applies to checkpoints; an exported model runs at the size it was exported at "
                          "(re-export it with cleancut export --size)")
    from ..evaluate import OnnxModel
    from ..models import get_model

    return OnnxModel(get_model(name), threads=threads)


def run(args: argparse.Namespace) -> int:
    from .. import datasets
    from ..errors import ConfigError, DatasetError
    from ..edges import resolve_stage
    from ..evaluate import evaluate, write_report

    if args.stride < 1:
        raise ConfigError(f"--stride must be at least 1, got {args.stride}")
    data = args.data or [root for root in DEFAULT_ROOTS if Path(root).is_dir()]
    if not data:
        raise DatasetError(f"no dataset root: none of {', '.join(DEFAULT_ROOTS)} is here; pass --data ROOT")
    model = load_model(args.model, args.threads, args.size)
    selected = datasets.select(data, args.split)
    results, curves = {}, {}
    for split, pairs in selected.items():
        if not pairs:
            raise DatasetError(f"split '{split}' has no pairs in {data} (check splits.csv, or use --split all)")
        pairs = pairs[::args.stride]
        m = evaluate(model, pairs, batch_size=args.batch_size, progress=True, edges=args.edges)
        label = f"{split} ({len(pairs)}" + (f", 1 in {args.stride})" if args.stride > 1 else ")")
        results[label] = m.results()
        curves[split] = m.curve_data()
    out = Path(args.out) if args.out else Path(f"{Path(args.model).stem}-eval")
    meta = {"model": args.model, "data": data, "splits": args.split, "stride": args.stride,
            "edges": resolve_stage(args.edges, model.spec),
            "input_size": list(model.spec.input_size)}
    print(write_report(results, curves, out, meta))
    print(f"wrote {out / 'metrics.json'} and {out / 'curves.png'}")
    return 0
