"""Fuzz target ``decode``: :func:`cleancut.io.load_image` on arbitrary bytes.

Every format Pillow opens is reachable (the seeds cover each one it writes or reads here, every
mode, ICC profiles of each colour space, EXIF orientation, animations). Properties:

* the only exceptions are ``cleancut.errors`` types (``ImageError``, ``ImageTooLargeError``);
* a result is an RGB or RGBA image of at most ``MAX_PIXELS`` pixels, upright and untagged
  (no ICC profile left);
* the per-input peak memory stays within ``MEMORY_BUDGET`` (checked by ``fuzz/run.py``), which
  a decoder working beyond the pixel cap would blow;
* for a GIF, ``gif_canvas_size`` (the pre-check of Pillow's first-frame allocation) gives the
  size Pillow gives it.
"""

from __future__ import annotations

import io
import warnings

NAME = "decode"
INSTRUMENT = ("cleancut", "PIL")
HOOKS: tuple[str, ...] = ()  # atheris' RegEx hook cannot read Pillow's bytes patterns
MAX_LEN = 64 * 1024
#: the pixel cap the target sets (512 x 512): small, so that a decode beyond it shows in memory
MAX_PIXELS = 1 << 18
#: RGBA at 4 B/px, plus float64 working copies of 16-bit and float images and a colour-managed
#: copy, is about 40 B/px at the cap; the rest is slack for the allocator and Pillow's caches
MEMORY_BUDGET = 64 * MAX_PIXELS + 48 * 2**20


def prepare() -> None:
    """Import everything the target runs (inside atheris' instrumentation when fuzzing)."""
    from PIL import Image, ImageCms  # noqa: F401

    import cleancut.io  # noqa: F401

    Image.init()  # every format plugin, now, so that they are instrumented too


def seeds() -> dict[str, bytes]:
    from corpus import image_seeds

    return image_seeds()


def check(data: bytes) -> None:
    from cleancut.errors import CleancutError
    from cleancut.io import load_image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # animation, unusable profile, Pillow's bomb warning
        check_gif_canvas(data)
        try:
            image = load_image(data, max_pixels=MAX_PIXELS)
        except CleancutError:
            return
    if image.mode not in ("RGB", "RGBA"):
        raise AssertionError(f"load_image returned mode {image.mode}, expected RGB or RGBA")
    if image.width * image.height > MAX_PIXELS or min(image.size) < 1:
        raise AssertionError(f"load_image returned {image.size}, outside 1..{MAX_PIXELS} pixels")
    if image.info.get("icc_profile"):
        raise AssertionError("load_image returned an image still tagged with an ICC profile")


def check_gif_canvas(data: bytes) -> None:
    """``gif_canvas_size`` (checked against the cap before Pillow opens a GIF) must be the size
    Pillow then gives it; compared where that is within the cap, so Pillow's open stays cheap.
    Only where Pillow's GIF plugin took the file: when it refuses, Pillow tries its other plugins
    (a "GIF89a" file that the IM plugin opens as 512x512, found by fuzzing), which allocate nothing
    in open, and load_image checks their size against the cap before decoding."""
    from PIL import Image

    from cleancut.io import gif_canvas_size

    canvas = gif_canvas_size(io.BytesIO(data))
    if canvas is None or canvas[0] * canvas[1] > MAX_PIXELS:
        return
    try:
        with Image.open(io.BytesIO(data)) as probe:
            size, kind = probe.size, probe.format
    except Exception:  # noqa: BLE001 - Pillow refusing the file is load_image's business, checked above
        return
    if kind == "GIF" and size != canvas:
        raise AssertionError(f"gif_canvas_size says {canvas}, Pillow opens the GIF as {size}")
