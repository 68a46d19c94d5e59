"""Image <-> network tensors, in numpy only. Shared by training, evaluation and inference so that
a model sees exactly the same input everywhere."""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

from .models import ModelSpec


_RESAMPLE = {"bilinear": Image.BILINEAR, "lanczos": Image.LANCZOS}


def network_size(spec: ModelSpec, image_size: tuple[int, int]) -> tuple[int, int]:
    """``(height, width)`` the network runs at for a photo of ``image_size = (width, height)``.

    ``aspect: stretch``: the spec's ``input_size``. ``aspect: keep``: the photo's aspect ratio at
    about the pixel count of ``input_size`` (so about the same cost), each side rounded to the
    nearest multiple of ``size_multiple`` and at least one multiple. When a side is held at that
    minimum (a photo over ~100 times wider than tall), the other side shrinks so that the pixel
    count stays within the budget."""
    if spec.aspect != "keep":
        return spec.input_size
    m = spec.size_multiple
    budget = spec.input_size[0] * spec.input_size[1]
    w, h = max(1, image_size[0]), max(1, image_size[1])
    scale = (budget / (w * h)) ** 0.5
    out_w = max(m, int(w * scale / m + 0.5) * m)
    out_h = max(m, int(h * scale / m + 0.5) * m)
    if out_w * out_h > budget * 1.25:  # one side is at the minimum
        longest = max(m, budget // (m * m) * m)
        out_w, out_h = (min(out_w, longest), out_h) if out_h == m else (out_w, min(out_h, longest))
    return out_h, out_w


def to_input(image: Image.Image, spec: ModelSpec) -> np.ndarray:
    """PIL RGB image -> one network input at the network's size for it (:func:`network_size`):
    float32 ``[channels, H, W]``, normalised, or the raw uint8 ``[H, W, channels]`` for a
    ``uint8_nhwc`` model."""
    h, w = network_size(spec, image.size)
    img = image.convert("L" if spec.channels == 1 else "RGB")
    if img.size != (w, h):
        img = img.resize((w, h), _RESAMPLE[spec.resample])
    pixels = np.asarray(img)
    if spec.input_format == "uint8_nhwc":
        return pixels if pixels.ndim == 3 else pixels[:, :, None]
    scale = max(1.0, float(pixels.max())) if spec.input_scale == "max" else 255.0
    return normalise(pixels, spec.mean, spec.std, scale)


def normalise(array: np.ndarray, mean, std, scale: float = 255.0) -> np.ndarray:
    """uint8 ``HxW`` or ``HxWxC`` -> float32 ``CxHxW`` divided by ``scale`` then ``(x - mean) / std``."""
    x = array.astype(np.float32) / np.float32(scale)
    if x.ndim == 2:
        x = x[:, :, None]
    c = x.shape[2]
    m = np.asarray(mean[:c] if len(mean) >= c else [np.mean(mean)] * c, np.float32)
    s = np.asarray(std[:c] if len(std) >= c else [np.mean(std)] * c, np.float32)
    x = (x - m) / s
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def sharpen_alpha(alpha: np.ndarray, temperature: float) -> np.ndarray:
    """``sigmoid(logit(alpha) / temperature)`` for float32 alpha in [0, 1], written as
    ``a**k / (a**k + (1 - a)**k)`` with ``k = 1 / temperature`` (no log, no exp, exact at 0 and
    1). Strictly increasing, so it keeps every ordering of the probabilities; 0.5 stays 0.5.
    The runtime reads it from a table (:func:`finish_alpha`)."""
    if temperature == 1.0:
        return alpha
    k = 1.0 / temperature
    a = np.asarray(alpha, np.float32)
    fg, bg = _power(a, k), _power(np.float32(1.0) - a, k)
    bg += fg
    fg /= bg  # fg + bg >= 2 * 0.5**k > 0 for the temperatures a spec allows
    return fg


def _power(x: np.ndarray, k: float) -> np.ndarray:
    """``x ** k``; by repeated squaring for a whole ``k`` (4x faster than ``np.power`` there)."""
    n = round(k)
    if abs(k - n) > 1e-6 or not 1 <= n <= 32:
        return np.power(x, np.float32(k))
    result, base = None, x
    while n:
        if n & 1:
            result = base.copy() if result is None else np.multiply(result, base, out=result)
        n >>= 1
        if n:
            base = base * base
    return result


def finish_alpha(alpha: np.ndarray, size: tuple[int, int], temperature: float) -> np.ndarray:
    """The network's alpha (float HxW in [0, 1]) as the runtime hands it out: resized to the
    photo's ``size = (width, height)`` (bilinear), then sharpened (:func:`sharpen_alpha`, read
    from a table of the curve at 65,536 levels). The runtime, ``cleancut evaluate`` and the
    calibration benchmark all call this, so they score what a user gets.

    With sharpening, the resize is done on 16-bit levels of alpha, which then index the
    sharpening table directly (within 2e-4 of resizing and sharpening in float for temperature
    0.2): a 480p video frame takes 3 ms instead of 7. Temperature 1 resizes in float."""
    if temperature == 1.0:
        return resize_alpha(alpha, size)
    index = _levels(alpha)
    if (index.shape[1], index.shape[0]) != tuple(size):
        # Pillow >= 11 resizes 16-bit images with every filter; the float path needs 2 copies more
        index = np.asarray(Image.fromarray(index).resize(tuple(size), Image.BILINEAR))
    return _sharpen_table(float(temperature))[index]


def _levels(alpha: np.ndarray) -> np.ndarray:
    """alpha clipped to [0, 1] as the index of its level in the sharpening table (uint16,
    truncated: the level at or below it; 65,536 levels, so within ``1 / (65535 * temperature)``
    of the exact curve, whose slope is at most ``1 / temperature``)."""
    levels = np.clip(np.asarray(alpha, np.float32), 0.0, 1.0)
    levels *= np.float32(_SHARPEN_LEVELS - 1)
    index = np.empty(levels.shape, np.uint16)
    np.copyto(index, levels, casting="unsafe")
    return index


_SHARPEN_LEVELS = 1 << 16  # the table's size: its index is a uint16


@functools.lru_cache(maxsize=8)
def _sharpen_table(temperature: float) -> np.ndarray:
    table = sharpen_alpha(np.linspace(0.0, 1.0, _SHARPEN_LEVELS, dtype=np.float32), temperature)
    table = np.maximum.accumulate(table)  # never decreasing, float32 rounding near 0 and 1 included
    table.setflags(write=False)
    return table


def resize_alpha(alpha: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float alpha ``HxW`` in [0, 1] -> float32 alpha at ``size=(width, height)`` (bilinear)."""
    a = np.asarray(alpha, np.float32)
    if (a.shape[1], a.shape[0]) == tuple(size):
        return a
    img = Image.fromarray(a, mode="F").resize(tuple(size), Image.BILINEAR)
    return np.clip(np.asarray(img, np.float32), 0.0, 1.0)
