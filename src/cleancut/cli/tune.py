"""``cleancut tune``: hyperparameter search with Optuna (resumable SQLite study, pruning, summary)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="search hyperparameters with Optuna (needs cleancut[tune])",
                       description="Each trial is a training run of --config + overrides + values sampled from --space. "
                                   "The study is kept in --storage: running again adds --trials more trials to it; "
                                   "--trials 0 only prints the summary and redraws the plot.")
    p.add_argument("--space", help="search space YAML (config key -> distribution; see configs/tune-space.yaml); "
                                   "default: the one stored with the study")
    p.add_argument("--config", "-c", help="base training config (YAML)")
    p.add_argument("--trials", "-n", type=int, default=10, help="trials to run in this call (default 10; 0 = summary only)")
    p.add_argument("--sampler", choices=["grid", "random", "tpe"], default="tpe", help="default tpe")
    p.add_argument("--storage", default="runs/tune.db", help="SQLite file (or an Optuna storage URL); default runs/tune.db")
    p.add_argument("--study", required=True, help="study name inside the storage")
    p.add_argument("--prune", action="store_true", help="stop poor trials early (MedianPruner on the per-epoch monitor)")
    p.add_argument("--prune-startup", type=int, default=2, help="trials run in full before pruning starts (default 2)")
    p.add_argument("--prune-warmup", type=int, default=1, help="epochs of a trial that are never pruned (default 1)")
    p.add_argument("--out", "-o", help="folder for the trials' runs, summary.json and history.png (default runs/tune/<study>)")
    p.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="fixed config overrides for every trial")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .._deps import require
    from ..errors import ConfigError

    if args.trials < 0:
        raise ConfigError("--trials must be >= 0")
    require("torch", "tuning")
    require("optuna", "hyperparameter search")
    import optuna

    from ..train.tune import format_summary, run_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _, summary = run_study(args.space, args.config, trials=args.trials, study_name=args.study, storage=args.storage,
                           sampler=args.sampler, prune=args.prune, out=args.out, overrides=args.overrides,
                           seed=args.seed, prune_startup=args.prune_startup, prune_warmup=args.prune_warmup)
    print(format_summary(summary))
    print(f"wrote {summary['out']}/summary.json and {summary['out']}/history.png")
    return 0
