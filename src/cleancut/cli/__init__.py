"""The ``cleancut`` command: one parser, one sub-command per module in this package.

Each module ``cleancut/cli/<name>.py`` defines ``register(subparsers)``, which adds its parser and
sets ``func`` (called with the parsed namespace, returns an exit code). Modules import heavy
libraries inside ``func`` only, so ``cleancut --help`` stays fast and torch-free.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from ..errors import CleancutError

# Order in --help; modules not listed come after, alphabetically.
_ORDER = ["remove", "video", "live", "batch", "models", "serve", "warmup", "train", "finetune", "distill", "evaluate", "export", "pretrain", "tune", "explain"]


def _command_modules() -> list[str]:
    found = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    return sorted(found, key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n))


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="cleancut",
        description="Remove photo backgrounds with a model cleancut trains itself.",
    )
    parser.add_argument("--version", action="version", version=f"cleancut {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _command_modules():
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CleancutError as exc:
        print(f"cleancut {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"cleancut {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
