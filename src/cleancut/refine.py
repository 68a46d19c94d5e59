"""Mask post-processing: islands, holes, alpha matting, threshold, feather, foreground colours.

Every function takes and returns a float32 alpha ``HxW`` in [0, 1] (foreground colours: the
photo's colours). scipy (islands, holes, matting) and pymatting (matting) are optional extras,
imported where used with an install hint; foreground colours need neither.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sys
import threading
import time
from typing import TYPE_CHECKING, Iterator

import numpy as np
from PIL import Image, ImageFilter

from ._deps import require
from .preprocess import _bilinear_taps, box_scratch_size, box_sum, resize_alpha, window_counts

if TYPE_CHECKING:  # pragma: no cover
    from .options import RemoveOptions

log = logging.getLogger(__name__)

_FG = 0.5  # alpha at or above which a pixel counts as foreground for connected components
_EIGHT = np.ones((3, 3), bool)  # 8-connectivity for the foreground (4 for the background)


def refine(alpha: np.ndarray, rgb: Image.Image, options: "RemoveOptions") -> np.ndarray:
    """Apply the post-processing ``options`` ask for, in a fixed order: remove islands, fill
    holes, alpha matting, threshold, feather."""
    alpha = np.asarray(alpha, np.float32)
    if options.remove_islands > 0:
        alpha = remove_islands(alpha, options.remove_islands)
    if options.fill_holes > 0:
        alpha = fill_holes(alpha, options.fill_holes)
    if options.alpha_matting:
        alpha = alpha_matting(rgb, alpha, options.matting_erode, options.matting_dilate,
                              options.matting_max_side)
    if options.threshold is not None:
        alpha = threshold(alpha, options.threshold)
    if options.feather > 0:
        alpha = feather(alpha, options.feather)
    return alpha


def threshold(alpha: np.ndarray, level: float) -> np.ndarray:
    """Binary mask: 1 where ``alpha >= level``, else 0."""
    return (np.asarray(alpha) >= level).astype(np.float32)


def remove_islands(alpha: np.ndarray, min_fraction: float) -> np.ndarray:
    """Zero foreground blobs smaller than ``min_fraction`` of the image area (and their soft
    rim). The largest blob is always kept, so a small subject is never erased."""
    ndimage = require("scipy.ndimage", "Removing small islands (remove_islands)")
    fg = alpha >= _FG
    labels, count = ndimage.label(fg, structure=_EIGHT)
    if count <= 1:
        return alpha
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    small = sizes < min_fraction * alpha.size
    small[0] = False
    small[int(np.argmax(sizes))] = False
    if not small.any():
        return alpha
    drop = small[labels]
    rim = ndimage.binary_dilation(drop, iterations=2) & ~(fg & ~drop)
    out = alpha.copy()
    out[rim] = 0.0
    return out


def fill_holes(alpha: np.ndarray, max_fraction: float) -> np.ndarray:
    """Make opaque the background regions enclosed by foreground (not touching the border) that
    are at most ``max_fraction`` of the image area."""
    ndimage = require("scipy.ndimage", "Filling holes (fill_holes)")
    bg = alpha < _FG
    labels, count = ndimage.label(bg)
    if count == 0:
        return alpha
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    sizes = np.bincount(labels.ravel())
    hole = sizes <= max_fraction * alpha.size
    hole[0] = False
    hole[border] = False
    if not hole.any():
        return alpha
    out = alpha.copy()
    out[hole[labels]] = 1.0
    return out


def feather(alpha: np.ndarray, radius: float) -> np.ndarray:
    """Gaussian-blur the mask (Pillow, 8-bit precision) to soften its edge."""
    image = Image.fromarray(np.rint(np.clip(alpha, 0, 1) * 255).astype(np.uint8), "L")
    blurred = image.filter(ImageFilter.GaussianBlur(radius))
    return np.asarray(blurred, np.float32) / 255.0


def _working_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    w, h = size
    scale = min(1.0, max_side / max(w, h))
    return max(1, round(w * scale)), max(1, round(h * scale))


def trimap(alpha: np.ndarray, erode: int, dilate: int) -> np.ndarray:
    """1 = sure foreground (mask eroded by ``erode`` px), 0 = sure background (outside the mask
    dilated by ``dilate`` px), 0.5 = unknown band in between."""
    if erode < 1 or dilate < 1:  # scipy treats iterations=0 as "until nothing changes"
        raise ValueError(f"erode and dilate must be >= 1 pixel, got {erode} and {dilate}")
    ndimage = require("scipy.ndimage", "Alpha matting (alpha_matting)")
    sure_fg = ndimage.binary_erosion(alpha >= 0.95, iterations=erode)
    sure_bg = ~ndimage.binary_dilation(alpha > 0.05, iterations=dilate)
    tri = np.full(alpha.shape, 0.5, np.float64)
    tri[sure_fg] = 1.0
    tri[sure_bg] = 0.0
    return tri


#: an import of pymatting slower than this is announced: numba is compiling its kernels
COMPILE_NOTICE_AFTER_S = 3.0
_import_lock = threading.Lock()


def matting_available() -> bool:
    """Whether alpha matting can run here (pymatting and scipy installed), without importing them."""
    return all(importlib.util.find_spec(name) is not None for name in ("pymatting", "scipy"))


def _import_pymatting(feature: str) -> None:
    """Import pymatting, saying what happens when it takes long.

    pymatting declares its numba kernels with signatures and ``cache=True``, so its first import
    on a machine compiles all of them (about a minute) and stores them in numba's on-disk cache
    (``__pycache__`` beside pymatting, else ``~/.cache/numba``, or ``$NUMBA_CACHE_DIR``); later
    imports load them in a second or two. An import still running after ``COMPILE_NOTICE_AFTER_S``
    is announced by a warning on the ``cleancut.refine`` logger, and its end by a second one."""
    with _import_lock:
        if "pymatting" in sys.modules:
            return
        announced = threading.Event()

        def announce() -> None:
            announced.set()
            log.warning("preparing the alpha-matting kernels: numba compiles them on a machine's first use "
                        "(once, about a minute) and loads them from its cache afterwards ...")

        timer = threading.Timer(COMPILE_NOTICE_AFTER_S, announce)
        timer.daemon = True
        started = time.perf_counter()
        timer.start()
        try:
            require("pymatting", feature)
        finally:
            timer.cancel()
            timer.join()
        if announced.is_set():
            log.warning("alpha-matting kernels ready after %.0f s", time.perf_counter() - started)


def _pymatting(feature: str):
    """pymatting (imported with a notice while numba compiles it, see :func:`_import_pymatting`),
    with its incomplete-Cholesky module's ``print`` of "PERFORMANCE WARNING" routed to logging:
    printed to stdout it would corrupt ``cleancut remove - > out.png``."""
    _import_pymatting(feature)
    pymatting = require("pymatting", feature)
    ichol_module = sys.modules.get("pymatting.preconditioner.ichol")
    if ichol_module is not None and getattr(ichol_module, "print", None) is not _log_print:
        ichol_module.print = _log_print  # module-global name lookup shadows the builtin there only
    return pymatting


def _log_print(*args, **kwargs) -> None:
    log.debug("pymatting: %s", " ".join(str(a) for a in args))


_kernel_lock = threading.Lock()


@contextlib.contextmanager
def _kernel_slot() -> Iterator[None]:
    """Run pymatting's parallel numba kernels one thread at a time where they are not
    thread-safe. numba falls back to its "workqueue" threading layer when neither TBB nor
    OpenMP is installed, and that layer aborts the whole process (a server with two workers,
    ``--jobs 2``) when two threads use it at once. Until a parallel kernel has run the layer is
    unknown, so those first calls are serialised too."""
    import numba

    try:
        safe = numba.threading_layer() != "workqueue"
    except ValueError:  # no parallel kernel has run yet
        safe = False
    if safe:
        yield
        return
    with _kernel_lock:
        yield


def _preconditioner(matrix):
    """Incomplete Cholesky (fast) with its memory bounded by the matrix size; Jacobi (slower,
    always works) if that fails."""
    from pymatting import ichol, jacobi

    try:
        return ichol(matrix, max_nnz=int(4 * matrix.nnz + matrix.shape[0]))
    except ValueError:
        return jacobi(matrix)


#: the closed-form matting Laplacian's regularisation. pymatting's default, 1e-7 (Levin et al.'s
#: value for clean photos), makes every step of a level or two between neighbouring pixels a hard
#: edge; a JPEG flattens the dark, low-contrast parts of a photo into 8x8 blocks one or two levels
#: apart, so the matte came out in square blocks of half transparency there (beside the
#: Abyssinian's cheek, under the bulldog's chin in the README's samples). At 1e-4 a one-level step
#: (variance ~1.5e-5 a channel) no longer cuts, while a real edge (tens of levels) still does.
MATTING_EPSILON = 1e-4


def alpha_matting(rgb: Image.Image, alpha: np.ndarray, erode: int, dilate: int,
                  max_side: int = 1024, epsilon: float = MATTING_EPSILON) -> np.ndarray:
    """Refine the mask edge with closed-form matting (pymatting) on a trimap built from it.

    Runs at most at ``max_side`` (erode/dilate sizes are scaled with the image); the result is
    scaled back to the mask's size. A mask without sure foreground or sure background is returned
    unchanged (there is nothing to anchor the matting). ``epsilon``: see :data:`MATTING_EPSILON`."""
    pymatting = _pymatting("Alpha matting (alpha_matting)")
    h, w = alpha.shape
    size = _working_size((w, h), max_side)
    scale = size[0] / w
    small_alpha = resize_alpha(alpha, size)
    small_rgb = rgb.resize(size, Image.BILINEAR) if size != (w, h) else rgb
    tri = trimap(small_alpha, max(1, round(erode * scale)), max(1, round(dilate * scale)))
    if not (tri == 1.0).any() or not (tri == 0.0).any() or not (tri == 0.5).any():
        return alpha
    image = np.asarray(small_rgb, np.float64) / 255.0
    with _kernel_slot():
        matte = pymatting.estimate_alpha_cf(image, tri, preconditioner=_preconditioner,
                                            laplacian_kwargs={"epsilon": epsilon})
    matte = np.clip(matte, 0.0, 1.0).astype(np.float32)
    return resize_alpha(matte, (w, h))


#: blur-fusion's two box radii in the photo's pixels (Forte & Pitié's values)
FOREGROUND_RADII = (90, 6)
#: the long side the blurred colours are worked out at (the estimate itself is made at full size);
#: on 1 MP samples within 1-3 levels on average of working them out at full size, as 512 is
FOREGROUND_SIDE = 384
_STRIP_PIXELS = 1 << 18  # the photo's rows are scanned in strips of about this many pixels


def estimate_foreground(rgb: np.ndarray, alpha: np.ndarray, max_side: int = FOREGROUND_SIDE,
                        photo: Image.Image | None = None) -> np.ndarray:
    """Subject colours without the background mixed into the soft edge: Forte & Pitié's
    blur-fusion ("Approximate Fast Foreground Colour Estimation", ICIP 2021), numpy and Pillow
    only. ``rgb`` uint8 HxWx3, ``alpha`` float HxW in [0, 1] -> uint8 HxWx3 (a new array, or
    ``rgb`` itself where alpha has no soft band). ``photo``: the same photo as an RGB PIL image,
    where the caller has one (it saves a copy of the photo).

    Where ``0 < alpha < 1`` the photo is ``alpha F + (1 - alpha) B``. Two passes estimate the
    local foreground and background colours as alpha-weighted box means (radius 90, then 6
    pixels), ``F^ = blur(F alpha) / blur(alpha)`` and ``B^`` alike,
    and take ``F = F^ + alpha (I - alpha F^ - (1 - alpha) B^)``: the part of the photo that the
    two means do not explain goes to the foreground in proportion to its alpha. The blurred
    colours are worked out at most at ``max_side`` (they are smooth), only over the soft band's
    bounding box and the two radii around it, and read at the band's pixels bilinearly (as a
    resize to the photo's size would, in float); the estimate itself uses the photo's own pixels
    and alpha (in 8 bits). Outside the soft band (``alpha`` 0 or 1 in 8 bits) the photo is kept,
    and only the rows that hold the band are visited at the photo's size."""
    alpha = np.ascontiguousarray(alpha, np.float32)
    h, w = alpha.shape
    levels, rows, cols = _alpha_levels(alpha)
    if rows.size == 0:
        return rgb
    size = _working_size((w, h), max_side)
    sx, sy = w / size[0], h / size[1]  # photo pixels per working pixel
    (ry0, ry1), fy = _bilinear_taps(0, h, sy, size[1])  # each photo row's two working rows, weight
    (cx0, cx1), fx = _bilinear_taps(0, w, sx, size[0])
    # the working region: what the band's pixels read, and the two radii around it (the means
    # there are then the same as over the whole photo)
    radii = [max(1, round(r * max(size) / max(w, h))) for r in FOREGROUND_RADII]  # in working pixels
    margin = sum(radii)
    top, bottom = max(0, int(ry0[rows[0]]) - margin), min(size[1], int(ry1[rows[-1]]) + 1 + margin)
    left, right = max(0, int(cx0[cols[0]]) - margin), min(size[0], int(cx1[cols[-1]]) + 1 + margin)
    region = (left, top, right, bottom)
    # the photo's colours: the whole photo box-filtered, then the region (resized as a region, a
    # box filter's taps on a window's very edge could fall the other side by rounding)
    if size == (w, h):
        small_rgb = np.asarray(rgb)[top:bottom, left:right]
    else:
        photo = Image.fromarray(np.asarray(rgb, np.uint8)) if photo is None else photo
        small_rgb = np.asarray(photo.resize(size, Image.BOX))[top:bottom, left:right]
    small_alpha = _resized_region(alpha, size, region)
    image = np.moveaxis(small_rgb, -1, 0).astype(np.float32) * np.float32(1 / 255)  # planes 3xhxw
    means = _blur_fusion_means(image, small_alpha, radii)
    ry0, ry1, cx0, cx1 = ry0 - top, ry1 - top, cx0 - left, cx1 - left
    cx_step = cx1 - cx0  # 0 or 1: a column's second working column, after its first
    out = np.array(rgb, np.uint8)
    sw = right - left
    step = max(1, _STRIP_PIXELS // w)
    last = int(rows[-1]) + 1  # the rows below the band's last one may read below the region
    for y0 in range(int(rows[0]), last, step):
        y1 = min(last, y0 + step)
        part = levels[y0:y1]
        at = np.flatnonzero(_soft(part))  # the band's pixels in these rows, flat
        if at.size == 0:
            continue
        yy, xx = np.divmod(at, w)
        # the means at these rows (bilinear between working rows), then at the band's pixels
        strip = means[:, ry0[y0:y1]]
        strip += (means[:, ry1[y0:y1]] - strip) * fy[None, y0:y1, None]
        strip = strip.reshape(6, -1)
        first = yy * sw + cx0[xx]  # each pixel's two working columns in the strip, flat
        m = strip.take(first, axis=1)
        m += (strip.take(first + cx_step[xx], axis=1) - m) * fx[xx]
        fg, bg = m[:3], m[3:]  # 3xN each
        a = part.reshape(-1).take(at) * np.float32(1 / 255)
        colour = out[y0:y1].reshape(-1, 3)
        pixels = colour.take(at, axis=0).T * np.float32(1 / 255)
        estimate = fg + a * (pixels - a * fg - (1 - a) * bg)
        colour[at] = np.clip(np.rint(estimate * 255), 0, 255).astype(np.uint8).T
    return out


def _alpha_levels(alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``alpha`` in 8 bits (uint8 HxW, ``rint(clip(alpha, 0, 1) * 255)``), made in strips of rows
    (no full-size float temporaries), and the indices of the rows and of the columns that hold its
    soft band (levels 1-254)."""
    h, w = alpha.shape
    levels = np.empty((h, w), np.uint8)
    row_any = np.zeros(h, bool)
    col_any = np.zeros(w, bool)
    step = max(1, _STRIP_PIXELS // w)
    for y0 in range(0, h, step):
        scaled = np.clip(alpha[y0:y0 + step], 0.0, 1.0)
        scaled *= np.float32(255)
        part = levels[y0:y0 + step]
        np.copyto(part, np.rint(scaled, out=scaled), casting="unsafe")
        soft = _soft(part)
        rows = soft.any(axis=1)
        row_any[y0:y0 + step] = rows
        if rows.any():
            col_any |= soft.any(axis=0)
    return levels, np.flatnonzero(row_any), np.flatnonzero(col_any)


def _soft(levels: np.ndarray) -> np.ndarray:
    """Where 8-bit alpha ``levels`` are neither 0 nor 255 (uint8 arithmetic wraps 0 to 255)."""
    return (levels - np.uint8(1)) < np.uint8(254)


def _resized_region(alpha: np.ndarray, size: tuple[int, int], region: tuple[int, int, int, int]) -> np.ndarray:
    """Pixels ``region = (left, top, right, bottom)`` of float32 ``alpha`` resized bilinearly to
    ``size`` (as :func:`resize_alpha`), the same as those of the whole resize within float
    rounding (a bilinear tap's weight is 0 at its window's edge): only the rows of ``alpha`` that
    the filter reads there (1 px of ``size`` beyond) are copied and resampled. (Float, not 8 or 16
    bits: where a band pixel's surroundings are almost all background, the foreground's mean is
    made of alphas below 1 / 65535.)"""
    h, w = alpha.shape
    left, top, right, bottom = region
    if (w, h) == tuple(size):
        return np.clip(alpha[top:bottom, left:right], 0.0, 1.0)
    sx, sy = w / size[0], h / size[1]
    first, last = max(0, int(top * sy - sy) - 2), min(h, int(np.ceil(bottom * sy + sy)) + 2)
    rows = Image.fromarray(np.ascontiguousarray(alpha[first:last]), "F")
    part = rows.resize((right - left, bottom - top), Image.BILINEAR,
                       box=(left * sx, top * sy - first, right * sx, bottom * sy - first))
    return np.clip(np.asarray(part), 0.0, 1.0)


def _blur_fusion_means(image: np.ndarray, alpha: np.ndarray, radii: list[int]) -> np.ndarray:
    """The local foreground and background colours of the last of blur-fusion's passes, as float32
    planes ``6xHxW`` in [0, 1] (the foreground's three channels, then the background's), of
    ``image`` (planes ``3xHxW`` in [0, 1]) and ``alpha`` (``HxW``). Each pass blurs the previous
    pass's estimate (the photo to begin with): one box filter a pass over the seven planes
    ``alpha, F alpha, B (1 - alpha)``, the windows cut at the borders; the means are ratios of
    window sums (the window's pixel count cancels but in the small constant). The passes share
    their buffers (fresh memory costs more than the arithmetic here)."""
    h, w = alpha.shape
    a = np.clip(alpha, 0.0, 1.0).astype(np.float32)
    rest = 1 - a
    planes = np.empty((7, h, w), np.float32)
    scratch = np.empty(box_scratch_size(planes.shape), np.float32)
    means = np.empty((6, h, w), np.float32)
    fg, bg = image, image
    for i, radius in enumerate(radii):
        planes[0] = a
        np.multiply(fg, a, out=planes[1:4])
        np.multiply(bg, rest, out=planes[4:])
        sums = box_sum(planes, radius, out=planes, scratch=scratch)
        count = window_counts((h, w), radius)
        below = count * np.float32(1e-5)
        below += sums[0]
        np.divide(sums[1:4], below, out=means[:3])
        np.multiply(count, np.float32(1 + 1e-5), out=below)
        below -= sums[0]
        np.divide(sums[4:], below, out=means[3:])
        if i + 1 < len(radii):  # the next pass blurs this one's estimate, F^ + a (I - a F^ - (1 - a) B^)
            fg_mean, bg = means[:3], means[3:]
            fg = np.multiply(fg_mean, a, out=planes[1:4])  # planes 1-6 are free until the next pass
            np.subtract(image, fg, out=fg)
            fg -= np.multiply(bg, rest, out=planes[4:])
            fg *= a
            fg += fg_mean
            # in the box filter's scratch: read (times alpha) before the next pass's filter uses it
            fg = np.clip(fg, 0.0, 1.0, out=scratch[:fg.size].reshape(fg.shape))
    return means
