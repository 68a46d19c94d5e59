"""Turning a photo and its alpha mask into the requested output image.

``foreground`` arrays are uint8 ``HxWx3`` (the photo, or its re-estimated edge colours), ``alpha``
is float32 ``HxW`` in [0, 1]. Every function returns a PIL image of the photo's size.
"""

from __future__ import annotations

import functools
import os
import warnings
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFilter, ImageOps

if TYPE_CHECKING:  # pragma: no cover
    from .options import RemoveOptions

WHITE = (255, 255, 255, 255)
CROP_LEVEL = 0.05  # alpha above which a pixel belongs to the subject's bounding box


def compose(foreground: np.ndarray, alpha: np.ndarray, options: "RemoveOptions",
            original: Image.Image) -> Image.Image:
    """The output ``options.resolved_mode`` asks for."""
    mode = options.resolved_mode
    if mode == "mask":
        return mask_image(alpha)
    if mode == "cutout":
        return cutout(foreground, alpha)
    if mode == "color":
        return over_color(foreground, alpha, options.bg_color or WHITE)
    if mode == "image":
        background = load_background(options.bg_image, options.max_pixels)  # type: ignore[arg-type]
        return over_image(foreground, alpha, background)
    if mode == "blur":
        return over_blur(foreground, alpha, original, options.blur_radius)
    raise ValueError(f"unknown mode {mode!r}")  # RemoveOptions validates modes; a bug if reached


def _alpha8(alpha: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(alpha, 0.0, 1.0) * 255.0).astype(np.uint8)


def mask_image(alpha: np.ndarray) -> Image.Image:
    """The mask as an 8-bit grayscale image (255 = subject)."""
    return Image.fromarray(_alpha8(alpha), "L")


def cutout(foreground: np.ndarray, alpha: np.ndarray) -> Image.Image:
    """RGBA image: the subject's colours with the mask as transparency."""
    return Image.fromarray(np.dstack([foreground, _alpha8(alpha)]), "RGBA")


def _blend(foreground: np.ndarray, background: Image.Image | tuple[int, ...], alpha: np.ndarray) -> Image.Image:
    """``foreground * a + background * (1 - a)`` as an RGB image; ``background`` is an RGB image
    of the same size or one colour (3 values). Pillow's composite on the 8-bit alpha, rounded
    exactly (within one level of the float formula): a 480p frame of a live stream takes 2 ms,
    against 6 in numpy floats."""
    fg = Image.fromarray(np.asarray(foreground, np.uint8), "RGB")
    if not isinstance(background, Image.Image):
        background = Image.new("RGB", fg.size, tuple(int(round(c)) for c in background[:3]))
    return Image.composite(fg, background, Image.fromarray(_alpha8(alpha), "L"))


def over_color(foreground: np.ndarray, alpha: np.ndarray, color: tuple[int, ...]) -> Image.Image:
    """Subject over a plain colour; RGB, or RGBA when the colour is translucent."""
    opacity = (color[3] if len(color) > 3 else 255) / 255.0
    if opacity >= 1.0:
        return _blend(foreground, tuple(color[:3]), alpha)
    rgb = np.asarray(color[:3], np.float32)
    a = np.clip(alpha, 0.0, 1.0)[:, :, None]
    out_a = a + opacity * (1.0 - a)
    premultiplied = foreground.astype(np.float32) * a + rgb * opacity * (1.0 - a)
    out_rgb = np.where(out_a > 0, premultiplied / np.maximum(out_a, 1e-6), 0.0)
    rgba = np.dstack([np.clip(np.rint(out_rgb), 0, 255).astype(np.uint8), _alpha8(out_a[:, :, 0])])
    return Image.fromarray(rgba, "RGBA")


_CACHE_MAX_PIXELS = 8_000_000  # only modest pictures are kept decoded (4 x 8 MP x 3 B < 100 MB)


def _decode_background(path: str, max_pixels: int) -> Image.Image:
    from .io import flatten, load_image

    return flatten(load_image(path, max_pixels=max_pixels))


@functools.lru_cache(maxsize=4)
def _read_background(path: str, mtime_ns: int, max_pixels: int) -> Image.Image:
    return _decode_background(path, max_pixels)


