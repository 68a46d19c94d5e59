"""The figure of ``cleancut explain``: the photo, the probability, test-time-augmentation
uncertainty and its band (any model, torch-free), plus Monte-Carlo dropout and Grad-CAM for a
training checkpoint (:mod:`cleancut.train.explain`). A front end: it joins the core's
:mod:`cleancut.explain` maps and the training room's explainer, which the core may not import."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..explain import _as_rgb, tta_uncertainty, uncertain_band, uncertainty_summary


# -- the figure --------------------------------------------------------------

def _onnx_predict_fn(model: str):
    # the runtime's session, as Remover.predict_mask runs it
    from ..models import get_model
    from ..runtime import Session

    session = Session(get_model(model))
    return (lambda rgb: session.predict([Image.fromarray(_as_rgb(rgb))])[0]), session.spec.name


def explain(image: str | Path, model: str, out: str | Path | None = None, mc: int = 16, flips: bool = True,
            scales=(0.8, 1.0, 1.25), layer: str | None = None) -> dict:
    """Write the figure (default ``<image stem>.explain.png`` beside the photo); return the maps' summary."""
    from ..io import flatten, load_image

    rgb = np.asarray(flatten(load_image(str(image))))
    p = Path(model)
    is_ckpt = p.suffix == ".pt" or (p.is_dir() and (p / "checkpoints").is_dir())
    if is_ckpt:
        from ..train.explain import Explainer

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
