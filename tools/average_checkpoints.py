"""Average the weights of several checkpoints of one run (e.g. the last epochs of a cosine
schedule, kept with ``train.keep_every=1``): a flatter, less epoch-dependent model than any
single checkpoint.

    python tools/average_checkpoints.py runs/cutnet-ft/checkpoints/epoch-0{20..24}.pt -o runs/cutnet-ft/avg.pt

Floating-point tensors (weights and BatchNorm running statistics) are averaged; integer ones
(BatchNorm's batch counter) are taken from the last file.
Averaging the fine-tuned weights with the weights fine-tuning started from (WiSE-FT, Wortsman
et al., CVPR 2022) keeps what the start knew while adding what fine-tuning learnt:

    python tools/average_checkpoints.py runs/recovered.pt runs/cutnet-ft/avg.pt -o runs/soup.pt

A checkpoint without a config (e.g. from ``tools/onnx_to_checkpoint.py``) can take part; the
output's config comes from the last file that has one, and every file must have the same tensors. The output is a checkpoint that
``cleancut evaluate`` and ``cleancut export`` read like any other (config and history of the last).
"""

from __future__ import annotations

import argparse
import sys

import torch

from cleancut.train.checkpoint import atomic_save, load


def average(paths: list[str]) -> dict:
    ckpts = [load(p) for p in paths]
    ref = ckpts[-1]["model"]
    for p, c in zip(paths, ckpts):
        if c["model"].keys() != ref.keys() or any(c["model"][k].shape != ref[k].shape for k in ref):
            sys.exit(f"error: {p} is not a checkpoint of the same architecture as {paths[-1]}")
    with_config = [c for c in ckpts if "config" in c]
    if not with_config:
        sys.exit("error: none of the checkpoints has a training config; include one written by cleancut train")
    state = {}
    for k in ref:
        ts = [c["model"][k] for c in ckpts]
        state[k] = torch.stack([t.float() for t in ts]).mean(0).to(ts[-1].dtype) if ts[-1].is_floating_point() else ts[-1]
    out = {k: v for k, v in with_config[-1].items() if k in ("config", "epoch", "history", "best")}
    out["model"] = state
    out["averaged"] = {"files": paths, "epochs": [c.get("epoch") for c in ckpts]}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("-o", "--out", required=True)
    args = p.parse_args(argv)
    if len(args.checkpoints) < 2:
        sys.exit("error: give at least two checkpoints to average")
    ckpt = average(args.checkpoints)
    atomic_save(ckpt, args.out)
    print(f"averaged epochs {ckpt['averaged']['epochs']} -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
