"""Where is the model unsure? Test-time-augmentation uncertainty, in numpy + Pillow only (no torch).

    from cleancut.explain import tta_uncertainty, uncertain_band
    mean, std = tta_uncertainty(lambda rgb: remover.predict_mask(rgb), rgb_array)
    band = uncertain_band(mean, std)

The photo is shown to the model several times: as is, mirrored, zoomed out (the photo padded by
reflection, so the subject is smaller in the network's fixed-size input) and zoomed in (overlapping
tiles, so it is larger). Each prediction is mapped back onto the photo's pixels; where the views
agree the standard deviation is ~0, where they disagree (usually along the subject's edge, thin
structures, parts that might or might not belong to the subject) it is large. ``cleancut explain``
(:mod:`cleancut.cli.explain`) draws these maps, plus Grad-CAM and Monte-Carlo dropout for a training
checkpoint (:mod:`cleancut.train.explain`, torch); for an exported ONNX model or a registered name it
needs no torch.
"""

from __future__ import annotations

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
