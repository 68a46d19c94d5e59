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


def finish_alpha(alpha: np.ndarray, size: tuple[int, int], temperature: float,
                 guide: Image.Image | None = None) -> np.ndarray:
    """The network's alpha (float HxW in [0, 1]) as the runtime hands it out: resized to the
    photo's ``size = (width, height)`` (bilinear), then sharpened (:func:`sharpen_alpha`, read
    from a table of the curve at 65,536 levels). The runtime, ``cleancut evaluate`` and the
    calibration benchmark all call this, so they score what a user gets.

    With sharpening, the resize is done on 16-bit levels of alpha, which then index the
    sharpening table directly (within 2e-4 of resizing and sharpening in float for temperature
    0.2): a 480p video frame takes 3 ms instead of 7. Temperature 1 resizes in float.

    With ``guide`` (the photo, of ``size``), the edge is placed by the photo's own pixels
    (:func:`guided_alpha`, the edge stage)."""
    if guide is not None:
        if guide.size != tuple(size):
            raise ValueError(f"the guide is {guide.size}, the alpha is asked at {tuple(size)}")
        return guided_alpha(alpha, guide, temperature)
    if temperature == 1.0:
        return resize_alpha(alpha, size)
    index = _levels(alpha)
    if (index.shape[1], index.shape[0]) != tuple(size):
        # Pillow >= 11 resizes 16-bit images with every filter; the float path needs 2 copies more
        index = np.asarray(Image.fromarray(index).resize(tuple(size), Image.BILINEAR))
    return _sharpen_table(float(temperature))[index]


def _sharpened(alpha: np.ndarray, temperature: float) -> np.ndarray:
    """``alpha`` in [0, 1] sharpened as :func:`finish_alpha` does (from the table)."""
    return alpha if temperature == 1.0 else _sharpen_table(float(temperature))[_levels(alpha)]


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


# ---------------------------------------------------------------- edge stage: guided upsampling


def box_mean(x: np.ndarray, radius: int) -> np.ndarray:
    """Mean over the ``(2 radius + 1)²`` window around each pixel of ``x`` (``HxW`` or ``HxWxC``,
    float32), the window cut at the borders (divided by the pixels it holds): running sums along
    each axis, O(1) a pixel whatever the radius."""
    x = np.asarray(x, np.float32)
    out = _box_sum(_box_sum(x, radius, 0), radius, 1)
    h, w = x.shape[:2]
    count = np.outer(_window_counts(h, radius), _window_counts(w, radius)).astype(np.float32)
    return out / (count[:, :, None] if x.ndim == 3 else count)


def _window_counts(n: int, radius: int) -> np.ndarray:
    i = np.arange(n)
    return np.minimum(i + radius, n - 1) - np.maximum(i - radius, 0) + 1


