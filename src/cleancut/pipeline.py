"""The post-processing pipeline: :func:`process` turns a photo and its predicted alpha into the
requested output (refinement, matting, composition, crop).

The options it reads are :class:`~cleancut.options.RemoveOptions`, defined in
:mod:`cleancut.options` (re-exported here, where they lived before 0.2). This module imports
nothing heavy at import time (numpy and Pillow are imported by :func:`process`), so that
``cleancut --help`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# re-exported: these names were defined here before cleancut 0.2 (see CHANGELOG.md)
from .options import (DEFAULT_MAX_PIXELS, FORMATS, MODES, OptionInfo, RemoveOptions, option_info,  # noqa: F401
                      options_from_mapping, options_markdown, parse_color)

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    from PIL import Image


def process(image: "Image.Image", alpha: "np.ndarray", options: RemoveOptions | None = None) -> "Image.Image":
    """Refine ``alpha`` (float32 HxW in [0, 1], at the image's size) and compose the output.

    ``image`` is the photo as RGB, or RGBA when it had its own transparency (that alpha is kept:
    the result is never more opaque than the input). Returns a PIL image: RGBA for ``cutout``,
    L for ``mask``, RGB (RGBA for a translucent colour) for ``color``, RGB for ``image``/``blur``.
    """
    import numpy as np

    from . import compose, refine

    options = options or RemoveOptions()
    alpha = np.asarray(alpha, np.float32)
    if alpha.shape != (image.height, image.width):
        raise ValueError(f"alpha has shape {alpha.shape}, expected the image's (height, width) "
                         f"{(image.height, image.width)}")
    rgb = image.convert("RGB") if image.mode != "RGB" else image
    alpha = refine.refine(alpha, rgb, options)
    if image.mode == "RGBA":
        alpha = alpha * (np.asarray(image.getchannel("A"), np.float32) / 255.0)
    mode = options.resolved_mode
    foreground = np.asarray(rgb)
    if options.foreground_estimation and mode != "mask":
        foreground = refine.estimate_foreground(foreground, alpha, photo=rgb)
    out = compose.compose(foreground, alpha, options, original=rgb)
    if options.crop:
        out = compose.crop_to_subject(out, alpha, options.crop_margin)
    return out


if __name__ == "__main__":  # pragma: no cover
    from .options import _main

    raise SystemExit(_main())
