"""Experiment: does masked-autoencoder pre-training help when labels are scarce?

    python benchmarks/exp_pretrain.py --data /work/shared/data --out runs/exp-pretrain

1. ``cleancut pretrain`` trains CutNet (``configs/cutnet.yaml``, 128 px) as a masked autoencoder on
   ``--pretrain-images`` photos of the ``train`` split (their masks unused; never a validation photo).
2. For each labelled fraction (``data.fraction``: 10 %, 30 %, 100 % of the 4,687 training pairs) the
   same recipe is trained from scratch and from the pre-trained weights (``--init``), with the same
   seed and the same budget: ``--epochs`` x ``--steps`` optimiser steps of 16 images, whatever the
   fraction.
3. The *last* checkpoint of every run is scored on the whole ``val`` and ``val-objects`` splits.

Finished runs are reused when the script is run again. Prints a markdown table, writes
``OUT/results.{md,json}``, the plot ``docs/pretrain-curve.png`` and ``docs/pretrain-recon.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ["val", "val-objects"]
COLUMNS = ["MAE", "maxF", "wF", "Sm", "IoU"]


def common(args, seed: int) -> list[str]:
    return [f"data.roots=[{args.data}]", f"data.size={args.size}", "data.num_workers=1", "data.cache=false",
            f"data.backgrounds=[{Path(args.data) / 'backgrounds'}]", "train.threads=1", f"train.seed={seed}",
            "train.early_stopping=null", "train.time_budget_min=null", "train.batch_size=16"]


def pretrain(args) -> Path:
    from cleancut.train.checkpoint import load
    from cleancut.train.config import load_config
    from cleancut.train.pretrain import pretrain as run_pretrain
    from cleancut.train.pretrain import split_images

    run = Path(args.out) / "pretrain"
    if (run / "checkpoints" / "best.pt").exists():
        return run
    cfg = load_config(ROOT / "configs" / "cutnet.yaml", common(args, 0) + [f"train.epochs={args.pretrain_epochs}"])
    images = split_images([args.data], "train")
    run_pretrain(cfg, images, run, max_images=args.pretrain_images)
    print(f"pre-training: {load(run)['history'][-1]}", file=sys.stderr, flush=True)
    return run


def finetune(args, fraction: float, init: Path | None, seed: int) -> dict:
    from cleancut.datasets import select
    from cleancut.evaluate import evaluate
    from cleancut.train.checkpoint import load
    from cleancut.train.config import load_config
    from cleancut.train.loop import Trainer
    from cleancut.train.predict import TorchModel

    run = Path(args.out) / f"f{fraction:g}-{'pre' if init else 'scratch'}-s{seed}"
    last = run / "checkpoints" / "last.pt"
    cfg = load_config(ROOT / "configs" / "cutnet.yaml", common(args, seed) + [
        f"data.fraction={fraction}", "data.val_splits=[val]", "data.max_val=100", f"train.epochs={args.epochs}",
        f"train.steps_per_epoch={args.steps}", f"train.val_every={args.epochs}"])
    if not (last.exists() and load(last)["epoch"] >= args.epochs):
        trainer = Trainer(cfg, run, resume=last.exists(), init=str(init) if init and not last.exists() else None)
        if getattr(trainer, "init_report", None):
            print(trainer.init_report, file=sys.stderr, flush=True)
        trainer.fit()
    ckpt = load(last)
    model = TorchModel.from_checkpoint(last)
    res = {"fraction": fraction, "pretrained": init is not None, "seed": seed, "run": str(run),
           "train_pairs": int(round(4687 * fraction)), "minutes": ckpt["history"][-1]["elapsed_min"]}
    for split, pairs in select([args.data], SPLITS).items():
        res[split] = evaluate(model, pairs, batch_size=16).results()
    print(json.dumps({k: res[k] for k in ("fraction", "pretrained", "seed")} | {s: res[s]["wF"] for s in SPLITS}),
          file=sys.stderr, flush=True)
    return res


def table(results: list[dict]) -> str:
    head = "| labelled pairs | init | " + " | ".join(f"val {c}" for c in COLUMNS) + " | val-objects wF | val-objects MAE | minutes |"
    lines = [head, "|---|---|" + "---:|" * (len(COLUMNS) + 3)]
    for r in results:
        lines.append(f"| {r['fraction']:.0%} ({r['train_pairs']}) | {'pre-trained' if r['pretrained'] else 'scratch'} | "
                     + " | ".join(f"{r['val'][c]:.4f}" for c in COLUMNS)
                     + f" | {r['val-objects']['wF']:.4f} | {r['val-objects']['MAE']:.4f} | {r['minutes']:.1f} |")
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (split, metric) in zip(axes, [("val", "wF"), ("val", "MAE"), ("val-objects", "wF")]):
        for pre, style in ((False, "o--"), (True, "s-")):
            rs = sorted([r for r in results if r["pretrained"] == pre], key=lambda r: r["fraction"])
            xs = sorted({r["fraction"] for r in rs})
            ys = [np.mean([r[split][metric] for r in rs if r["fraction"] == x]) for x in xs]
            ax.plot([100 * x for x in xs], ys, style, label="masked-AE pre-trained" if pre else "from scratch")
        ax.set_xscale("log")
        ax.set_xticks([10, 30, 100], ["10 %", "30 %", "100 %"])
        ax.set(xlabel="labelled training pairs used", ylabel=metric, title=f"{split}: {metric} ({'lower' if metric == 'MAE' else 'higher'} is better)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def recon_figure(args, pre: Path, path: Path, n: int = 4) -> None:
    """The pre-trained network filling blanked patches of ``val-objects`` pets (Oxford-IIIT Pet,
    CC BY-SA 4.0: the only photos here whose licence allows them in the docs)."""
    from cleancut.datasets import select
    from cleancut.train import archs
    from cleancut.train.checkpoint import load
    from cleancut.train.config import _build, Config
    from cleancut.train.pretrain import MaskedImageDataset, add_reconstruction_heads, plot_reconstructions

    ckpt = load(pre)
    cfg = _build(Config, ckpt["config"], "")
    model = archs.build(cfg.model.arch, **cfg.model.kwargs)
    add_reconstruction_heads(model, 3)
    model.load_state_dict(ckpt["model"])
    pets = [p.image for p in select([args.data], ["val-objects"])["val-objects"] if p.set == "oxford-pets"]
    photos = [pets[i] for i in np.linspace(0, len(pets) - 1, n).astype(int)]
    s = ckpt["pretrain"]
    ds = MaskedImageDataset(photos, cfg.data.size, seed=0, mask_ratio=s["mask_ratio"], patch=s["patch"], noise=s["noise"],
                            visible_weight=s["visible_weight"])
    plot_reconstructions(model, ds, path, "cpu", n=n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--out", default="runs/exp-pretrain")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.3, 1.0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--steps", type=int, default=25, help="optimiser steps per epoch (the same for every fraction)")
    ap.add_argument("--pretrain-images", type=int, default=2000)
    ap.add_argument("--pretrain-epochs", type=int, default=8)
    ap.add_argument("--figure", default=str(ROOT / "docs" / "pretrain-curve.png"))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pre = pretrain(args)
    results = [finetune(args, f, init, s) for s in args.seeds for f in args.fractions for init in (None, pre)]
    text = table(results)
    (Path(args.out) / "results.md").write_text(text + "\n")
    (Path(args.out) / "results.json").write_text(json.dumps(results, indent=1))
    Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
    plot(results, Path(args.figure))
    recon_figure(args, pre, Path(args.figure).with_name("pretrain-recon.png"))
    print(text)
    print(f"total {(time.perf_counter() - t0) / 60:.1f} min", file=sys.stderr)


if __name__ == "__main__":
    main()
