"""``cleancut models``: list the registered (bundled) models."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "models", help="list the registered models",
        description="List the models bundled with cleancut (the default is marked with *). Any "
                    "exported model can also be used by passing its .onnx path to --model.")
    parser.add_argument("--json", action="store_true", help="print the specs as JSON")
    parser.set_defaults(func=run)


def _size_mb(spec) -> str:
    try:
        return f"{spec.path.stat().st_size / 1e6:.1f}"
    except OSError:
        return "missing"


def run(args: argparse.Namespace) -> int:
    from ..models import DEFAULT_MODEL, list_models

    specs = list_models()
    if args.json:
        print(json.dumps([{**s.to_json(), "default": s.name == DEFAULT_MODEL} for s in specs], indent=2))
        return 0
    if not specs:
        print("No models are registered. Pass the path of an exported .onnx (with its .json spec "
              "beside it) to --model, or export one with 'cleancut export'.")
        return 0
    rows = [("", "NAME", "INPUT", "SIZE MB", "LICENCE", "ARCHITECTURE")]
    for s in specs:
        rows.append(("*" if s.name == DEFAULT_MODEL else "", s.name, f"{s.input_size[0]}x{s.input_size[1]}",
                     _size_mb(s), s.licence, s.architecture))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if not any(s.name == DEFAULT_MODEL for s in specs):
        print(f"(no '{DEFAULT_MODEL}' model is registered; pass --model to 'cleancut remove')")
    return 0
