"""Where does the fringe come from? The edge figures (:mod:`cleancut.metrics`) of a model at each
stage of the product's path, and the position of the training labels' edges.

Stages (the network runs once per photo; every stage is scored on the same photos):

* ``network, own size``: the network's probability at its input size against the ground truth
  scaled to that size (box filter, then > 128), bands from that size's diagonal;
* ``resized (T 1)``: that probability resized to the photo bilinearly, no sharpening;
* ``product (resize, T)``: :func:`cleancut.preprocess.finish_alpha`, what a user gets today;
* ``GT round trip``: the ground truth scaled to the network's size and back (bilinear), then
  sharpened like the product: what a network perfect at its own size would score after the
  resize (the cost of the resize alone);
* ``product @ t``: the product binarised at ``t`` instead of 0.5 for Boundary IoU (is it the
  threshold?);
* ``edge stage ...``: :func:`cleancut.preprocess.finish_alpha` with the photo as its guide (the
  edge-aware upsampling, :func:`cleancut.preprocess.guided_alpha`), for ``--radius`` / ``--eps``.

``--labels`` instead measures where the ground truth's edge sits in the photo, per set of a split:
the colour of the label's outermost object pixels (inside distance 1-2 px) against the object
further in (4-6 px) and the background just outside (1-3 px). ``bg-likeness`` = share of the
contour's pixels whose ring colour is nearer the background's than the object's; a label that
runs outside the object (a trimap border counted as object) scores high.

    python benchmarks/edge_stages.py cleancut-default --data datasets ../shared/data \\
        --split duts-val val val-objects --stride 20 10 10 --threads 1
    python benchmarks/edge_stages.py --labels --data datasets ../shared/data --split train --stride 25
    python benchmarks/edge_stages.py cleancut-default --speed samples/*.jpg --megapixels 1 12 --threads 2

``--speed`` times :meth:`cleancut.Remover.predict_mask` with and without the edge stage on the same
photos (scaled to each size), interleaved in one run, and the foreground colour estimation
(:func:`cleancut.refine.estimate_foreground`, on by default for cut-outs and composites) on its
mask.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
from PIL import Image

from cleancut import datasets
from cleancut.evaluate import OnnxModel, _batches
from cleancut.metrics import EDGE_METRIC_NAMES, EdgeMetrics, edge_figures, format_table, inside_distance
from cleancut.models import get_model
from cleancut.preprocess import GUIDED_EPS, GUIDED_RADIUS, finish_alpha, resize_alpha, sharpen_alpha


def _scaled_gt(gt: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 ground truth at ``size = (width, height)`` (box filter, as the photo is scaled)."""
    return np.asarray(Image.fromarray(gt).resize(size, Image.BOX))


def stages(model: str, pairs: list, threads: int | None, radii: list[int], epses: list[float],
           thresholds: list[float]) -> dict[str, dict[str, float]]:
    from cleancut.preprocess import guided_alpha

    spec = get_model(model)
    onnx = OnnxModel(spec, threads=threads)
    temp = spec.alpha_temperature
    names = ["network, own size", "network, own size, T", "resized (T 1)", "product (resize, T)",
             "GT round trip (T)"] + [f"product @ {t:g}" for t in thresholds] + [
        f"edge stage r {r} eps {e:g}" for r in radii for e in epses]
    acc = {n: EdgeMetrics() for n in names}
    cost = {n: 0.0 for n in names}
    photos = iter(pairs)
    for x, gts in _batches(pairs, spec, 8):
        probs = onnx.predict_batch(x)
        for prob, gt in zip(probs, gts):
            pair = next(photos)
            with Image.open(pair.image) as im:
                photo = im.convert("RGB")
            size = (gt.shape[1], gt.shape[0])
            small = _scaled_gt(gt, (prob.shape[1], prob.shape[0]))
            acc["network, own size"].add(prob, small)
            acc["network, own size, T"].add(sharpen_alpha(prob, temp), small)
            acc["resized (T 1)"].add(resize_alpha(prob, size), gt)
            started = time.perf_counter()
            product = finish_alpha(prob, size, temp)
            cost["product (resize, T)"] += time.perf_counter() - started
            acc["product (resize, T)"].add(product, gt)
            acc["GT round trip (T)"].add(finish_alpha(small.astype(np.float32) / 255, size, temp), gt)
            for t in thresholds:
                acc[f"product @ {t:g}"].per_image.append(edge_figures(product, gt, threshold=t))
            for r in radii:
                for e in epses:
                    name = f"edge stage r {r} eps {e:g}"
                    started = time.perf_counter()
                    alpha = guided_alpha(prob, photo, temp, r, e)
                    cost[name] += time.perf_counter() - started
                    acc[name].add(alpha, gt)
    out = {}
    for name, m in acc.items():
        out[name] = m.results()
        if cost[name]:
            out[name]["ms"] = 1000 * cost[name] / len(pairs)
    return out


