"""The live loop: every frame cut out as it arrives, never falling behind the source.

A capture thread reads the source continuously and keeps only the newest frame in a one-frame
slot. The loop (the caller's thread) takes the newest frame, runs the model on it (a
:class:`~cleancut.api.Remover`'s ``predict_mask``, then the causal smoother of
:mod:`cleancut.video.smooth`), composes it (:func:`~cleancut.pipeline.process` with the same
:class:`~cleancut.options.RemoveOptions` as ``cleancut remove``) and hands the result on. When the
model is slower than the source, the frames that arrived meanwhile are *dropped* (counted), so
the output stays current instead of lagging further and further behind. Without pacing (a file
processed as fast as possible) the capture thread waits for the loop instead, and nothing is
dropped.

Latency is measured from the moment a frame was captured to the moment its result is ready.
"""

from __future__ import annotations

import threading
import time
from array import array
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from ..options import RemoveOptions, options_from_mapping
from ..pipeline import process
from ..video.smooth import CausalParams, CausalSmoother
from .sources import Captured, PyAVSource

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image


@dataclass
class LiveFrame:
    """One processed frame: ``image`` as captured (RGB), ``alpha`` the smoothed matte (float32
    HxW in [0, 1]), ``result`` what the options ask for (a cut-out, the frame over a colour ...),
    ``latency`` the seconds from capture to ``result``."""

    index: int
    image: "Image.Image"
    alpha: np.ndarray
    result: "Image.Image"
    captured: float
    latency: float


@dataclass
class LiveStats:
    """Frames processed and dropped, and latencies, of one session (thread-safe to read)."""

    started: float = field(default_factory=time.monotonic)
    frames: int = 0
    dropped: int = 0
    reconnects: int = 0
    # 8 bytes a frame (a day at 30 frames/s: 21 MB), for the session's percentiles
    latencies: array = field(default_factory=lambda: array("d"))
    _recent: deque = field(default_factory=lambda: deque(maxlen=120))  # (done time) of recent frames

    def add(self, frame: LiveFrame, done: float) -> None:
        self.frames += 1
        self.latencies.append(frame.latency)
        self._recent.append(done)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def fps(self, recent: bool = False) -> float:
        """Frames processed per second: over the whole session, or over the last frames."""
        if recent and len(self._recent) >= 2:
            span = self._recent[-1] - self._recent[0]
            return (len(self._recent) - 1) / span if span > 0 else 0.0
        return self.frames / self.elapsed if self.elapsed > 0 else 0.0

    def latency_ms(self, q: float, recent: int | None = None) -> float:
        values = self.latencies[-recent:] if recent else self.latencies
        return float(np.percentile(np.frombuffer(values, np.float64), q) * 1000.0) if values else float("nan")

    def line(self, recent: bool = False) -> str:
        window = 120 if recent else None
        text = (f"{self.fps(recent):.1f} frames/s, latency p50 {self.latency_ms(50, window):.0f} ms / "
                f"p95 {self.latency_ms(95, window):.0f} ms, {self.dropped} dropped")
        return text + (f", {self.reconnects} reconnections" if self.reconnects else "")

    def to_dict(self) -> dict[str, Any]:
        return {"frames": self.frames, "dropped": self.dropped, "seconds": round(self.elapsed, 3),
                "fps": round(self.fps(), 2), "latency_p50_ms": round(self.latency_ms(50), 1),
                "latency_p95_ms": round(self.latency_ms(95), 1), "reconnects": self.reconnects}


class _Newest:
    """A one-frame slot between the capture thread and the loop."""

    def __init__(self, drop: bool):
        self.drop = drop  # True: a new frame replaces an untaken one; False: the capture waits
        self._cond = threading.Condition()
        self._item: Captured | None = None
        self.ended = False
        self.error: BaseException | None = None
        self.dropped = 0
        self.stopped = False

    def put(self, item: Captured) -> bool:
        with self._cond:
            while not self.drop and self._item is not None and not self.stopped:
                self._cond.wait(0.1)
            if self.stopped:
                return False
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._cond.notify_all()
            return True

    def finish(self, error: BaseException | None = None) -> None:
        with self._cond:
            self.ended, self.error = True, error
            self._cond.notify_all()

    def take(self) -> Captured | None:
        """The newest frame, waiting for one; None once the source has ended."""
        with self._cond:
            while self._item is None and not self.ended:
                self._cond.wait(0.1)
            item, self._item = self._item, None
            self._cond.notify_all()
            if item is None and self.error is not None:
                raise self.error
            return item

    def stop(self) -> None:
        with self._cond:
            self.stopped = True
            self._cond.notify_all()


def _options(options: RemoveOptions | None, overrides: dict[str, Any]) -> RemoveOptions:
    opts = options_from_mapping(overrides, base=options) if overrides else (options or RemoveOptions())
    if opts.crop:
        from ..errors import ConfigError

        raise ConfigError("--crop changes the frame size from frame to frame, which live video cannot do; "
                          "drop --crop.")
    if opts.estimate_foreground is None:
        # Live keeps its frame rate: the edge colours' estimate (the default for photos and clips)
        # costs about 50 ms a 640x480 frame here, more than the model; asked for, it runs.
        opts = opts.replace(estimate_foreground=False)
    return opts


