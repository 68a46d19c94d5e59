"""Where is the model unsure? Test-time-augmentation uncertainty, in numpy + Pillow only (no torch).

    from cleancut.explain import tta_uncertainty, uncertain_band
    mean, std = tta_uncertainty(lambda rgb: remover.predict_mask(rgb), rgb_array)
    band = uncertain_band(mean, std)

The photo is shown to the model several times: as is, mirrored, zoomed out (the photo padded by
reflection, so the subject is smaller in the network's fixed-size input) and zoomed in (overlapping
tiles, so it is larger). Each prediction is mapped back onto the photo's pixels; where the views
agree the standard deviation is ~0, where they disagree (usually along the subject's edge, thin
structures, parts that might or might not belong to the subject) it is large. ``cleancut explain``
(:func:`explain`) draws these maps, plus Grad-CAM and Monte-Carlo dropout for a training checkpoint
(:mod:`cleancut.train.explain`, torch); for an exported ONNX model or a registered name it needs no
torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

PredictFn = Callable[[np.ndarray], np.ndarray]  # uint8 HxWx3 RGB -> float alpha HxW in [0, 1]


def _as_rgb(image) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxW, HxWx3 or HxWx4 image, got shape {a.shape}")
    if a.dtype != np.uint8:
        a = np.clip(np.rint(a * 255 if a.dtype.kind == "f" else a), 0, 255).astype(np.uint8)
    return a[..., :3]


def _resize(alpha: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    a = np.asarray(alpha, np.float32)
    if (a.shape[1], a.shape[0]) == tuple(size_wh):
        return a
    return np.asarray(Image.fromarray(a, mode="F").resize(size_wh, Image.BILINEAR), np.float32)


def _pyramid(n: int) -> np.ndarray:
    i = np.arange(n, dtype=np.float32)
    return np.minimum(i + 1, n - i) / ((n + 1) // 2)


def tta_views(flips: bool = True, scales: Sequence[float] = (0.8, 1.0, 1.25)) -> list[tuple[bool, float]]:
    return [(flip, float(s)) for s in scales for flip in ((False, True) if flips else (False,))]


def tta_predictions(predict_fn: PredictFn, image, flips: bool = True,
                    scales: Sequence[float] = (0.8, 1.0, 1.25)) -> np.ndarray:
    """``[V, H, W]`` float32: one prediction per view (``flips`` x ``scales``), mapped back onto the
    photo. A zoom ``s > 1`` is predicted on ``ceil(s)`` x ``ceil(s)`` overlapping tiles of ``1/s`` of
    each side (the subject looks ``s`` times larger and every pixel is covered), so it costs
    ``ceil(s)**2`` calls of ``predict_fn``; the default views cost 2 + 2 + 8 = 12 calls."""
    rgb = _as_rgb(image)
    h, w = rgb.shape[:2]
    preds = []
    for flip, s in tta_views(flips, scales):
        if s <= 0:
            raise ValueError(f"scales must be > 0, got {s}")
        view = rgb[:, ::-1] if flip else rgb
        out = np.full((h, w), np.nan, np.float32)
        if s < 1:  # zoom out: pad by reflection so the photo covers s of each side
            ph, pw = int(round(h * (1 / s - 1) / 2)), int(round(w * (1 / s - 1) / 2))
            ph, pw = min(ph, h - 1), min(pw, w - 1)
            padded = np.pad(view, ((ph, ph), (pw, pw), (0, 0)), mode="reflect")
            alpha = _resize(predict_fn(np.ascontiguousarray(padded)), (padded.shape[1], padded.shape[0]))
            out[:] = alpha[ph:ph + h, pw:pw + w]
        elif s > 1:  # zoom in: overlapping tiles of 1/s of each side that cover the photo, blended
            ch, cw = max(1, int(round(h / s))), max(1, int(round(w / s)))
            n = int(np.ceil(s - 1e-9))
            ramp = np.outer(_pyramid(ch), _pyramid(cw))  # tiles fade out towards their borders: no seams
            acc, cnt = np.zeros((h, w), np.float32), np.zeros((h, w), np.float32)
            for y0 in np.linspace(0, h - ch, n).round().astype(int):
                for x0 in np.linspace(0, w - cw, n).round().astype(int):
                    tile = np.ascontiguousarray(view[y0:y0 + ch, x0:x0 + cw])
                    acc[y0:y0 + ch, x0:x0 + cw] += ramp * _resize(predict_fn(tile), (cw, ch))
                    cnt[y0:y0 + ch, x0:x0 + cw] += ramp
            out[cnt > 0] = acc[cnt > 0] / cnt[cnt > 0]
        else:
            out[:] = _resize(predict_fn(np.ascontiguousarray(view)), (w, h))
        preds.append(out[:, ::-1] if flip else out)
    return np.clip(np.stack(preds), 0, 1)


def tta_uncertainty(predict_fn: PredictFn, image, flips: bool = True,
                    scales: Sequence[float] = (0.8, 1.0, 1.25)) -> tuple[np.ndarray, np.ndarray]:
    """Mean prediction and its standard deviation over the test-time augmentations.

    ``predict_fn`` maps a uint8 RGB ``HxWx3`` array to an alpha ``HxW`` in [0, 1] (any size: it
    is resized to the input's), e.g. ``Remover.predict_mask``. ``image``: PIL image or array.
    Returns two float32 ``HxW`` arrays at the image's size: ``mean`` in [0, 1] (a test-time-
    augmented mask, usually a little better than the plain one) and ``std`` in [0, 0.5].
    """
    preds = tta_predictions(predict_fn, image, flips, scales)
    return np.nanmean(preds, axis=0).astype(np.float32), np.nanstd(preds, axis=0).astype(np.float32)


def uncertain_band(mean: np.ndarray, std: np.ndarray, margin: float = 0.25, z: float = 2.0) -> np.ndarray:
    """Bool ``HxW``: pixels whose foreground/background decision is in doubt, i.e. whose mean
    probability lies within ``margin`` of the 0.5 threshold (soft alpha, 0.25..0.75 by default) or
    within ``z`` standard deviations of it (the augmented views disagree about the side). For a good
    model a thin band along the subject's edge plus genuinely doubtful parts: where a matting
    trimap's "unknown" region or a human review should look."""
    return np.abs(np.asarray(mean) - 0.5) < np.maximum(margin, z * np.asarray(std))