def label_edges(pairs: list) -> dict[str, dict[str, float]]:
    """Per set: how often the label's outermost object ring looks like the background (see above)."""
    by_set: dict[str, list[float]] = {}
    for pair in pairs:
        with Image.open(pair.image) as im:
            rgb = np.asarray(im.convert("RGB"), np.float32)
        with Image.open(pair.mask) as m:
            g = np.asarray(m.convert("L")) >= 128
        if not g.any() or g.all():
            continue
        d_in, d_out = inside_distance(g), inside_distance(~g)
        ring, obj, bg = (d_in >= 1) & (d_in <= 2), (d_in >= 4) & (d_in <= 6), (d_out >= 1) & (d_out <= 3)
        if obj.sum() < 20 or bg.sum() < 20:
            continue
        # local reference colours: the mean object and background colour near each ring pixel,
        # from 15x15 windows (so a multi-coloured object is compared with its own neighbourhood)
        near_obj, near_bg = _local_mean(rgb, obj), _local_mean(rgb, bg)
        valid = ring & np.isfinite(near_obj[..., 0]) & np.isfinite(near_bg[..., 0])
        if valid.sum() < 20:
            continue
        to_obj = np.linalg.norm(rgb[valid] - near_obj[valid], axis=1)
        to_bg = np.linalg.norm(rgb[valid] - near_bg[valid], axis=1)
        contrast = np.linalg.norm(near_obj[valid] - near_bg[valid], axis=1)
        keep = contrast > 30  # only where object and background differ clearly
        if keep.sum() < 20:
            continue
        by_set.setdefault(pair.set, []).append(float((to_bg[keep] < to_obj[keep]).mean()))
    return {s: {"photos": len(v), "bg-likeness": float(np.mean(v))} for s, v in sorted(by_set.items())}


def _local_mean(rgb: np.ndarray, where: np.ndarray, radius: int = 7) -> np.ndarray:
    from scipy import ndimage

    k = 2 * radius + 1
    w = ndimage.uniform_filter(where.astype(np.float32), k)
    out = np.stack([ndimage.uniform_filter(rgb[..., c] * where, k) for c in range(3)], -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = out / w[..., None]
    out[w < 1e-3] = np.nan
    return out


def speed(model: str, photos: list[str], megapixels: list[float], repeats: int, threads: int | None) -> None:
    """``Remover.predict_mask`` (decoded photo in memory: flatten, network input, network, resize
    and sharpening) with and without the edge stage, interleaved in one run, median per photo."""
    import os

    from cleancut import Remover

    remover = Remover(model, threads=threads)
    remover.load()
    print(f"load average at the start: {os.getloadavg()[0]:.1f}")
    from cleancut.refine import estimate_foreground

    print("| photo size | predict_mask (ms) | with the edge stage (ms) | ratio | foreground colours (ms) | per MP |\n"
          "|---|---:|---:|---:|---:|---:|")
    for mp in megapixels:
        plain, guided, colours = [], [], []
        for path in photos:
            with Image.open(path) as im:
                src = im.convert("RGB")
            w = round((mp * 1e6 * src.width / src.height) ** 0.5)
            photo = src.resize((w, round(mp * 1e6 / w)), Image.BICUBIC)
            remover.predict_mask(photo, guided_edges=True)  # warm
            rgb = np.asarray(photo)
            for _ in range(repeats):
                for runs, flag in ((plain, False), (guided, True)):
                    started = time.perf_counter()
                    alpha = remover.predict_mask(photo, guided_edges=flag)
                    runs.append(time.perf_counter() - started)
                started = time.perf_counter()
                estimate_foreground(rgb, alpha)
                colours.append(time.perf_counter() - started)
        a, b, c = 1000 * np.median(plain), 1000 * np.median(guided), 1000 * np.median(colours)
        print(f"| {mp:g} MP ({photo.width}x{photo.height}) | {a:.1f} | {b:.1f} | {b / a:.2f} | {c:.1f} | "
              f"{c / (photo.width * photo.height / 1e6):.1f} |")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", nargs="?", default="cleancut-default")
    p.add_argument("--data", nargs="+")
    p.add_argument("--speed", nargs="*", metavar="PHOTO",
                   help="time predict_mask with and without the edge stage on these photos, scaled to --megapixels")
    p.add_argument("--megapixels", type=float, nargs="+", default=[1, 12])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--split", nargs="+", default=["val"])
    p.add_argument("--stride", type=int, nargs="+", default=[1], help="one per split, or one for all")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--labels", action="store_true", help="measure the labels' edges instead of a model")
    p.add_argument("--radius", type=int, nargs="*", default=[GUIDED_RADIUS],
                   help="edge stage radii (pixels at its working size, half the network's)")
    p.add_argument("--eps", type=float, nargs="*", default=[GUIDED_EPS], help="edge stage regularisation")
    p.add_argument("--thresholds", type=float, nargs="*", default=[0.3, 0.7])
    args = p.parse_args(argv)
    if args.speed:
        speed(args.model, args.speed, args.megapixels, args.repeats, args.threads)
        return 0
    if not args.data:
        p.error("--data is needed (or --speed PHOTO ...)")
    strides = args.stride * len(args.split) if len(args.stride) == 1 else args.stride
    selected = datasets.select(args.data, args.split)
    for (split, pairs), stride in zip(selected.items(), strides):
        pairs = pairs[::stride]
        title = f"{split}, every {stride}th photo ({len(pairs)})" if stride > 1 else f"{split} ({len(pairs)})"
        if args.labels:
            rows = label_edges(pairs)
            print(f"\n{title}: labels' outermost object ring nearer the background's colour than the object's\n")
            print(format_table(rows, ["photos", "bg-likeness"]))
            continue
        rows = stages(args.model, pairs, args.threads, args.radius, args.eps, args.thresholds)
        print(f"\n{args.model}, {title}\n")
        print(format_table(rows, EDGE_METRIC_NAMES + ["ms"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