def _box_sum(x: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """Sums over ``[i - radius, i + radius]`` along ``axis``, cut at the ends: differences of the
    running sum (with a leading zero)."""
    n = x.shape[axis]

    def at(i: int, j: int) -> tuple:  # the slice i:j along ``axis``
        key = [slice(None)] * x.ndim
        key[axis] = slice(i, j)
        return tuple(key)

    shape = list(x.shape)
    shape[axis] = n + 1
    c = np.empty(shape, np.float32)
    c[at(0, 1)] = 0
    np.cumsum(x, axis=axis, out=c[at(1, n + 1)])
    r = radius
    if n <= 2 * r + 1:  # every window is cut: index each end
        i = np.arange(n)
        return np.take(c, np.minimum(i + r, n - 1) + 1, axis=axis) - np.take(c, np.maximum(i - r, 0), axis=axis)
    out = np.empty(x.shape, np.float32)
    out[at(0, r)] = c[at(r + 1, 2 * r + 1)]  # windows cut at the start
    np.subtract(c[at(2 * r + 1, n + 1)], c[at(0, n - 2 * r)], out=out[at(r, n - r)])
    np.subtract(c[at(n, n + 1)], c[at(n - 2 * r, n - r)], out=out[at(n - r, n)])  # cut at the end
    return out


def guided_coefficients(guide: np.ndarray, p: np.ndarray, radius: int, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """The guided filter's (He et al., 2010/2013) window-averaged linear coefficients ``a`` (``HxWx3``)
    and ``b`` (``HxW``) of ``p`` (``HxW``) on a colour ``guide`` (``HxWx3`` in [0, 1]): the output is
    ``(a * guide).sum(-1) + b``. Each window fits ``p ~ a . I + b`` by ridge regression (``eps``), so
    where the photo has an edge the output takes ``p``'s step there."""
    if guide.ndim == 2:  # a grey guide: one coefficient
        mean_i, mean_p = box_mean(guide, radius), box_mean(p, radius)
        var_i = box_mean(guide * guide, radius) - mean_i * mean_i
        a = (box_mean(guide * p, radius) - mean_i * mean_p) / (var_i + eps)
        b = mean_p - a * mean_i
        return box_mean(a, radius), box_mean(b, radius)
    mean_i = box_mean(guide, radius)
    mean_p = box_mean(p, radius)
    cov_ip = box_mean(guide * p[:, :, None], radius) - mean_i * mean_p[:, :, None]
    # the 3x3 covariance of the colour in each window, plus eps on the diagonal
    pairs = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
    prod = np.stack([guide[:, :, i] * guide[:, :, j] for i, j in pairs], -1)
    m = box_mean(prod, radius)
    s = {ij: m[:, :, k] - mean_i[:, :, ij[0]] * mean_i[:, :, ij[1]] for k, ij in enumerate(pairs)}
    rr, rg, rb, gg, gb, bb = (s[(0, 0)] + eps, s[(0, 1)], s[(0, 2)], s[(1, 1)] + eps, s[(1, 2)], s[(2, 2)] + eps)
    # the inverse by cofactors (symmetric)
    i_rr, i_rg, i_rb = gg * bb - gb * gb, gb * rb - rg * bb, rg * gb - gg * rb
    i_gg, i_gb, i_bb = rr * bb - rb * rb, rb * rg - rr * gb, rr * gg - rg * rg
    det = rr * i_rr + rg * i_rg + rb * i_rb
    c0, c1, c2 = cov_ip[:, :, 0], cov_ip[:, :, 1], cov_ip[:, :, 2]
    a = np.stack([i_rr * c0 + i_rg * c1 + i_rb * c2,
                  i_rg * c0 + i_gg * c1 + i_gb * c2,
                  i_rb * c0 + i_gb * c1 + i_bb * c2], -1) / det[:, :, None]
    b = mean_p - (a * mean_i).sum(-1)
    return box_mean(a, radius), box_mean(b, radius)


#: the edge stage's guided filter: window radius (in pixels of its working size), regularisation
#: (on colours in [0, 1]) and working size (a share of the network's input size), chosen on
#: duts-val, val and val-objects (benchmarks/edge_stages.py; docs/benchmarks.md)
GUIDED_RADIUS = 3
GUIDED_EPS = 3e-3
GUIDED_SCALE = 0.5
#: fit the alpha to the photo's grey levels rather than its colours: a third of the fit's work and
#: half the band's, for about 90 % of the colour fit's gain in Boundary IoU, but blind to an edge
#: between two colours of one brightness (docs/benchmarks.md); off: the stage is an opt-in for quality
GUIDED_GREY = False
_SURE = 1 / 512  # sharpened alpha this close to 0 or 1 is 0 or 1 in 8 bits
_TILE = 8  # working-size pixels a tile of the band is made of


def guided_alpha(alpha: np.ndarray, guide: Image.Image, temperature: float = 1.0, radius: int = GUIDED_RADIUS,
                 eps: float = GUIDED_EPS, scale: float = GUIDED_SCALE, grey: bool = GUIDED_GREY) -> np.ndarray:
    """The edge stage: the network's alpha (float ``hxw`` in [0, 1], at its own size) at the size
    of the photo ``guide``, its edge placed by the photo's own pixels, then sharpened by
    ``temperature``. It is the fast guided filter (He & Sun, 2015; He et al.'s guided filter
    fitted at a low resolution and applied at the full one) used as edge-aware upsampling: the
    alpha is fitted, in each window of ``2 radius + 1`` pixels at ``scale`` x the network's size,
    as a linear function of the photo's colour there (of its grey level with ``grey``; ridge
    regression, ``eps``), and that function is evaluated on the photo's pixels at full size.
    Where the photo has an edge near the network's soft one, the alpha steps on the photo's edge. The stage only takes alpha away: the
    result is at most :func:`finish_alpha`'s, so the filter's known halo (windows of one colour
    beyond the edge keep the mean of the network's tail) never adds to what the network kept; it
    removes the old background the network kept beside the object, which is the fringe.

    For a photo larger than the working size the fit is applied only along the uncertain band
    (working pixels whose alpha, before or after the fit, is not 0 or 1 once sharpened, and their
    neighbours), in tiles of the photo; elsewhere the alpha is :func:`finish_alpha`'s, the same
    there."""
    size = tuple(guide.size)
    h, w = np.shape(alpha)
    work = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size[0] * size[1] <= work[0] * work[1]:
        work = size  # a small photo: fit and apply at its own size
    if grey:
        rgb = guide if guide.mode == "L" else guide.convert("L")
    else:
        rgb = guide if guide.mode in ("RGB", "L") else guide.convert("RGB")
    small = np.asarray(rgb.resize(work, Image.BOX) if work != size else rgb, np.float32) / np.float32(255)
    p = np.asarray(alpha, np.float32)
    if work != (w, h):
        p = np.asarray(Image.fromarray(p, mode="F").resize(work, Image.BOX))
    a, b = guided_coefficients(small, np.clip(p, 0.0, 1.0), radius, eps)
    fitted = np.clip((np.einsum("hwc,hwc->hw", a, small) if a.ndim == 3 else a * small) + b, 0.0, 1.0)
    out = finish_alpha(alpha, size, temperature)
    if work == size:
        return np.minimum(_sharpened(fitted, temperature), out)
    lo = 1 / (1 + ((1 - _SURE) / _SURE) ** temperature)  # the alpha that sharpening takes to _SURE
    band = ((p > lo) & (p < 1 - lo)) | ((fitted > lo) & (fitted < 1 - lo))
    if not band.any():
        return out
    band = _grow(band)
    maps = np.concatenate([a.transpose(2, 0, 1) if a.ndim == 3 else a[None], b[None]])  # a per channel, b
    sx, sy = size[0] / work[0], size[1] / work[1]
    for x0, y0, x1, y1 in _band_tiles(band):
        left, top = int(x0 * sx), int(y0 * sy)
        right, bottom = min(size[0], int(np.ceil(x1 * sx))), min(size[1], int(np.ceil(y1 * sy)))
        (r0, r1), fy = _bilinear_taps(top, bottom, sy, work[1])
        (c0, c1), fx = _bilinear_taps(left, right, sx, work[0])
        rows = maps[:, r0] + (maps[:, r1] - maps[:, r0]) * fy[None, :, None]  # maps x tile rows x work columns
        *gains, q = rows[:, :, c0] + (rows[:, :, c1] - rows[:, :, c0]) * fx  # the maps at the tile's pixels
        crop = np.asarray(rgb.crop((left, top, right, bottom))).reshape(bottom - top, right - left, -1)
        q += sum(g * crop[:, :, c] for c, g in enumerate(gains)) * np.float32(1 / 255)
        plain = out[top:bottom, left:right]
        np.minimum(_sharpened(np.clip(q, 0.0, 1.0, out=q), temperature), plain, out=plain)
    return out


def _bilinear_taps(start: int, stop: int, scale: float, n: int) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """Bilinear resampling of pixels ``start:stop`` of an axis ``scale`` times ``n`` long from that
    axis's ``n`` pixels, pixel centres aligned and edges clamped as in Pillow's ``resize``: the two
    source indices of each pixel and the weight of the second."""
    centre = (np.arange(start, stop) + 0.5) / scale - 0.5
    low = np.floor(centre)
    frac = (centre - low).astype(np.float32)
    low = low.astype(np.int64)
    return (np.clip(low, 0, n - 1), np.clip(low + 1, 0, n - 1)), frac


def _grow(mask: np.ndarray) -> np.ndarray:
    """``mask`` and its 8 neighbours."""
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    grown = out.copy()
    grown[:, 1:] |= out[:, :-1]
    grown[:, :-1] |= out[:, 1:]
    return grown


def _band_tiles(band: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Rectangles ``(x0, y0, x1, y1)`` of working pixels covering ``band``: rows of ``_TILE``
    pixels, each cut into the runs of ``_TILE``-pixel blocks that hold band pixels."""
    h, w = band.shape
    rows, cols = -(-h // _TILE), -(-w // _TILE)
    padded = np.zeros((rows * _TILE, cols * _TILE), bool)
    padded[:h, :w] = band
    blocks = padded.reshape(rows, _TILE, cols, _TILE).any(axis=(1, 3))
    tiles = []
    for r in range(rows):
        edges = np.flatnonzero(np.diff(np.concatenate([[False], blocks[r], [False]]).astype(np.int8)))
        for start, stop in zip(edges[::2], edges[1::2]):
            tiles.append((start * _TILE, r * _TILE, min(w, stop * _TILE), min(h, (r + 1) * _TILE)))
    return tiles
