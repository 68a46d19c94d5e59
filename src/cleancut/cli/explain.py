"""``cleancut explain``: probability, uncertainty (TTA, MC dropout), uncertain band and Grad-CAM in one figure."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="show where a model is unsure and what drove its decision (one figure)",
                       description="Draw the photo, the predicted probability, test-time-augmentation and Monte-Carlo-"
                                   "dropout uncertainty, the uncertain band and a Grad-CAM map. A training checkpoint "
                                   "gets every panel; an exported .onnx or registered model the torch-free ones.")
    p.add_argument("image", help="photo")
    p.add_argument("--model", "-m", required=True, help="checkpoint .pt or run folder (or an .onnx / registered name)")
    p.add_argument("--out", "-o", help="figure (default <stem>.explain.png beside the photo)")
    p.add_argument("--mc", type=int, default=16, help="Monte-Carlo dropout passes (default 16; 0 = off)")
    p.add_argument("--scales", type=float, nargs="+", default=[0.8, 1.0, 1.25],
                   help="test-time zooms (default 0.8 1.0 1.25; <1 pads the photo, >1 crops its centre)")
    p.add_argument("--no-flip", action="store_true", help="no mirrored test-time views")
    p.add_argument("--layer", help="Grad-CAM feature map (module name; default: the deepest encoder stage)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .._deps import require
    from ..errors import ConfigError

    p = Path(args.model)
    if p.suffix == ".pt" or p.is_dir():
        require("torch", "explaining a training checkpoint")
    require("matplotlib", "the explanation figure")
    from ._explain_figure import explain

    try:
        s = explain(args.image, args.model, args.out, mc=args.mc, flips=not args.no_flip, scales=tuple(args.scales),
                    layer=args.layer)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    print(f"wrote {s['figure']}: uncertain band {s['band_fraction']:.1%} of the photo "
          f"({s['band_per_foreground']:.2f} x the foreground area), TTA std mean {s['mean_std']:.4f} / p99 {s['p99_std']:.3f}"
          + (f", MC-dropout std mean {s['mc_mean_std']:.4f}" if s["mc_mean_std"] is not None else "")
          + (f", Grad-CAM mass on the subject {s['gradcam_in_foreground']:.0%}" if s["gradcam_in_foreground"] is not None else ""))
    return 0
