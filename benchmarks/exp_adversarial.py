"""Experiment: the same recipe with and without adversarial training (same seed, same budget).

    python benchmarks/exp_adversarial.py --data /work/shared/data --out runs/exp-adversarial

Every variant trains ``configs/cutnet.yaml`` at a small CPU budget (128 px, ``--max-train`` pairs,
``--epochs`` epochs, one thread) with ``adversarial.weight`` = each of ``--weights`` (0 = the plain
recipe); the *last* checkpoint of each run (no selection on the validation data) is then scored on
the whole ``val`` split with MAE, maxF, wF and the boundary measures of
:mod:`cleancut.train.adversarial` (Boundary IoU, boundary F). Finished runs are reused when the
script is run again. Prints a markdown table, writes ``OUT/results.{md,json}`` and
``docs/adversarial-examples.png`` (pets of ``val-objects``: their licence allows it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["MAE", "maxF", "wF", "IoU", "BIoU", "BF"]


def overrides(args, weight: float, seed: int) -> list[str]:
    return [f"data.roots=[{args.data}]", "data.val_splits=[val]", f"data.size={args.size}",
            f"data.max_train={args.max_train}", "data.max_val=100", "data.num_workers=1", "data.cache=false",
            f"data.backgrounds=[{Path(args.data) / 'backgrounds'}]",
            f"train.epochs={args.epochs}", "train.threads=1", "train.early_stopping=null", "train.time_budget_min=null",
            f"train.val_every={args.epochs}", f"train.seed={seed}", f"adversarial.weight={weight}",
            "adversarial.warmup_epochs=1"]


def run_variant(args, weight: float, seed: int) -> dict:
    from cleancut.datasets import select
    from cleancut.train.adversarial import evaluate_with_boundary
    from cleancut.train.checkpoint import load
    from cleancut.train.config import load_config
    from cleancut.train.loop import Trainer
    from cleancut.train.predict import TorchModel

    run = Path(args.out) / f"w{weight:g}-s{seed}"
    last = run / "checkpoints" / "last.pt"
    cfg = load_config(ROOT / "configs" / "cutnet.yaml", overrides(args, weight, seed))
    t0 = time.perf_counter()
    if not (last.exists() and load(last)["epoch"] >= args.epochs):
        Trainer(cfg, run, resume=last.exists()).fit()
    train_min = (time.perf_counter() - t0) / 60
    ckpt = load(last)
    model = TorchModel.from_checkpoint(last)
    pairs = select([args.data], ["val"])["val"]
    res = evaluate_with_boundary(model, pairs, batch_size=16)
    hist = ckpt["history"][-1]
    res.update({"weight": weight, "seed": seed, "run": str(run), "train_min": train_min, "epochs": ckpt["epoch"],
                "n_val": len(pairs), "d_acc": hist.get("d_acc"), "adv_g": hist.get("adv_g"), "minutes": hist["elapsed_min"]})
    print(json.dumps({k: res[k] for k in ["weight", "seed", *COLUMNS, "minutes"]}), file=sys.stderr, flush=True)
    return res


def table(results: list[dict]) -> str:
    lines = ["| adversarial.weight | seed | " + " | ".join(COLUMNS) + " | D acc. (last epoch) | minutes |",
             "|---|---|" + "---:|" * (len(COLUMNS) + 2)]
    for r in results:
        d = "-" if r["d_acc"] is None else f"{r['d_acc']:.2f}"
        lines.append(f"| {r['weight']:g} | {r['seed']} | " + " | ".join(f"{r[c]:.4f}" for c in COLUMNS)
                     + f" | {d} | {r['minutes']:.1f} |")
    weights = sorted({r["weight"] for r in results})
    if len({r["seed"] for r in results}) > 1:
        for w in weights:
            rs = [r for r in results if r["weight"] == w]
            lines.append(f"| **{w:g} (mean)** | {len(rs)} seeds | " + " | ".join(
                f"{np.mean([r[c] for r in rs]):.4f}" for c in COLUMNS) + " | | |")
    return "\n".join(lines)


def examples(results: list[dict], data: str, path: Path, n: int = 4) -> None:
    """Photo, ground truth and each variant's probability for a few ``val-objects`` pets: only
    Oxford-IIIT Pet photos (CC BY-SA 4.0) go into the docs; the ``val`` portraits (PFCN) may not
    be redistributed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from cleancut.datasets import select
    from cleancut.preprocess import resize_alpha, to_input
    from cleancut.train.predict import TorchModel

    pairs = [p for p in select([data], ["val-objects"])["val-objects"] if p.set == "oxford-pets"]
    picks = [pairs[i] for i in np.linspace(2, len(pairs) - 3, n).astype(int)]
    seed0 = min(r["seed"] for r in results)
    variants = [r for r in results if r["seed"] == seed0]
    models = [(f"weight {r['weight']:g}", TorchModel.from_checkpoint(Path(r["run"]) / "checkpoints" / "last.pt")) for r in variants]
    fig, axes = plt.subplots(n, 2 + len(models), figsize=(2.3 * (2 + len(models)), 2.6 * n), squeeze=False)
    for i, pair in enumerate(picks):
        with Image.open(pair.image) as im:
            photo = im.convert("RGB")
        with Image.open(pair.mask) as m:
            gt = np.asarray(m.convert("L"))
        panels = [(np.asarray(photo), "photo", None), (gt, "ground truth", "gray")]
        for name, model in models:
            prob = model.predict_batch(to_input(photo, model.spec)[None])[0]
            panels.append((resize_alpha(prob, photo.size), name, "gray"))
        for j, (img, title, cmap) in enumerate(panels):
            axes[i, j].imshow(img, cmap=cmap, vmin=0 if cmap else None, vmax=(255 if j == 1 else 1) if cmap else None)
            axes[i, j].set_axis_off()
            if i == 0:
                axes[i, j].set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--out", default="runs/exp-adversarial")
    ap.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.01, 0.1])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--max-train", type=int, default=800)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--figure", default=str(ROOT / "docs" / "adversarial-examples.png"))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    results = [run_variant(args, w, s) for s in args.seeds for w in args.weights]
    text = table(results)
    out = Path(args.out)
    (out / "results.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=1))
    Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
    examples(results, args.data, Path(args.figure))
    print(text)


if __name__ == "__main__":
    main()