def load_background(path: str | os.PathLike | Image.Image, max_pixels: int) -> Image.Image:
    """The background picture as RGB (transparency flattened over white), from a file or an image
    in memory. Files up to 8 MP are cached per path and modification time (a batch reuses one
    background); larger ones are decoded each time so the cache never holds much memory."""
    from .errors import ImageError

    if isinstance(path, Image.Image):
        from .io import flatten, to_rgb_or_rgba

        if path.width * path.height > max_pixels:
            raise ImageError(f"background image: {path.width}x{path.height} pixels is above the limit of "
                             f"{max_pixels} pixels.")
        return flatten(to_rgb_or_rgba(path))

    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError as exc:
        raise ImageError(f"background image {os.fspath(path)}: cannot read it "
                         f"({exc.strerror or exc}).") from None
    except ValueError:  # a NUL in the name
        raise ImageError(f"background image {os.fspath(path)!r}: not a valid file name.") from None
    try:
        with Image.open(path) as probe:
            small = probe.size[0] * probe.size[1] <= _CACHE_MAX_PIXELS
    except Exception:  # unreadable: let the decoder give its clear error
        small = False
    if small:
        return _read_background(os.fspath(path), mtime, max_pixels)
    return _decode_background(os.fspath(path), max_pixels)


def fit_cover(background: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Scale ``background`` to cover ``size`` (width, height), cropping the overflow, centred."""
    if background.size == size:
        return background
    return ImageOps.fit(background, size, Image.LANCZOS, centering=(0.5, 0.5))


def over_image(foreground: np.ndarray, alpha: np.ndarray, background: Image.Image) -> Image.Image:
    """Subject over a picture fitted (cover, centred) to the photo's size; RGB."""
    h, w = alpha.shape
    return _blend(foreground, fit_cover(background.convert("RGB"), (w, h)), alpha)


def blurred_background(original: Image.Image, alpha: np.ndarray, radius: float) -> np.ndarray:
    """The photo blurred with the subject left out (normalised convolution: blur of the
    background-weighted photo divided by the blur of the weights), so the subject's colours do
    not bleed into a halo around it. uint8 HxWx3."""
    if radius <= 0:
        return np.asarray(original.convert("RGB"))
    photo = np.asarray(original.convert("RGB"), np.float32)
    weight = 1.0 - np.clip(alpha, 0.0, 1.0)
    blur = ImageFilter.GaussianBlur(radius)
    weighted = Image.fromarray(np.rint(photo * weight[:, :, None]).astype(np.uint8), "RGB")
    num = np.asarray(weighted.filter(blur), np.float32)
    den = np.asarray(Image.fromarray(_alpha8(weight), "L").filter(blur), np.float32)[:, :, None] / 255.0
    plain = np.asarray(original.convert("RGB").filter(blur), np.float32)
    out = np.where(den > 0.02, num / np.maximum(den, 1e-6), plain)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def over_blur(foreground: np.ndarray, alpha: np.ndarray, original: Image.Image, radius: float) -> Image.Image:
    """Subject over its own photo blurred with ``radius``; RGB."""
    return _blend(foreground, Image.fromarray(blurred_background(original, alpha, radius), "RGB"), alpha)


def subject_box(alpha: np.ndarray, margin: int = 0) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) of pixels with alpha > CROP_LEVEL, grown by ``margin`` and
    clipped to the image; None when the mask is empty."""
    mask = np.asarray(alpha) > CROP_LEVEL
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    h, w = mask.shape
    return (max(0, int(cols[0]) - margin), max(0, int(rows[0]) - margin),
            min(w, int(cols[-1]) + 1 + margin), min(h, int(rows[-1]) + 1 + margin))


def crop_to_subject(image: Image.Image, alpha: np.ndarray, margin: int = 0) -> Image.Image:
    """Crop to the subject's bounding box plus ``margin``; an empty mask leaves the image whole
    (with a warning)."""
    box = subject_box(alpha, margin)
    if box is None:
        warnings.warn("crop: no subject was found in the mask; the image is left uncropped.",
                      UserWarning, stacklevel=2)
        return image
    return image.crop(box)
