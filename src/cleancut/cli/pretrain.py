"""``cleancut pretrain``: masked-autoencoder pre-training on unlabelled photos, for ``train --init``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="pre-train a network as a masked autoencoder on unlabelled photos",
                       description="Self-supervised pre-training: the architecture, with reconstruction heads, learns "
                                   "to fill blanked patches of photos. Start segmentation training from it with "
                                   "cleancut train --init RUN (the same model section).")
    src = p.add_argument_group("photos (at least one)")
    src.add_argument("--images", nargs="+", default=[], metavar="DIR",
                     help="folders (searched recursively; gt/ skipped) or image files")
    src.add_argument("--data", nargs="+", default=[], metavar="ROOT",
                     help="labelled dataset root(s): their --split photos are used, the masks are not")
    src.add_argument("--split", default="train", help="split of --data to take photos from (default: train)")
    p.add_argument("--out", "-o", required=True, help="run folder")
    p.add_argument("--config", "-c", help="YAML config (model, data.size, optim, train sections are used)")
    p.add_argument("--arch", help="architecture (same as model.arch=...)")
    p.add_argument("--mask-ratio", type=float, default=0.5, help="share of patches blanked (default 0.5)")
    p.add_argument("--patch", type=int, default=16, help="patch size in pixels (default 16; divides data.size)")
    p.add_argument("--noise", type=float, default=0.1, help="std of the Gaussian noise added, in normalised units (default 0.1)")
    p.add_argument("--visible-weight", type=float, default=0.1, help="loss weight of visible pixels (default 0.1)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--max-images", type=int, help="use at most this many photos (random subset, seeded)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.epochs=5")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .._deps import require
    from ..errors import ConfigError

    if not args.images and not args.data:
        raise ConfigError("give the photos: --images DIR... and/or --data ROOT [--split train]")
    require("torch", "pre-training")
    from ..train.config import load_config
    from ..train.pretrain import list_images, pretrain, split_images

    overrides = list(args.overrides) + ([f"model.arch={args.arch}"] if args.arch else [])
    cfg = load_config(args.config, overrides)
    images = list_images(args.images) if args.images else []
    if args.data:
        images += split_images(args.data, args.split, cfg.train.seed)
    summary = pretrain(cfg, images, args.out, mask_ratio=args.mask_ratio, patch=args.patch, noise=args.noise,
                       visible_weight=args.visible_weight, max_images=args.max_images, resume=args.resume)
    print(f"pre-trained {summary['epochs']} epochs on {summary['images']} photos, reconstruction L1 "
          f"{summary['recon_loss']:.4f}; start training from it with: cleancut train --init {summary['run']} ...")
    return 0
