"""``cleancut train-edges``: train the learned edge stage of a model (see :mod:`cleancut.train.edges`)."""

from __future__ import annotations

import argparse

from .evaluate import DEFAULT_ROOTS

EPILOG = """examples:
  cleancut train-edges --data ../shared/data datasets/DUTS-TR --out runs/edges --minutes 60
  cleancut train-edges --resume --out runs/edges --minutes 60

The refiner learns to redraw the base model's edge from the photo's own pixels. The run folder
ends with refiner.onnx and refiner.json (the spec entry a model's JSON names as edge_refiner, with
the validation figures of the base model and of the refined alpha).
"""


def _erode(text: str) -> tuple[str, int]:
    name, _, px = text.partition("=")
    try:
        return name, int(px)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SET=PIXELS (e.g. oxford-pets=5), got {text!r}") from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-edges", help="train the learned edge stage of a model (needs cleancut[train])",
                       description="Train a small network that redraws a model's edge from the photo's own "
                                   "pixels along the uncertain band (the learned edge stage), on that model's own "
                                   "alphas over the training photos; validated through the product's path with "
                                   "the edge figures.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="run folder (checkpoints, log.jsonl, refiner.onnx + refiner.json)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--base", default="cleancut-default", metavar="MODEL",
                   help="the model whose edges are refined (default: %(default)s)")
    p.add_argument("--data", nargs="+", default=None, metavar="ROOT",
                   help="dataset roots (default: " + " and ".join(DEFAULT_ROOTS) + ")")
    p.add_argument("--split", default="train", help="training split (default: %(default)s)")
    p.add_argument("--val-split", default="duts-val", help="validation split (default: %(default)s)")
    p.add_argument("--max-val", type=int, default=200, metavar="N", help="validation photos (default: %(default)s)")
    p.add_argument("--label-erode", type=_erode, action="append", default=None, metavar="SET=PX",
                   help="shrink a set's training masks by PX pixels (default: oxford-pets=5, whose masks include "
                        "the trimap border); repeat for several sets")
    p.add_argument("--steps", type=int, default=4000, help="training steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="patches per step (default: %(default)s)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default: %(default)g)")
    p.add_argument("--width", type=int, default=24, help="channels of the hidden layers (default: %(default)s)")
    p.add_argument("--perturb", type=float, default=0.3,
                   help="share of patches whose alpha is a degraded label instead of the base model's "
                        "(default: %(default)g)")
    p.add_argument("--val-every", type=int, default=500, metavar="STEPS", help="default: %(default)s")
    p.add_argument("--minutes", type=float, default=None, help="stop after this many minutes (resumable)")
    p.add_argument("--cache-dir", default=".cache/train", help="training cache folder (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .._deps import require
    from ..errors import ConfigError

    require("torch", "cleancut train-edges")
    require("onnx", "cleancut train-edges")
    for name, value, low in (("--steps", args.steps, 1), ("--batch-size", args.batch_size, 1), ("--width", args.width, 4),
                             ("--val-every", args.val_every, 1), ("--max-val", args.max_val, 1)):
        if value < low:
            raise ConfigError(f"{name} must be at least {low}, got {value}")
    if not 0 <= args.perturb <= 1:
        raise ConfigError(f"--perturb must be from 0 to 1, got {args.perturb}")
    from ..train.edges import EdgeTrainConfig, train_refiner

    roots = args.data or [r for r in DEFAULT_ROOTS if Path(r).is_dir()]
    missing = [r for r in roots if not Path(r).is_dir()]
    if missing:
        raise ConfigError(f"--data {' '.join(missing)}: no such folder")
    erode = dict(args.label_erode) if args.label_erode else {"oxford-pets": 5}
    cfg = EdgeTrainConfig(base=args.base, roots=roots, train_split=args.split, val_split=args.val_split,
                          max_val=args.max_val, label_erode=erode, cache_dir=args.cache_dir, width=args.width,
                          batch_size=args.batch_size, steps=args.steps, lr=args.lr, perturb=args.perturb,
                          val_every=args.val_every, minutes=args.minutes, threads=args.threads)
    best = train_refiner(cfg, args.out, resume=args.resume)
    if best:
        print(f"best at step {best['step']}: Boundary IoU@0.5% {best['base/BIoU@0.5%']:.4f} -> {best['BIoU@0.5%']:.4f}, "
              f"fringe@0.5% {best['base/fringe@0.5%']:.4f} -> {best['fringe@0.5%']:.4f}, maxF {best['base/maxF']:.4f} -> "
              f"{best['maxF']:.4f}; {Path(args.out) / 'refiner.json'}")
    return 0