class FrameProcessor:
    """The per-frame work of every live room (``cleancut live``, the server's ``/api/stream``):
    the model's matte, the causal smoother (one per stream: it remembers the previous frame),
    then :func:`~cleancut.pipeline.process` with the stream's options."""

    def __init__(self, remover: Any, options: RemoveOptions, smooth: bool | CausalParams = True):
        self.remover = remover
        self.options = options
        params = smooth if isinstance(smooth, CausalParams) else (CausalParams() if smooth else None)
        self.smoother = CausalSmoother(params) if params is not None else None

    def matte(self, image: "Image.Image") -> tuple["Image.Image", np.ndarray]:
        """The frame as RGB and its smoothed matte (the model's part of the work)."""
        image = image if image.mode == "RGB" else image.convert("RGB")
        alpha = self.remover.predict_mask(image, max_pixels=self.options.max_pixels)
        if self.smoother is not None:
            alpha = self.smoother.push(image, alpha)
        return image, alpha

    def compose(self, image: "Image.Image", alpha: np.ndarray, index: int, captured: float) -> LiveFrame:
        """The frame's result, as the options ask (refinement and composition)."""
        result = process(image, alpha, self.options)
        return LiveFrame(index, image, alpha, result, captured, time.monotonic() - captured)

    def __call__(self, image: "Image.Image", index: int = 0, captured: float | None = None) -> LiveFrame:
        captured = time.monotonic() if captured is None else captured
        return self.compose(*self.matte(image), index, captured)


class LiveSession:
    """One live run: iterate it for :class:`LiveFrame` objects; :attr:`stats` is kept up to date."""

    def __init__(self, source: str | PyAVSource, options: RemoveOptions | None = None, *,
                 smooth: bool | CausalParams = True, pacing: bool = True, remover: Any = None,
                 max_frames: int | None = None, max_seconds: float | None = None, **overrides: Any):
        self.options = _options(options, overrides)
        if remover is None:
            from ..api import shared_remover

            remover = shared_remover(self.options.model, self.options.providers, self.options.threads)
        self.remover = remover
        self.source = source if isinstance(source, PyAVSource) else PyAVSource(
            source, pacing=pacing, max_pixels=self.options.max_pixels)
        self.processor = FrameProcessor(remover, self.options, smooth)
        self.max_frames = max_frames
        self.max_seconds = max_seconds
        self.stats = LiveStats()

    def _mattes(self, slot: _Newest) -> Iterator[tuple[Captured, tuple["Image.Image", np.ndarray]]]:
        while True:
            if self.max_frames is not None and self.stats.frames >= self.max_frames:
                return
            if self.max_seconds is not None and self.stats.elapsed >= self.max_seconds:
                return
            item = slot.take()
            self.stats.dropped = slot.dropped
            self.stats.reconnects = self.source.reconnects
            if item is None:
                return
            yield item, self.processor.matte(item.image)

    def _capture(self, slot: _Newest) -> None:
        try:
            for item in self.source.frames():
                if not slot.put(item):
                    return
            slot.finish()
        except BaseException as exc:  # handed to the loop, which re-raises it
            slot.finish(exc)

    def __iter__(self) -> Iterator[LiveFrame]:
        self.remover.load()  # a broken model fails here, before the source is read
        slot = _Newest(drop=self.source.pacing or self.source.kind != "file")
        self.stats = LiveStats()
        worker = threading.Thread(target=self._capture, args=(slot,), name="cleancut-capture", daemon=True)
        worker.start()
        try:
            # one thread for the model and the composition: a second stage that overlapped them was
            # measured slower on 2 cores (10.3 frames/s, latency p50 151 ms, against 11.8 and 89 ms)
            for item, (image, alpha) in self._mattes(slot):
                frame = self.processor.compose(image, alpha, item.index, item.captured)
                self.stats.add(frame, frame.captured + frame.latency)
                yield frame
        finally:
            slot.stop()
            worker.join(timeout=5)
            self.source.close()


def iter_live(source: str | PyAVSource, options: RemoveOptions | None = None, *, smooth: bool | CausalParams = True,
              pacing: bool = True, **overrides: Any) -> Iterator[LiveFrame]:
    """Yield a :class:`LiveFrame` for every frame of ``source`` that could be processed in time.

    ``source`` is a camera index or device (``0``, ``/dev/video0``), a stream URL (``rtsp://...``)
    or a video file, played at its own frame rate unless ``pacing=False``. Options are
    :class:`~cleancut.options.RemoveOptions` fields (``bg_color="green"``, ``mode="blur"`` ...);
    ``smooth`` is the causal temporal smoothing (no look-ahead). Frames that arrive while the
    model is busy are dropped, so the results stay current. Closing the generator (``break``,
    Ctrl-C) stops the capture and closes the source."""
    yield from LiveSession(source, options, smooth=smooth, pacing=pacing, **overrides)
