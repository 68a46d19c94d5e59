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
from .preprocess import box_mean, resize_alpha

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


def estimate_foreground(rgb: np.ndarray, alpha: np.ndarray, max_side: int = FOREGROUND_SIDE) -> np.ndarray:
    """Subject colours without the background mixed into the soft edge: Forte & Pitié's
    blur-fusion ("Approximate Fast Foreground Colour Estimation", ICIP 2021), numpy and Pillow
    only. ``rgb`` uint8 HxWx3, ``alpha`` float HxW in [0, 1] -> uint8 HxWx3.

    Where ``0 < alpha < 1`` the photo is ``alpha F + (1 - alpha) B``. Two passes estimate the
    local foreground and background colours as alpha-weighted box means (radius 90, then 6
    pixels), ``F^ = blur(F alpha) / blur(alpha)`` and ``B^`` alike,
    and take ``F = F^ + alpha (I - alpha F^ - (1 - alpha) B^)``: the part of the photo that the
    two means do not explain goes to the foreground in proportion to its alpha. The blurred
    colours are worked out at most at ``max_side`` (they are smooth) and resized; the estimate
    itself uses the photo's own pixels and alpha. Outside the soft band the photo is kept."""
    a8 = np.rint(np.clip(alpha, 0.0, 1.0) * 255).astype(np.uint8)
    band = (a8 > 0) & (a8 < 255)
    if not band.any():
        return rgb
    h, w = a8.shape
    size = _working_size((w, h), max_side)
    small_rgb = rgb if size == (w, h) else np.asarray(Image.fromarray(rgb).resize(size, Image.BOX))
    small_alpha = resize_alpha(alpha, size) if size != (w, h) else np.asarray(alpha, np.float32)
    scale = max(size) / max(w, h)  # the radii are in the photo's pixels
    fg_mean, bg_mean = _blur_fusion_means(small_rgb.astype(np.float32) * np.float32(1 / 255), small_alpha,
                                          [max(1, round(r * scale)) for r in FOREGROUND_RADII])
    index = np.flatnonzero(band)  # the soft band's pixels: all the rest is kept as it is
    if size != (w, h):  # the means at the photo's size (8-bit: one Pillow resize each), at the band
        f, b = (_resize_colour(c, (w, h)).reshape(-1, 3)[index] * np.float32(1 / 255) for c in (fg_mean, bg_mean))
    else:
        f, b = fg_mean.reshape(-1, 3)[index], bg_mean.reshape(-1, 3)[index]
    a = (a8.reshape(-1)[index].astype(np.float32) * np.float32(1 / 255))[:, None]
    photo = rgb.reshape(-1, 3)[index].astype(np.float32) * np.float32(1 / 255)
    estimate = f + a * (photo - a * f - (1 - a) * b)
    out = rgb.copy()
    out.reshape(-1, 3)[index] = np.clip(np.rint(estimate * 255), 0, 255).astype(np.uint8)
    return out


def _blur_fusion_means(image: np.ndarray, alpha: np.ndarray, radii: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The local foreground and background colours of the last of blur-fusion's passes (float
    HxWx3 in [0, 1]): each pass blurs the previous pass's estimate (the photo to begin with)."""
    a = np.clip(alpha, 0.0, 1.0).astype(np.float32)[:, :, None]
    fg = bg = image
    fg_mean = bg_mean = image
    for radius in radii:
        blurred_alpha = box_mean(a, radius)
        fg_mean = box_mean(fg * a, radius) / (blurred_alpha + 1e-5)
        bg_mean = box_mean(bg * (1 - a), radius) / (1 - blurred_alpha + 1e-5)
        fg = np.clip(fg_mean + a * (image - a * fg_mean - (1 - a) * bg_mean), 0.0, 1.0)
        bg = bg_mean
    return fg_mean, bg_mean


def _resize_colour(colour: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float HxWx3 colour in [0, 1] as uint8 at ``size`` (bilinear: one Pillow resize)."""
    levels = Image.fromarray(np.rint(np.clip(colour, 0.0, 1.0) * 255).astype(np.uint8), "RGB")
    return np.asarray(levels.resize(size, Image.BILINEAR))
