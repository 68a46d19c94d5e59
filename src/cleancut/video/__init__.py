"""Video: remove the background of every frame of a clip, steady over time, with its sound.

::

    import cleancut
    cleancut.remove_video("clip.mp4", "clip.webm")                  # VP9 with alpha
    cleancut.remove_video("clip.mp4", "clip-white.mp4", bg_color="white")  # H.264
    for frame, alpha in cleancut.iter_video("clip.mp4"):            # numpy, for your own encoder
        ...

Modules: :mod:`~cleancut.video.decode` (reading, checks, upright frames),
:mod:`~cleancut.video.smooth` (temporal smoothing of the matte), :mod:`~cleancut.video.encode`
(output kinds, atomic writing), :mod:`~cleancut.video.audio` (the sound track),
:mod:`~cleancut.video.remove` (the streamed pipeline and the public functions). PyAV (the
``video`` extra) is imported only when a video is opened.
"""

from __future__ import annotations

__all__ = ["remove_video", "iter_video", "VideoResult", "VideoWarning", "SmoothParams"]


def __getattr__(name: str):
    # lazy, like the package itself: importing cleancut.video loads neither PyAV nor the model
    if name in ("remove_video", "iter_video", "VideoResult", "VideoWarning"):
        from . import remove

        return getattr(remove, name)
    if name == "SmoothParams":
        from .smooth import SmoothParams

        return SmoothParams
    raise AttributeError(f"module 'cleancut.video' has no attribute {name!r}")
