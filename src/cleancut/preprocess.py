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
                 guide: Image.Image | None = None, reduced: np.ndarray | None = None) -> np.ndarray:
    """The network's alpha (float HxW in [0, 1]) as the runtime hands it out: resized to the
    photo's ``size = (width, height)`` (bilinear), then sharpened (:func:`sharpen_alpha`, read
    from a table of the curve at 65,536 levels). The runtime, ``cleancut evaluate`` and the
    calibration benchmark all call this, so they score what a user gets.

    With sharpening, the resize is done on 16-bit levels of alpha, which then index the
    sharpening table directly (within 2e-4 of resizing and sharpening in float for temperature
    0.2): a 480p video frame takes 3 ms instead of 7. Temperature 1 resizes in float.

    With ``guide`` (the photo, of ``size``), the edge is placed by the photo's own pixels
    (:func:`guided_alpha`, the edge stage; ``reduced``: the photo already shrunk, see there)."""
    if guide is not None:
        if guide.size != tuple(size):
            raise ValueError(f"the guide is {guide.size}, the alpha is asked at {tuple(size)}")
        return guided_alpha(alpha, guide, temperature, reduced=reduced)
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
    float32), the window cut at the borders (divided by the pixels it holds): :func:`box_sum`."""
    x = np.asarray(x, np.float32)
    planar = np.array(x if x.ndim == 2 else np.moveaxis(x, -1, 0), np.float32, order="C")
    box_sum(planar, radius, out=planar)
    planar /= window_counts(x.shape[:2], radius)
    return planar if x.ndim == 2 else np.ascontiguousarray(np.moveaxis(planar, 0, -1))


def box_sum(x: np.ndarray, radius: int, out: np.ndarray | None = None,
            scratch: np.ndarray | None = None) -> np.ndarray:
    """Sums over the ``(2 radius + 1)²`` window around each pixel of ``x``, the window cut at the
    borders, over its last two axes: ``HxW``, or planes ``CxHxW`` (channels first: numpy is slow on
    a last axis of 3). Down the rows, then across the columns. Up to ``_DIRECT_RADIUS`` the
    shifted rows and columns are added; beyond it running sums are taken down the rows, and across
    the columns on a transposed copy (:func:`_box_sum_rows`): O(1) a pixel whatever the radius.

    ``out`` (C-contiguous float32 of ``x``'s shape, ``x`` itself allowed) receives the sums;
    ``scratch`` (float32, at least :func:`box_scratch_size` long) is the working memory. Passing
    both to repeated calls saves allocating fresh memory each time, which costs more than the
    sums where the system maps it in page by page."""
    x = np.asarray(x, np.float32)
    if out is None:
        out = np.array(x, np.float32, order="C")
    elif out is not x:
        np.copyto(out, x)
    if scratch is None:
        scratch = np.empty(box_scratch_size(out.shape, radius), np.float32)
    *lead, h, w = out.shape
    r = radius
    if r <= _DIRECT_RADIUS:
        shifted = scratch[:out.size].reshape(out.shape)
        for axis in (-2, -1):
            n = out.shape[axis]
            np.copyto(shifted, out)
            for k in range(1, min(r, n - 1) + 1):
                if axis == -2:
                    out[..., k:, :] += shifted[..., :-k, :]
                    out[..., :-k, :] += shifted[..., k:, :]
                else:
                    out[..., k:] += shifted[..., :-k]
                    out[..., :-k] += shifted[..., k:]
        return out
    planes = int(np.prod(lead, dtype=np.int64))
    sums = scratch[:planes * (h * w + max(h, w))]  # the running sums, either way
    across = scratch[sums.size:sums.size + planes * h * w].reshape(tuple(lead) + (w, h))
    _box_sum_rows(out, r, sums)
    np.copyto(across, np.swapaxes(out, -1, -2))
    _box_sum_rows(across, r, sums)
    np.copyto(out, np.swapaxes(across, -1, -2))
    return out


def box_scratch_size(shape: tuple[int, ...], radius: int | None = None) -> int:
    """The float32 working memory :func:`box_sum` needs for an array of ``shape`` (at ``radius``;
    at any radius without it)."""
    *lead, h, w = shape
    planes = int(np.prod(lead, dtype=np.int64))
    if radius is not None and radius <= _DIRECT_RADIUS:
        return planes * h * w
    return planes * (2 * h * w + max(h, w))


def window_counts(shape: tuple[int, int], radius: int) -> np.ndarray:
    """float32 ``HxW``: the pixels of each pixel's window that :func:`box_sum` adds."""
    return np.outer(_window_counts(shape[0], radius), _window_counts(shape[1], radius)).astype(np.float32)


_DIRECT_RADIUS = 4  # up to this radius the shifted rows and columns are added (faster than running sums)


def _window_counts(n: int, radius: int) -> np.ndarray:
    i = np.arange(n)
    return np.minimum(i + radius, n - 1) - np.maximum(i - radius, 0) + 1


def _box_sum_rows(x: np.ndarray, radius: int, scratch: np.ndarray) -> None:
    """Replace each row of a C-contiguous ``x`` (``... x n x W``, rows along the second last axis)
    by the sum of rows ``[i - radius, i + radius]``, cut at the ends: differences of the running
    sum (with a leading zero), kept in ``scratch``. The loop is over rows, each a contiguous vector
    (numpy's ``cumsum`` along a leading axis walks each column on its own, an order of magnitude
    slower)."""
    *lead, n, w = x.shape
    r = radius
    c = scratch[:x.size + x.size // n].reshape(tuple(lead) + (n + 1, w))
    c[..., 0, :] = 0
    for i in range(n):
        np.add(c[..., i, :], x[..., i, :], out=c[..., i + 1, :])
    if n <= 2 * r + 1:  # every window is cut: index each end
        i = np.arange(n)
        np.subtract(np.take(c, np.minimum(i + r, n - 1) + 1, axis=-2), np.take(c, np.maximum(i - r, 0), axis=-2), out=x)
        return
    x[..., :r, :] = c[..., r + 1:2 * r + 1, :]  # windows cut at the start
    np.subtract(c[..., 2 * r + 1:, :], c[..., :n - 2 * r, :], out=x[..., r:n - r, :])
    np.subtract(c[..., n:, :], c[..., n - 2 * r:n - r, :], out=x[..., n - r:, :])  # cut at the end


def guided_coefficients(guide: np.ndarray, p: np.ndarray, radius: int, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """The guided filter's (He et al., 2010/2013) window-averaged linear coefficients ``a`` (``HxWx3``)
    and ``b`` (``HxW``) of ``p`` (``HxW``) on a colour ``guide`` (``HxWx3`` in [0, 1]): the output is
    ``(a * guide).sum(-1) + b``. Each window fits ``p ~ a . I + b`` by ridge regression (``eps``), so
    where the photo has an edge the output takes ``p``'s step there. A grey ``guide`` (``HxW``) has
    one coefficient, ``a`` ``HxW``. (:func:`guided_maps` on planes.)"""
    guide = np.asarray(guide, np.float32)
    planes = guide[None] if guide.ndim == 2 else np.moveaxis(guide, -1, 0)
    maps = guided_maps(planes, p, radius, eps)
    return (maps[0] if guide.ndim == 2 else np.moveaxis(maps[:-1], 0, -1)), maps[-1]


def guided_maps(guide: np.ndarray, p: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """:func:`guided_coefficients` on a guide given as planes ``CxHxW`` (C = 1 or 3, in [0, 1]):
    float32 ``(C + 1)xHxW``, the window-averaged ``a`` of each channel, then ``b``. Two box filters,
    each over all its planes at once: the guide, ``p``, their products and (colour) the products
    of the channels; then the fitted ``a`` and ``b``."""
    guide = np.asarray(guide, np.float32)
    p = np.asarray(p, np.float32)
    c, h, w = guide.shape
    pairs = [(i, j) for i in range(c) for j in range(i, c)]  # the covariance's entries
    stack = np.empty((2 * c + 1 + len(pairs), h, w), np.float32)
    stack[:c] = guide
    stack[c] = p
    np.multiply(guide, p, out=stack[c + 1:2 * c + 1])
    for k, (i, j) in enumerate(pairs):
        np.multiply(guide[i], guide[j], out=stack[2 * c + 1 + k])
    scratch = np.empty(box_scratch_size(stack.shape, radius), np.float32)
    box_sum(stack, radius, out=stack, scratch=scratch)
    stack *= 1 / window_counts((h, w), radius)
    mean_i, mean_p = stack[:c], stack[c]
    cov = stack[c + 1:2 * c + 1]
    cov -= mean_i * mean_p  # cov(I_c, p) in each window
    var = {}
    for k, (i, j) in enumerate(pairs):  # the channels' covariance, eps on its diagonal
        plane = stack[2 * c + 1 + k]
        plane -= mean_i[i] * mean_i[j]
        if i == j:
            plane += np.float32(eps)
        var[i, j] = var[j, i] = plane
    maps = np.empty((c + 1, h, w), np.float32)
    if c == 1:
        np.divide(cov[0], var[0, 0], out=maps[0])
    else:  # the 3x3 inverse by cofactors (symmetric), times cov
        rr, rg, rb, gg, gb, bb = var[0, 0], var[0, 1], var[0, 2], var[1, 1], var[1, 2], var[2, 2]
        i_rr, i_rg, i_rb = gg * bb - gb * gb, gb * rb - rg * bb, rg * gb - gg * rb
        i_gg, i_gb, i_bb = rr * bb - rb * rb, rb * rg - rr * gb, rr * gg - rg * rg
        det = rr * i_rr + rg * i_rg + rb * i_rb
        c0, c1, c2 = cov
        for k, (x, y, z) in enumerate(((i_rr, i_rg, i_rb), (i_rg, i_gg, i_gb), (i_rb, i_gb, i_bb))):
            row = np.multiply(x, c0, out=maps[k])
            row += y * c1
            row += z * c2
            row /= det
    np.multiply(maps[0], mean_i[0], out=maps[c])
    for k in range(1, c):
        maps[c] += maps[k] * mean_i[k]
    np.subtract(mean_p, maps[c], out=maps[c])  # b = mean_p - a . mean_i
    box_sum(maps, radius, out=maps, scratch=scratch)
    maps *= 1 / window_counts((h, w), radius)
    return maps


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
                 eps: float = GUIDED_EPS, scale: float = GUIDED_SCALE, grey: bool | None = None,
                 reduced: np.ndarray | None = None) -> np.ndarray:
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
    there. ``reduced``: the photo already shrunk to at least the working size (uint8 ``HxWx3``;
    the runtime passes the network's input), from which the fit's guide is made instead of from
    the whole photo (a 12 MP photo is then read only along the band)."""
    grey = GUIDED_GREY if grey is None else grey  # read at call time: benchmarks switch it
    size = tuple(guide.size)
    h, w = np.shape(alpha)
    work = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size[0] * size[1] <= work[0] * work[1]:
        work = size  # a small photo: fit and apply at its own size
    rgb = guide if guide.mode in ("RGB", "L") else guide.convert("RGB")
    if work == size:
        fit = rgb
    elif reduced is not None and reduced.ndim == 3 and reduced.shape[2] == 3 and \
            reduced.shape[1] >= work[0] and reduced.shape[0] >= work[1]:
        fit = Image.fromarray(np.ascontiguousarray(reduced)).resize(work, Image.BOX)
    else:
        fit = rgb.resize(work, Image.BOX)
    if grey and fit.mode != "L":
        fit = fit.convert("L")
    small = np.asarray(fit)
    small = (small[None] if small.ndim == 2 else np.moveaxis(small, -1, 0)).astype(np.float32) * np.float32(1 / 255)
    p = np.asarray(alpha, np.float32)
    if work != (w, h):
        p = np.asarray(Image.fromarray(p, mode="F").resize(work, Image.BOX))
    maps = guided_maps(small, np.clip(p, 0.0, 1.0), radius, eps)  # a per channel, then b
    fitted = maps[-1].copy()
    for a, channel in zip(maps[:-1], small):
        fitted += a * channel
    np.clip(fitted, 0.0, 1.0, out=fitted)
    out = finish_alpha(alpha, size, temperature)
    if work == size:
        return np.minimum(_sharpened(fitted, temperature), out)
    lo = 1 / (1 + ((1 - _SURE) / _SURE) ** temperature)  # the alpha that sharpening takes to _SURE
    band = ((p > lo) & (p < 1 - lo)) | ((fitted > lo) & (fitted < 1 - lo))
    if not band.any():
        return out
    band = _grow(band)
    maps[:-1] *= np.float32(1 / 255)  # applied to the photo's 8-bit levels
    # the maps at the photo's pixels: Pillow's bilinear resize of each over a tile's box, the same
    # taps as a resize of the whole map (pixel centres aligned, edges clamped)
    images = [Image.fromarray(m, mode="F") for m in maps]
    table = None if temperature == 1.0 else _sharpen_table(float(temperature))
    sx, sy = size[0] / work[0], size[1] / work[1]
    for x0, y0, x1, y1 in _band_tiles(band):
        left, top = int(x0 * sx), int(y0 * sy)
        right, bottom = min(size[0], int(np.ceil(x1 * sx))), min(size[1], int(np.ceil(y1 * sy)))
        tile, box = (right - left, bottom - top), (left / sx, top / sy, right / sx, bottom / sy)
        *gains, q = (np.asarray(m.resize(tile, Image.BILINEAR, box=box)) for m in images)
        crop = rgb.crop((left, top, right, bottom))
        crop = np.asarray(crop.convert("L") if grey and crop.mode != "L" else crop)  # only the band's tiles
        q = q + gains[0] * (crop if crop.ndim == 2 else crop[:, :, 0])
        for c in range(1, len(gains)):
            q += gains[c] * crop[:, :, c]
        plain = out[top:bottom, left:right]
        np.clip(q, 0.0, 1.0, out=q)
        if table is not None:  # as _sharpened: the table's level at or below q
            q *= np.float32(_SHARPEN_LEVELS - 1)
            q = table[q.astype(np.uint16)]
        np.minimum(q, plain, out=plain)
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