def uncertainty_summary(mean: np.ndarray, std: np.ndarray, band: np.ndarray | None = None) -> dict[str, float]:
    """Figures to flag a photo for review: the uncertain band's share of the image and of the
    predicted foreground, and the mean / 99th-percentile TTA standard deviation."""
    band = uncertain_band(mean, std) if band is None else band
    fg = float((np.asarray(mean) >= 0.5).sum())
    return {"band_fraction": float(band.mean()), "band_per_foreground": float(band.sum() / fg) if fg else float("inf"),
            "mean_std": float(np.mean(std)), "p99_std": float(np.percentile(std, 99))}


# -- the figure of ``cleancut explain`` --------------------------------------------------------------

def _onnx_predict_fn(model: str):
    from .api import Remover

    remover = Remover(model=model)
    return remover.predict_mask, remover.spec.name


def explain(image: str | Path, model: str, out: str | Path | None = None, mc: int = 16, flips: bool = True,
            scales=(0.8, 1.0, 1.25), layer: str | None = None) -> dict:
    """Write the figure (default ``<image stem>.explain.png`` beside the photo); return the maps' summary."""
    from .io import flatten, load_image

    rgb = np.asarray(flatten(load_image(str(image))))
    p = Path(model)
    is_ckpt = p.suffix == ".pt" or (p.is_dir() and (p / "checkpoints").is_dir())
    if is_ckpt:
        from .train.explain import Explainer

        ex = Explainer(model, layer)
        predict_fn, name = ex.predict, f"{ex.cfg.model.arch} ({model})"
    else:
        ex, (predict_fn, name) = None, _onnx_predict_fn(model)
    prob = predict_fn(rgb)
    mean, std = tta_uncertainty(predict_fn, rgb, flips=flips, scales=scales)
    band = uncertain_band(mean, std)
    mc_maps = ex.mc_dropout(rgb, mc) if ex is not None else None
    cam = ex.grad_cam(rgb) if ex is not None else None
    out = Path(out) if out else Path(image).with_name(Path(image).stem + ".explain.png")
    summary = {"model": name, "image": str(image), "figure": str(out), **uncertainty_summary(mean, std, band),
               "mc_mean_std": float(mc_maps[1].mean()) if mc_maps else None,
               "gradcam_layer": ex.layer if ex is not None else None,
               "gradcam_in_foreground": float((cam * (prob >= 0.5)).sum() / max(cam.sum(), 1e-9)) if cam is not None else None}
    plot_explanation(rgb, prob, std, mc_maps, band, cam, out, summary, n_views=len(scales) * (2 if flips else 1))
    return summary


def plot_explanation(rgb, prob, tta_std, mc_maps, band, cam, path: Path, summary: dict, n_views: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 8.6 * rgb.shape[0] / rgb.shape[1] + 0.6))
    ax = axes.ravel()
    ax[0].imshow(rgb)
    ax[0].set_title("photo")
    im = ax[1].imshow(prob, cmap="gray", vmin=0, vmax=1)
    ax[1].contour(prob, levels=[0.5], colors="tab:red", linewidths=0.8)
    ax[1].set_title("probability (red: 0.5)")
    fig.colorbar(im, ax=ax[1], fraction=0.046)
    vmax = max(0.05, float(np.percentile(tta_std, 99.5)))
    im = ax[2].imshow(tta_std, cmap="magma", vmin=0, vmax=vmax)
    ax[2].set_title(f"TTA uncertainty (std of {n_views} flips/zooms)")
    fig.colorbar(im, ax=ax[2], fraction=0.046)
    if mc_maps is not None:
        im = ax[3].imshow(mc_maps[1], cmap="magma", vmin=0, vmax=max(0.02, float(np.percentile(mc_maps[1], 99.5))))
        ax[3].set_title("MC-dropout uncertainty (std)")
        fig.colorbar(im, ax=ax[3], fraction=0.046)
    else:
        ax[3].text(0.5, 0.5, "MC dropout: n/a\n(needs a torch checkpoint with dropout)", ha="center", va="center")
    overlay = rgb.astype(np.float32) / 255 * 0.55
    overlay[band] = overlay[band] * 0.3 + np.array([1.0, 0.2, 0.1]) * 0.7
    ax[4].imshow(np.clip(overlay, 0, 1))
    ax[4].set_title(f"uncertain band: {summary['band_fraction']:.1%} of the photo")
    if cam is not None:
        ax[5].imshow(rgb)
        ax[5].imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1)
        ax[5].set_title(f"Grad-CAM at {summary['gradcam_layer']} ({summary['gradcam_in_foreground']:.0%} on the subject)")
    else:
        ax[5].text(0.5, 0.5, "Grad-CAM: n/a\n(needs a torch checkpoint)", ha="center", va="center")
    for a in ax:
        a.set_xticks([])
        a.set_yticks([])
        a.title.set_fontsize(9)
    fig.suptitle(f"{Path(summary['image']).name} - {summary['model']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
