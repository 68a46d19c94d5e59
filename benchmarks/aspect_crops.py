"""How a model copes with very wide and very tall photos: each pair of a split is cropped to a
strip of the given aspect ratio (the whole width and 1/ratio of it in height, and the same turned
on its side), centred on the object's centre of mass as far as the photo allows; the ground truth
is cropped the same way. For a model exported with ``--keep-aspect`` it scores the same weights
twice: run at the strip's own aspect ratio (``keep``, what cleancut does) and squashed into the
square ``input_size`` (``stretch``, what a fixed-size model does). A fixed-size model gets the
``stretch`` row only.

    python benchmarks/aspect_crops.py cleancut-default --data ../shared/data --split val-objects --ratio 3 5

Strips where less than 1% of the pixels are foreground are left out (the crop missed the object);
the table says how many strips were scored.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
from PIL import Image

from cleancut import Remover, datasets
from cleancut.metrics import SODMetrics
from cleancut.models import get_model

MIN_FOREGROUND = 0.01


def strip_boxes(mask: np.ndarray, ratio: float) -> dict[str, tuple[int, int, int, int]]:
    """PIL crop boxes ``(left, top, right, bottom)`` of a ``ratio``:1 wide strip and a 1:``ratio``
    tall strip of a photo whose ground truth is ``mask`` (H x W), centred on the foreground's
    centre of mass (the photo's centre when there is none) and kept inside the photo. A strip
    the photo is too small for (over 1 px short of the ratio) is left out."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask > 127)
    cy, cx = (ys.mean(), xs.mean()) if len(xs) else (h / 2, w / 2)
    boxes = {}
    height = max(1, round(w / ratio))
    if height <= h:
        top = int(np.clip(round(cy - height / 2), 0, h - height))
        boxes["wide"] = (0, top, w, top + height)
    width = max(1, round(h / ratio))
    if width <= w:
        left = int(np.clip(round(cx - width / 2), 0, w - width))
        boxes["tall"] = (left, 0, left + width, h)
    return boxes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", nargs="?", default="cleancut-default", help="registered name, .onnx or .json")
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="val-objects")
    p.add_argument("--ratio", type=float, nargs="+", default=[3.0, 5.0], help="aspect ratios of the strips")
    p.add_argument("--stride", type=int, default=1, help="use every n-th pair")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if any(r < 1 for r in args.ratio):
        p.error("--ratio: each ratio must be 1 or more (a 3 makes 3:1 and 1:3 strips)")

    spec = get_model(args.model)
    ways = {"stretch": dataclasses.replace(spec, aspect="stretch")}
    if spec.aspect == "keep":
        ways = {"keep": spec, **ways}
    removers = {way: Remover(s, threads=args.threads) for way, s in ways.items()}
    pairs = datasets.select([args.data], [args.split])[args.split][:: args.stride]
    scores = {}  # (shape, ratio, way) -> SODMetrics
    counts = {}
    for pair in pairs:
        image = Image.open(pair.image).convert("RGB")
        mask = np.asarray(Image.open(pair.mask).convert("L").resize(image.size, Image.NEAREST))
        for ratio in args.ratio:
            for shape, box in strip_boxes(mask, ratio).items():
                gt = mask[box[1]:box[3], box[0]:box[2]]
                if (gt > 127).mean() < MIN_FOREGROUND:
                    continue
                crop = image.crop(box)
                counts[shape, ratio] = counts.get((shape, ratio), 0) + 1
                for way, remover in removers.items():
                    scores.setdefault((shape, ratio, way), SODMetrics(curves=False)).add(remover.predict_mask(crop), gt)

    head = " | ".join(f"{way} {k}" for way in ways for k in ("maxF", "wF", "MAE"))
    print(f"{spec.name}, {args.split} ({len(pairs)} pairs), input {spec.input_size[0]}x{spec.input_size[1]}\n")
    print(f"| strip | strips | {head} |\n|---|---:|" + "---:|" * (3 * len(ways)))
    for ratio in args.ratio:
        for shape in ("wide", "tall"):
            if (shape, ratio) not in counts:
                continue
            label = f"{shape} {ratio:g}:1" if shape == "wide" else f"{shape} 1:{ratio:g}"
            results = [scores[shape, ratio, way].results() for way in ways]
            cells = " | ".join(f"{r[k]:.4f}" for r in results for k in ("maxF", "wF", "MAE"))
            print(f"| {label} | {counts[shape, ratio]} | {cells} |")
    if not counts:
        print("| (no strip kept) | 0 |" + " |" * (3 * len(ways)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
