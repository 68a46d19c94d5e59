"""Recover a trainable checkpoint from an exported cleancut ONNX model (BatchNorm folded into convs).

The code lives in the package (:mod:`cleancut.train.recover`, which ``cleancut finetune`` uses);
this script writes its result as a checkpoint for ``cleancut train --init``, with BatchNorm
statistics measured on the training photos of ``--data``:

    python tools/onnx_to_checkpoint.py src/cleancut/models/cleancut-default.onnx \
        --arch litefpn --kwargs '{"encoder": "efficientnet-lite0", "decoder": 64, "dropout": 0.1}' \
        --data ../shared/data --out runs/recovered.pt

Quantised (QDQ int8) files are read too. The parity check with ONNX Runtime runs in the package;
no checkpoint is written from a model that does not match.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("onnx")
    p.add_argument("--arch", required=True)
    p.add_argument("--kwargs", default="{}")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--data", required=True, help="dataset root whose train split calibrates BatchNorm")
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    from cleancut.datasets import select
    from cleancut.errors import CleancutError
    from cleancut.train.checkpoint import atomic_save
    from cleancut.train.recover import recover, spec_for_file

    pairs = select([args.data], ["train"], check=False)["train"]
    pairs = [pairs[i] for i in np.linspace(0, len(pairs) - 1, min(args.images, len(pairs))).astype(int)]
    try:
        spec = spec_for_file(args.onnx, args.arch, json.loads(args.kwargs))
        model, report = recover(spec, calibration=pairs, size=args.size)
    except CleancutError as exc:
        sys.exit(f"error: {exc}; not writing a checkpoint")
    print(f"matched {report['convs']} ONNX convs; parity with onnxruntime: max abs diff {report['max_abs_diff']:.2e}")
    atomic_save({"model": model.state_dict(), "source": args.onnx}, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
