"""``cleancut finetune``: fine-tune a registered model on a few corrected photos and register it
under a new name (see :mod:`cleancut.train.finetune`)."""

from __future__ import annotations

import argparse
import contextlib
import signal
from pathlib import Path

from .evaluate import DEFAULT_ROOTS

EPILOG = """examples:
  cleancut finetune my-photos/ --name products          # my-photos/im/*.jpg + my-photos/gt/*.png
  cleancut finetune examples.zip --name products --minutes 20 --replace
  cleancut remove shots/*.jpg --model products -o cutouts/
  cleancut models remove products

DATA holds im/<stem>.jpg photos and gt/<stem>.png masks (255 = foreground, the photo's size):
the layout cleancut train reads, or the zip the web page's "Save as example" set downloads as.
The model is registered in the user model folder ($CLEANCUT_MODELS_DIR, default
~/.cache/cleancut/models); nothing is written there unless the run succeeds.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="teach a model your photos: fine-tune it on a few corrected ones "
                                        "(needs cleancut[train])",
                       description="Fine-tune a registered model on a few photos with corrected masks, on the "
                                   "CPU within a time budget, export it as int8 like its base and register it "
                                   "under NAME for remove, video, live, serve, Remover(NAME) and cleancut models. "
                                   "Prints the figures of the base and of the new model on the held-out photos.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", metavar="DATA", help="folder with im/ (photos) and gt/ (masks), or a zip of them")
    p.add_argument("--name", required=True, help="name to register the new model under (letters, digits, . _ -)")
    p.add_argument("--base", default=None, metavar="MODEL",
                   help="registered model (or exported .onnx made by cleancut) to start from (default: "
                        "cleancut-default)")
    p.add_argument("--minutes", type=float, default=10.0, metavar="M",
                   help="time budget of the whole run in minutes, training plus export (default: %(default)g)")
    p.add_argument("--val", type=float, default=0.2, metavar="FRACTION",
                   help="fraction of the pairs held out (at least one) for early stopping and the before / after "
                        "figures (default: %(default)g)")
    p.add_argument("--replay", nargs="+", metavar="ROOT", default=None,
                   help="dataset roots whose training photos are replayed against forgetting (default: those of "
                        + " and ".join(DEFAULT_ROOTS) + " that exist here); without any, a penalty keeps the "
                        "weights near the base's")
    p.add_argument("--no-replay", action="store_true",
                   help="replay nothing: keep the weights near the base's with the L2-SP penalty instead")
    p.add_argument("--replace", action="store_true", help="replace your model of the same name if there is one")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out split and of training (default: 0)")
    p.set_defaults(func=run)


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM raises KeyboardInterrupt, so the run cleans up as after Ctrl-C. The signal can land
    inside a library that turns the interrupt into an error of its own (the ONNX exporter, ONNX
    Runtime, torch's file writers): whatever fails after a SIGTERM is reported as the interrupt."""
    terminated = False

    def interrupt(signum, frame):
        nonlocal terminated
        terminated = True
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
        installed = True
    except ValueError:  # not the main thread: leave the signal alone
        installed = False
    try:
        yield
    except Exception as exc:
        if terminated:
            raise KeyboardInterrupt from exc
        raise
    finally:
        if installed:
            signal.signal(signal.SIGTERM, previous)


def run(args: argparse.Namespace) -> int:
    from .._deps import require
    from ..errors import ConfigError

    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {args.threads}")
    if args.no_replay and args.replay:
        raise ConfigError("--replay and --no-replay exclude each other; give one")
    missing = [r for r in args.replay or [] if not Path(r).is_dir()]
    if missing:
        raise ConfigError(f"--replay {' '.join(missing)}: no such folder (expected dataset roots, e.g. "
                          f"{' '.join(DEFAULT_ROOTS)})")
    require("torch", "cleancut finetune")
    require("onnx", "cleancut finetune")
    require("albumentations", "cleancut finetune")
    from ..train.finetune import finetune

    roots = [] if args.no_replay else (args.replay if args.replay else [r for r in DEFAULT_ROOTS if Path(r).is_dir()])
    with _terminate_as_interrupt():  # SIGTERM cleans up like Ctrl-C: nothing is left half-written
        result = finetune(args.data, args.name, base=args.base, minutes=args.minutes, val=args.val,
                          replay_roots=roots, replace=args.replace, threads=args.threads, seed=args.seed)
    print(result["table"])
    print(f"\n{result['name']}: {result['train']} photos learnt in {result['minutes']:.1f} min "
          f"({result['epochs']} epochs, best {result['best_epoch']}); registered as {result['spec']}")
    print(f"use it: cleancut remove PHOTO --model {result['name']}  (or cleancut video / live / serve --model "
          f"{result['name']}, Remover('{result['name']}'))")
    return 0
