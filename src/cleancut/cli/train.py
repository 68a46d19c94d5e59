"""``cleancut train``: train a model from a YAML config (any key overridable as key=value)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_ADV_WEIGHT = 0.01  # weight of the adversarial term with --adversarial (Hung et al. 2018 use 0.01)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a segmentation model (needs cleancut[train])",
                       description="Train a model. Every config key can be overridden: optim.lr=1e-3 data.size=320. "
                                   "Multi-process: torchrun --nproc_per_node N -m cleancut train ...")
    p.add_argument("--config", "-c", help="YAML config (see configs/); default: the run's own config with --resume")
    p.add_argument("--out", "-o", help="run folder (default: runs/<name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--init", help="start from pre-trained weights (a checkpoint or run folder, e.g. of cleancut pretrain)")
    p.add_argument("--adversarial", action="store_true",
                   help="adversarial training with a PatchGAN discriminator (adversarial.weight defaults to "
                        f"{DEFAULT_ADV_WEIGHT} with this flag; set it with adversarial.weight=W)")
    p.add_argument("--build-cache", action="store_true",
                   help="only decode the training pairs into data.cache_dir (memory-mapped arrays at data.cache_side) "
                        "and exit; a run builds it on first use too")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.epochs=5")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError

    config = args.config
    if args.resume:
        if not args.out:
            raise ConfigError("--resume needs --out RUN_FOLDER (the run to continue)")
        if not config:
            config = str(Path(args.out) / "config.yaml")
    from .._deps import require

    require("torch", "training")
    from ..train.config import load_config
    from ..train.loop import Trainer
    from ..train.methods import plugins_for

    cfg = load_config(config, args.overrides)
    if args.build_cache:
        return _build_cache(cfg)
    if args.adversarial and cfg.adversarial.weight <= 0:
        cfg.adversarial.weight = DEFAULT_ADV_WEIGHT
    out = args.out or str(Path("runs") / cfg.name)
    trainer = Trainer(cfg, out, resume=args.resume, init=args.init, plugins=plugins_for(cfg))
    if getattr(trainer, "init_report", None):
        print(trainer.init_report, file=sys.stderr)
    summary = trainer.fit()
    if summary.get("best") is not None:
        print(f"best {summary['monitor']} = {summary['best']:.4f} after {summary['epochs']} epochs; run folder {summary['run']}")
    else:
        print(f"trained {summary['epochs']} epochs; run folder {summary['run']}")
    return 0


def _build_cache(cfg) -> int:
    from ..errors import ConfigError
    from ..train.cache import open_cache
    from ..train.loop import select_data

    if not cfg.data.cache_dir:
        raise ConfigError("--build-cache needs data.cache_dir (e.g. data.cache_dir=.cache/train)")
    pairs, _ = select_data(cfg)
    cache = open_cache(pairs, cfg.data.cache_dir, cfg.data.cache_side, erode=cfg.data.label_erode)
    print(f"{len(cache)} training pairs at long side <= {cache.side} px, {cache.nbytes / 2**30:.2f} GiB: {cache.folder}")
    return 0
