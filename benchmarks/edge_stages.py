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

``--matting`` adds closed-form matting (``--alpha-matting``, the default trimap of 10 px) on the
product, with the regularisation used until now (1e-7) and now, and on the edge stage.

``--labels`` instead measures where the ground truth's edge sits in the photo, per set of a split
(with ``--with-model``, the model's masks too): :func:`ring_colours`, the colour of the rings 1-4 px
inside the mask's contour between the local background's (0) and the object's (1). A label that
runs outside the object (a trimap border counted as object) scores low on several rings.

    python benchmarks/edge_stages.py cleancut-default --data datasets ../shared/data \\
        --split duts-val val val-objects --stride 20 10 10 --threads 1
    python benchmarks/edge_stages.py --labels --with-model --data datasets ../shared/data \
        --split train val-objects duts-te --stride 10 1 20
    python benchmarks/edge_stages.py cleancut-default --speed samples/*.jpg --megapixels 1 12 --threads 2

``--speed`` times :meth:`cleancut.Remover.predict_mask` with and without the edge stage on the same
photos (scaled to each size), interleaved in one run, and the foreground colour estimation
(:func:`cleancut.refine.estimate_foreground`, on by default for cut-outs and composites) on its
mask.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from PIL import Image

from cleancut import datasets
from cleancut.evaluate import OnnxModel, _batches
from cleancut.metrics import EDGE_METRIC_NAMES, EdgeMetrics, edge_figures, format_table, inside_distance
from cleancut.models import get_model
from cleancut.preprocess import GUIDED_EPS, GUIDED_RADIUS, box_mean, finish_alpha, guided_alpha, resize_alpha, sharpen_alpha


def _scaled_gt(gt: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 ground truth at ``size = (width, height)`` (box filter, as the photo is scaled)."""
    return np.asarray(Image.fromarray(gt).resize(size, Image.BOX))


def stages(model: str, pairs: list, threads: int | None, radii: list[int], epses: list[float],
           thresholds: list[float], matting: bool = False) -> dict[str, dict[str, float]]:
    spec = get_model(model)
    onnx = OnnxModel(spec, threads=threads)
    temp = spec.alpha_temperature
    names = ["network, own size", "network, own size, T", "resized (T 1)", "product (resize, T)",
             "GT round trip (T)"] + [f"product @ {t:g}" for t in thresholds] + [
        f"edge stage r {r} eps {e:g}" for r in radii for e in epses]
    if matting:  # closed-form matting (cleancut's "Refine edges", default trimap) on either
        names += ["product + alpha matting", "product + alpha matting, eps 1e-7",
                  "edge stage + alpha matting"]
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
            if matting:
                from cleancut.refine import alpha_matting

                guided = guided_alpha(prob, photo, temp)
                for name, base, eps in (("product + alpha matting", product, None),
                                        ("product + alpha matting, eps 1e-7", product, 1e-7),
                                        ("edge stage + alpha matting", guided, None)):
                    kwargs = {} if eps is None else {"epsilon": eps}
                    acc[name].add(alpha_matting(photo, base, 10, 10, **kwargs), gt)
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


RINGS = (1, 2, 3, 4)  # depths (pixels inside a mask's contour) of the rings whose colour is measured


def ring_colours(rgb: np.ndarray, mask: np.ndarray) -> list[float]:
    """How object-like the photo's colour is on the rings 1, 2, 3, 4 px inside ``mask``'s contour:
    each ring pixel's colour projected on the line from the local background colour (0: the mean of
    the background 3-5 px outside, within 9 px) to the local object colour (1: the mean of the
    object 7-9 px inside), clipped to [0, 1], averaged where the two differ clearly (> 30 levels).
    An antialiased edge scores about 0.5 on the first ring and turns object-like within two; a
    mask that runs outside the object scores low for as many rings as it overshoots."""
    inside, outside = inside_distance(mask), inside_distance(~mask)
    obj = _local_mean(rgb, (inside >= 7) & (inside <= 9), 9)
    bg = _local_mean(rgb, (outside >= 3) & (outside <= 5), 9)
    out = []
    for depth in RINGS:
        ring = (inside > depth - 0.5) & (inside <= depth) & np.isfinite(obj[..., 0]) & np.isfinite(bg[..., 0])
        o, b, x = obj[ring], bg[ring], rgb[ring]
        clear = np.linalg.norm(o - b, axis=1) > 30
        if clear.sum() < 20:
            out.append(float("nan"))
            continue
        o, b, x = o[clear], b[clear], x[clear]
        out.append(float(np.clip(((x - b) * (o - b)).sum(1) / ((o - b) ** 2).sum(1), 0, 1).mean()))
    return out


def label_edges(pairs: list, model: str | None = None, threads: int | None = None) -> dict[str, dict[str, float]]:
    """Per set: :func:`ring_colours` of the labels (and of ``model``'s masks, alpha >= 0.5)."""
    remover = None
    if model:
        from cleancut import Remover

        remover = Remover(model, threads=threads)
    by_set: dict[str, dict[str, list]] = {}
    for pair in pairs:
        with Image.open(pair.image) as im:
            rgb = np.asarray(im.convert("RGB"), np.float32)
        with Image.open(pair.mask) as m:
            g = np.asarray(m.convert("L")) >= 128
        masks = {"label": g}
        if remover is not None:
            masks["model"] = remover.predict_mask(pair.image) >= 0.5
        if any(not m.any() or m.all() for m in masks.values()):
            continue
        for who, m in masks.items():
            by_set.setdefault(pair.set, {}).setdefault(who, []).append(ring_colours(rgb, m))
    rows = {}
    for name, found in sorted(by_set.items()):
        for who, values in found.items():
            means = np.nanmean(np.array(values, np.float64), axis=0)
            rows[f"{name}, {who} ({len(values)})"] = {f"ring {d} px": float(v) for d, v in zip(RINGS, means)}
    return rows


def _local_mean(rgb: np.ndarray, where: np.ndarray, radius: int) -> np.ndarray:
    """The mean colour of the pixels ``where`` in the window around each pixel (NaN where none)."""
    weight = box_mean(where.astype(np.float32), radius)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = box_mean(rgb * where[..., None], radius) / weight[..., None]
    out[weight < 1e-3] = np.nan
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

    import cleancut.preprocess as pre

    print("| photo size | predict_mask (ms) | guided edges (ms) | ratio | guided, grey fit (ms) | ratio | "
          "foreground colours (ms) | per MP |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    for mp in megapixels:
        plain, guided, grey, colours = [], [], [], []
        for path in photos:
            with Image.open(path) as im:
                src = im.convert("RGB")
            w = round((mp * 1e6 * src.width / src.height) ** 0.5)
            photo = src.resize((w, round(mp * 1e6 / w)), Image.BICUBIC)
            remover.predict_mask(photo, edges="guided")  # warm
            rgb = np.asarray(photo)
            for _ in range(repeats):
                for runs, flag, fit_grey in ((plain, "network", False), (guided, "guided", False), (grey, "guided", True)):
                    pre.GUIDED_GREY, kept = fit_grey, pre.GUIDED_GREY  # the stage reads it at each call
                    started = time.perf_counter()
                    alpha = remover.predict_mask(photo, edges=flag)
                    runs.append(time.perf_counter() - started)
                    pre.GUIDED_GREY = kept
                started = time.perf_counter()
                estimate_foreground(rgb, alpha, photo=photo)  # as the pipeline calls it
                colours.append(time.perf_counter() - started)
        a, b, g, c = (1000 * np.median(v) for v in (plain, guided, grey, colours))
        print(f"| {mp:g} MP ({photo.width}x{photo.height}) | {a:.1f} | {b:.1f} | {b / a:.2f} | {g:.1f} | {g / a:.2f} | "
              f"{c:.1f} | {c / (photo.width * photo.height / 1e6):.1f} |")
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
    p.add_argument("--labels", action="store_true", help="measure where the labels' edges sit in the photo instead")
    p.add_argument("--with-model", action="store_true", help="--labels: the model's masks as well")
    p.add_argument("--radius", type=int, nargs="*", default=[GUIDED_RADIUS],
                   help="edge stage radii (pixels at its working size, half the network's)")
    p.add_argument("--eps", type=float, nargs="*", default=[GUIDED_EPS], help="edge stage regularisation")
    p.add_argument("--thresholds", type=float, nargs="*", default=[0.3, 0.7])
    p.add_argument("--matting", action="store_true",
                   help="also score closed-form matting (--alpha-matting, 10 px trimap) on the product and the edge stage")
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
            rows = label_edges(pairs, args.model if args.with_model else None, args.threads)
            print(f"\n{title}: colour of the rings inside the mask's edge, 0 = the background's, 1 = the object's\n")
            print(format_table(rows, [f"ring {d} px" for d in RINGS]))
            continue
        rows = stages(args.model, pairs, args.threads, args.radius, args.eps, args.thresholds, args.matting)
        print(f"\n{args.model}, {title}\n")
        print(format_table(rows, EDGE_METRIC_NAMES + ["ms"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
