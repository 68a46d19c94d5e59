"""Live video: a camera, a network stream or a file played at its own pace, every frame cut out as
it arrives (:func:`iter_live`, ``cleancut live``), with no look-ahead and dropping frames rather than
falling behind.

    from cleancut.live import iter_live
    for frame in iter_live(0, bg_color="green"):   # camera 0
        show(frame.result)                          # frame.alpha, frame.latency ...

A room of its own over the core: the same :class:`~cleancut.options.RemoveOptions`,
:class:`~cleancut.api.Remover` and :func:`~cleancut.pipeline.process` as photos and video files.
PyAV (the ``video`` extra) reads and writes the frames; pyvirtualcam (the ``live`` extra) drives a
virtual camera. Importing this package imports neither.
"""

from __future__ import annotations

from .session import LiveFrame, LiveSession, LiveStats, iter_live
from .sources import LiveSourceError

__all__ = ["iter_live", "LiveSession", "LiveFrame", "LiveStats", "LiveSourceError"]
