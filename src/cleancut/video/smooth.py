"""Temporal smoothing of the matte: a motion-gated average over neighbouring frames.

Run frame by frame, a photo model's matte flickers: edges and thin parts jump between frames where
nothing in the picture moved. :class:`TemporalSmoother` replaces each frame's matte by a per-pixel
weighted average of the mattes of the frames around it (``radius`` before and after), where each
neighbour's weight says how little the picture changed at that pixel between it and the frame
being smoothed (a temporal bilateral filter):

* where the grey level differs by ``motion_low`` or less (sensor and compression noise), the
  neighbour counts fully, so the matte's jitter averages out;
* where it differs by ``motion_high`` or more (something moved, a scene cut), the neighbour does
  not count at all, so moving subjects are not blurred or delayed; in between the weight falls
  linearly;
* the differences are measured at a small working size (the frame reduced by an integer factor
  to at most ``work_side`` pixels on the long side, which also averages out noise) and the
  weights scaled up to the frame.

The window is centred, so unlike a running average the matte neither lags behind a moving
subject nor holds on to a wrong value seen at a moment of motion. The cost is a delay of
``radius`` frames (the smoother hands a frame back once its later neighbours have arrived) and a
buffer of ``2 * radius + 1`` frames and mattes, whatever the clip's length. Each pair of frames is
compared once (the weight is symmetric), so a frame costs ``radius`` weight maps.

The defaults were tuned on DAVIS ``cows`` and checked on ``paragliding-launch``
(``benchmarks/bench_video.py --tune``; figures and the selection rule in the README).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class SmoothParams:
    """Parameters of :class:`TemporalSmoother` (see the module docstring)."""

    radius: int = 1
    motion_low: float = 0.01
    motion_high: float = 0.16
    work_side: int = 256

    def __post_init__(self) -> None:
        if not 1 <= self.radius <= 8:
            raise ValueError(f"radius must be 1 to 8 frames, got {self.radius}")
        if not 0.0 <= self.motion_low < self.motion_high:
            raise ValueError(f"expected 0 <= motion_low < motion_high, got {self.motion_low}, "
                             f"{self.motion_high}")
        if self.work_side < 8:
            raise ValueError(f"work_side must be at least 8, got {self.work_side}")


@dataclass
class _Entry:
    key: Any
    grey: np.ndarray  # working size, [0, 1]
    alpha: np.ndarray  # frame size
    num: np.ndarray  # running weighted sum of the window's mattes
    den: np.ndarray  # running sum of the weights


def _result(entry: _Entry) -> tuple[Any, np.ndarray]:
    return entry.key, np.divide(entry.num, entry.den, out=entry.num)


class TemporalSmoother:
    """Streaming smoother: :meth:`push` each frame and its raw matte in order, and take back the
    ``(key, smoothed matte)`` pairs that are complete; :meth:`flush` at the end of the clip."""

    def __init__(self, params: SmoothParams | None = None):
        self.params = params or SmoothParams()
        self._window: deque[_Entry] = deque()  # frames still waiting for later neighbours
        self._scratch: np.ndarray | None = None

    def _small_grey(self, image: Image.Image) -> np.ndarray:
        """The frame in grey at about ``work_side`` pixels on the long side, in [0, 1] (a box
        reduction by an integer factor: fast, and it averages out pixel noise)."""
        factor = max(1, math.ceil(max(image.size) / self.params.work_side))
        small = image.convert("RGB").reduce(factor) if factor > 1 else image.convert("RGB")
        return np.asarray(small.convert("L"), np.float32) / 255.0

    def weight(self, grey: np.ndarray, other: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """Per-pixel weight of one frame's matte in another's average, for two grey frames of
        the working size, scaled up to ``size`` (width, height) of the mattes."""
        p = self.params
        change = np.abs(grey - other)
        weight = np.clip((p.motion_high - change) / (p.motion_high - p.motion_low), 0.0, 1.0)
        # scaled up as 8 bits: several times faster than a float image, and 1/255 is plenty
        small = Image.fromarray(np.rint(weight * 255.0).astype(np.uint8), "L")
        if small.size != size:
            small = small.resize(size, Image.BILINEAR)
        return np.asarray(small, np.float32) * (1.0 / 255.0)

    def push(self, key: Any, image: Image.Image, alpha: np.ndarray) -> list[tuple[Any, np.ndarray]]:
        """Add a frame (``image``) and its raw matte (float32 HxW in [0, 1]); returns the frames
        whose window is now complete, oldest first."""
        alpha = np.asarray(alpha, np.float32)
        entry = _Entry(key, self._small_grey(image), alpha, alpha.copy(), np.ones_like(alpha))
        ready = []
        if self._window and self._window[-1].alpha.shape != alpha.shape:
            ready = self.flush()  # the frame size changed: a new shot
        if self._scratch is None or self._scratch.shape != alpha.shape:
            self._scratch = np.empty_like(alpha)
        for other in self._window:  # the previous `radius` frames
            if other.grey.shape != entry.grey.shape:
                continue
            w = self.weight(entry.grey, other.grey, (alpha.shape[1], alpha.shape[0]))
            other.num += np.multiply(w, alpha, out=self._scratch)  # in place: no 8 MB temporaries
            entry.num += np.multiply(w, other.alpha, out=self._scratch)
            other.den += w
            entry.den += w
        self._window.append(entry)
        if len(self._window) > self.params.radius:
            # the oldest has now seen `radius` frames after it; before it, it saw `radius` too
            ready.append(_result(self._window.popleft()))
        return ready

    def flush(self) -> list[tuple[Any, np.ndarray]]:
        """The frames still waiting (the clip ended before their later neighbours)."""
        ready = [_result(e) for e in self._window]
        self._window.clear()
        return ready

    def smooth(self, pairs) -> Iterator[tuple[Any, np.ndarray]]:
        """Smooth a whole stream of ``(image, alpha)`` pairs; yields ``(image, smoothed)``."""
        for image, alpha in pairs:
            yield from self.push(image, image, alpha)
        yield from self.flush()


@dataclass(frozen=True)
class CausalParams:
    """Parameters of :class:`CausalSmoother`: ``memory`` is how much the previous smoothed
    matte counts against the new raw one where nothing moved (1: as much; 0: smoothing off);
    the motion gate and working size are those of :class:`SmoothParams`."""

    memory: float = 1.0
    motion_low: float = 0.01
    motion_high: float = 0.16
    work_side: int = 256

    def __post_init__(self) -> None:
        if not 0.0 <= self.memory <= 8.0:
            raise ValueError(f"memory must be 0 to 8, got {self.memory}")
        SmoothParams(1, self.motion_low, self.motion_high, self.work_side)  # the same checks


class CausalSmoother:
    """Smoothing with no look-ahead, for live video: each frame's matte is a motion-gated
    running average of its raw matte and the previous frame's smoothed one,

        ``s_t = (a_t + m * w * s_{t-1}) / (1 + m * w)``

    where ``w`` is :meth:`TemporalSmoother.weight` between the two frames (1 where the picture did
    not change, 0 where something moved or the shot cut) and ``m`` is ``memory``. A still scene's
    jitter averages out over the recent frames; a moving edge follows the new matte at once. Each
    frame is handed back as soon as it is pushed (no delay); the state is one grey frame and one
    matte."""

    def __init__(self, params: CausalParams | None = None):
        self.params = params or CausalParams()
        p = self.params
        self._gate = TemporalSmoother(SmoothParams(1, p.motion_low, p.motion_high, p.work_side))
        self._grey: np.ndarray | None = None
        self._alpha: np.ndarray | None = None

    def push(self, image: Image.Image, alpha: np.ndarray) -> np.ndarray:
        """The smoothed matte of this frame (float32 HxW in [0, 1])."""
        alpha = np.asarray(alpha, np.float32)
        grey = self._gate._small_grey(image)
        previous, previous_grey = self._alpha, self._grey
        if (previous is None or previous.shape != alpha.shape or previous_grey.shape != grey.shape
                or self.params.memory == 0):  # the first frame, or a new size: nothing to average with
            smoothed = alpha
        else:
            w = self._gate.weight(grey, previous_grey, (alpha.shape[1], alpha.shape[0]))
            w *= self.params.memory
            smoothed = (alpha + w * previous) / (1.0 + w)
        self._grey, self._alpha = grey, smoothed
        return smoothed

    def reset(self) -> None:
        """Forget the past (a new source, a reconnection)."""
        self._grey = self._alpha = None
