"""Put an exported model into the package as a bundled model, with its metrics measured.

    python tools/ship_model.py runs/candidate.onnx --data ../shared/data datasets \
        --splits val val-objects duts-val duts-te \
        --epochs "12 + 8 + 24 + 14 (phases 1-4)" --weights "WiSE-FT average of ..."

The candidate is an ``.onnx`` file with the JSON spec ``cleancut export`` (or
``benchmarks/quantize.py``) wrote beside it. The tool

1. scores it on the full ``--splits`` of ``--data`` with the project's evaluation code (spec's
   ``output_levels`` applied) and records every figure under ``metrics`` as ``<split>/<metric>``;
2. keeps the hand-written fields of the model it replaces (``licence``, ``description``,
   ``model_card``, ``weights``, ``variant_of``, ...) unless given on the command line;
3. writes ``<models-dir>/<name>.onnx`` and ``.json`` (each atomically: a temporary file, then a
   rename), with ``file``, ``name`` and ``sha256`` set for the new place.

Nothing is written when the candidate cannot be read or scored. Use ``--variant-of`` for a
variant (e.g. int8) of another bundled model.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from cleancut.datasets import select
from cleancut.errors import CleancutError
from cleancut.evaluate import OnnxModel, evaluate
from cleancut.models import BUNDLED_DIR, file_sha256, load_spec

# fields written by hand for a release (the rest come from the exporter or are measured here)
CARRIED = ("licence", "description", "model_card", "metrics_note", "weights", "variant_of")


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp makes the file private; a package file must be readable by all
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def measure(candidate: Path, data: list[str], splits: list[str], threads: int | None) -> dict[str, float]:
    spec = load_spec(candidate)
    model = OnnxModel(spec, threads=threads)
    metrics = {}
    for split, pairs in select(data, splits).items():
        for key, value in evaluate(model, pairs).results().items():
            metrics[f"{split}/{key}"] = round(float(value), 4)
    return metrics


def ship(candidate: Path, name: str, models_dir: Path, metrics: dict[str, float],
         fields: dict[str, str], epochs: str | None = None) -> Path:
    spec_data = json.loads(candidate.with_suffix(".json").read_text())
    old_json = models_dir / f"{name}.json"
    old = json.loads(old_json.read_text()) if old_json.is_file() else {}
    for key in CARRIED:
        if key in old and key not in fields:
            spec_data[key] = old[key]
    spec_data.update(fields)
    spec_data.update(name=name, file=f"{name}.onnx", sha256=file_sha256(candidate), metrics=metrics)
    if epochs is not None:
        spec_data.setdefault("training", {})["epochs"] = epochs
    onnx_out = models_dir / f"{name}.onnx"
    _atomic_write(onnx_out, lambda tmp: shutil.copyfile(candidate, tmp))
    _atomic_write(old_json, lambda tmp: tmp.write_text(json.dumps(spec_data, indent=1) + "\n"))
    load_spec(old_json).verify()  # the written spec must read back and match the copied file
    return old_json


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("candidate", type=Path, help="exported .onnx with its .json spec beside it")
    p.add_argument("--data", required=True, nargs="+",
                   help="dataset root(s): with splits.csv, or DUTS in its official layout (duts-val, duts-te)")
    p.add_argument("--splits", nargs="+", default=["val", "val-objects"])
    p.add_argument("--name", default="cleancut-default", help="bundled name to write or replace")
    p.add_argument("--models-dir", type=Path, default=BUNDLED_DIR)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--epochs", help="training.epochs text for the spec (e.g. '12 + 8 + 24 (phases 1-3)')")
    for key in CARRIED:
        p.add_argument(f"--{key.replace('_', '-')}", dest=key, help=f"spec field '{key}' (default: kept)")
    args = p.parse_args(argv)
    if args.candidate.suffix != ".onnx" or not args.candidate.is_file():
        print(f"error: expected an exported .onnx file, found {args.candidate}", file=sys.stderr)
        return 2
    try:
        metrics = measure(args.candidate, args.data, args.splits, args.threads)
        fields = {k: getattr(args, k) for k in CARRIED if getattr(args, k) is not None}
        out = ship(args.candidate, args.name, args.models_dir, metrics, fields, args.epochs)
    except CleancutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} and {out.with_suffix('.onnx').name}")
    for key, value in metrics.items():
        if key.split("/")[-1] in ("MAE", "maxF", "wF"):
            print(f"  {key}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
