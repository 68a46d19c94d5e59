"""cleancut: background removal with a model it trains itself.

The public API is small and imports nothing heavy at import time::

    import cleancut
    cutout = cleancut.remove("photo.jpg")          # PIL RGBA image
    remover = cleancut.Remover(model="cleancut-default")
    alpha = remover.predict_mask(image)            # float32 HxW in [0, 1]
    cleancut.list_models()
    cleancut.remove_video("clip.mp4", "clip.webm")  # every frame, VP9 with alpha (extra [video])
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["remove", "Remover", "RemoveOptions", "list_models", "get_model", "remove_video",
           "iter_video", "__version__"]


def __getattr__(name: str):
    # Lazy attributes: importing cleancut must stay cheap (no onnxruntime, never torch).
    if name in ("remove", "Remover"):
        from . import api

        return getattr(api, name)
    if name == "RemoveOptions":
        from .options import RemoveOptions

        return RemoveOptions
    if name in ("remove_video", "iter_video"):
        from .video import remove

        return getattr(remove, name)
    if name in ("list_models", "get_model"):
        from . import models

        return getattr(models, name)
    raise AttributeError(f"module 'cleancut' has no attribute {name!r}")
