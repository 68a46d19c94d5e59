"""``cleancut warmup``: pay the first-use costs now, e.g. right after installing or in a
Dockerfile, rather than on the first photo.

The costs are the ONNX Runtime session and first inference (well under a second) and, with
pymatting installed, the alpha-matting kernels, which numba compiles on a machine's first use
(about a minute) and caches on disk. ``cleancut serve`` does the same before it reports ready.
"""

from __future__ import annotations

import argparse
import sys

from ._options import add_options_to_parser, options_from_namespace
from ._notes import notes_to

STEPS = {"session": "load the model (ONNX Runtime session)", "inference": "first inference",
         "alpha_matting": "alpha matting and foreground estimation (numba kernels)"}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "warmup", help="pay first-use costs now (model, alpha-matting kernels)",
        description="Load the model and run it once, and compile the alpha-matting kernels when "
                    "pymatting is installed (about a minute on a machine's first run, cached on disk "
                    "afterwards), so that the first 'cleancut remove --alpha-matting' does not stall. "
                    "Prints how long each step took.")
    parser.add_argument("--no-matting", dest="matting", action="store_false",
                        help="skip alpha matting (default: warm it up when pymatting is installed)")
    add_options_to_parser(parser, scopes=("operator",))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..api import Remover
    from ..refine import matting_available

    options = options_from_namespace(args)
    remover = Remover(options.model, options.providers, options.threads)
    matting = args.matting and matting_available()
    with notes_to(lambda line: print(f"cleancut warmup: {line}", file=sys.stderr)):
        seconds = remover.warm_up(alpha_matting=matting)
    for step, value in seconds.items():
        print(f"{STEPS[step]:<58} {value:6.2f} s")
    if args.matting and not matting:
        print("alpha matting: not installed (pip install 'cleancut[matting]'), nothing to compile")
    return 0
