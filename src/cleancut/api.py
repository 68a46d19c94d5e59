"""The Python API: :func:`remove` for one-off calls, :class:`Remover` to keep a model loaded.

Inputs can be a path (``str`` / ``pathlib.Path``), ``bytes``, a binary file object, a PIL image
or a numpy array (``HxW``, ``HxWx3`` RGB or ``HxWx4`` RGBA; uint8, uint16, bool or float in
[0, 1]). The result has the same kind as the input:

============================  ================================================================
input                         result
============================  ================================================================
path, file object, PIL image  PIL image (RGBA for ``cutout``, L for ``mask``, RGB otherwise)
bytes                         encoded bytes in ``options.format`` (PNG by default)
numpy array                   uint8 array (``HxWx4``, ``HxW`` or ``HxWx3`` like the PIL mode)
============================  ================================================================

Only ONNX Runtime, numpy and Pillow are used (scipy and pymatting for the optional
post-processing); torch is never imported.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import numpy as np
from PIL import Image

from . import io as cio
from .errors import ConfigError
from .models import DEFAULT_MODEL, ModelSpec, get_model
from .options import RemoveOptions, options_from_mapping
from .pipeline import process

__all__ = ["remove", "Remover"]


class Remover:
    """A loaded model plus the whole removal pipeline; create once, call from any thread.

    ``model`` is a registered name or the path of an exported ``.onnx`` (default
    ``cleancut-default``); ``providers`` and ``threads`` configure ONNX Runtime. The model spec
    is resolved at once (an unknown name fails here, listing the valid ones); the ONNX session
    is created on first use (or by :meth:`load`), once, under a lock.
    """

    def __init__(self, model: str | os.PathLike | ModelSpec | None = None, providers: Any = None, threads: int | None = None):
        checked = RemoveOptions(providers=providers, threads=threads)  # validates both
        self.spec: ModelSpec = model if isinstance(model, ModelSpec) else get_model(model)
        self.providers = checked.providers
        self.threads = checked.threads
        self._session = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Remover(model={self.spec.name!r}, providers={self.providers}, threads={self.threads})"

    def load(self):
        """Create the ONNX Runtime session now (otherwise done on first use); returns it."""
        if self._session is None:
            with self._lock:
                if self._session is None:
                    from .runtime import Session

                    self._session = Session(self.spec, providers=self.providers, threads=self.threads)
        return self._session

    def warm_up(self, alpha_matting: bool | None = None) -> dict[str, float]:
        """Pay the first-use costs now rather than on the first image: create the ONNX Runtime
        session, run the model once on a small synthetic photo and, with ``alpha_matting`` (by
        default: when pymatting is installed), run alpha matting and foreground estimation once,
        which compiles their numba kernels on a machine's first run (about a minute; then cached
        on disk, so a second or two). Returns the seconds each step took."""
        from .refine import matting_available

        seconds: dict[str, float] = {}
        started = time.perf_counter()
        self.load()
        seconds["session"] = time.perf_counter() - started
        photo = _synthetic_photo()
        started = time.perf_counter()
        self.remove(photo)
        seconds["inference"] = time.perf_counter() - started
        if matting_available() if alpha_matting is None else alpha_matting:
            started = time.perf_counter()
            self.remove(photo, alpha_matting=True)
            seconds["alpha_matting"] = time.perf_counter() - started
        return seconds

    def predict_mask(self, image: cio.ImageSource, max_pixels: int | None = None,
                     with_uncertainty: bool = False, edges: str = "auto"):
        """The model's raw alpha for ``image``: float32 HxW in [0, 1] at the (upright) image's
        size, before any post-processing, brought to the photo by the edge stage ``edges`` (the
        ``edges`` option: :data:`cleancut.edges.EDGE_STAGES`).

        With ``with_uncertainty=True`` it returns ``(alpha, std)``: the test-time-augmented alpha
        (mean over flips and zooms, 12 model runs) and its per-pixel standard deviation (float32
        HxW, 0..0.5). A high ``std.mean()`` flags a photo worth a human look; see
        :mod:`cleancut.explain`."""
        img = cio.load_image(image, max_pixels=max_pixels or RemoveOptions().max_pixels)
        if not with_uncertainty:
            return self._predict(img, edges)
        from .explain import tta_uncertainty

        return tta_uncertainty(lambda rgb: self._predict(Image.fromarray(rgb)), cio.flatten(img))

    def _predict(self, img: Image.Image, edges: str = "auto") -> np.ndarray:
        return self.load().predict([cio.flatten(img)], edges=edges)[0]

    def remove(self, image: cio.ImageSource, options: RemoveOptions | None = None, **overrides: Any):
        """Remove the background of ``image``; the result has the kind of the input (see the
        module docstring). ``overrides`` are option names, e.g. ``mode="mask"``."""
        opts = options_from_mapping(overrides, base=options) if overrides else (options or RemoveOptions())
        self._check_operator_options(opts)
        img = cio.load_image(image, max_pixels=opts.max_pixels)
        out = process(img, self._predict(img, opts.edges), opts)
        return _like_input(image, out, opts)

    def _check_operator_options(self, opts: RemoveOptions) -> None:
        if opts.model is not None and get_model(opts.model) != self.spec:
            raise ConfigError(
                f"this Remover runs model '{self.spec.name}', but the options ask for model "
                f"'{opts.model}'. Create Remover(model={opts.model!r}) or use cleancut.remove().")
        for name in ("providers", "threads"):
            wanted = getattr(opts, name)
            if wanted is not None and wanted != getattr(self, name):
                raise ConfigError(
                    f"this Remover was created with {name}={getattr(self, name)!r}, but the options "
                    f"ask for {wanted!r}. Pass {name} to Remover(...) instead.")


def _synthetic_photo() -> Image.Image:
    """A small photo-like image: a bright subject on a dark gradient (for warming up)."""
    from PIL import ImageDraw

    width, height = 96, 72
    ramp = np.linspace(20, 70, height, dtype=np.float32)[:, None, None] * np.ones((1, width, 3), np.float32)
    image = Image.fromarray(ramp.astype(np.uint8))
    ImageDraw.Draw(image).ellipse((28, 10, 68, 62), fill=(245, 215, 140))
    return image


def _like_input(source: Any, out: Image.Image, opts: RemoveOptions):
    if isinstance(source, (bytes, bytearray, memoryview)):
        return cio.encode_image(out, opts.format, opts.quality)
    if isinstance(source, np.ndarray):
        return np.asarray(out).copy()
    return out


_shared: dict[tuple, Remover] = {}
_shared_lock = threading.Lock()


def shared_remover(model: str | None = None, providers: tuple[str, ...] | None = None,
                   threads: int | None = None) -> Remover:
    """One process-wide Remover per (model, providers, threads), created on first use."""
    key = (model or DEFAULT_MODEL, providers, threads)
    with _shared_lock:
        remover = _shared.get(key)
        if remover is None:
            remover = _shared[key] = Remover(model, providers, threads)
    return remover


def remove(image: cio.ImageSource, options: RemoveOptions | None = None, **overrides: Any):
    """Remove the background of ``image`` with a process-wide cached model.

    ``cleancut.remove("photo.jpg")`` -> PIL RGBA; ``cleancut.remove(data_bytes)`` -> PNG bytes;
    ``cleancut.remove(array, mode="mask")`` -> uint8 HxW array. Options are
    :class:`~cleancut.options.RemoveOptions` fields, e.g. ``bg_color="white"``, ``crop=True``,
    ``model="path/to/model.onnx"``.
    """
    opts = options_from_mapping(overrides, base=options) if overrides else (options or RemoveOptions())
    return shared_remover(opts.model, opts.providers, opts.threads).remove(image, opts)
